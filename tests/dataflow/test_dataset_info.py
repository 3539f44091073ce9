"""The descriptive Dataset methods (dataflow/dataset_info.py, dataflow/summary.py)
and DataIterator's schema/stats/materialize/get_context (issue 20)."""

from __future__ import annotations

import hashlib
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataflow as df
from dataflow.errors import PlanError
from dataflow.summary import summarize


@pytest.fixture(autouse=True)
def _inline():
    df.init("inline", num_cpus=2)
    yield
    df.shutdown()


def test_size_bytes_and_num_blocks_from_metadata_and_by_running():
    mem = df.from_arrow([pa.table({"x": [1, 2]}), pa.table({"x": [3, 4, 5]})])
    assert mem.num_blocks() == 2
    assert mem.size_bytes() == 5 * 8
    ds = df.range(100, override_num_blocks=4)
    assert ds.num_blocks() == 4
    assert ds.size_bytes() == 100 * 8
    mat = ds.map_batches(lambda b: {"id": b["id"] * 2}).materialize()
    assert (mat.num_blocks(), mat.size_bytes()) == (4, 800)


def test_input_files_lists_read_files_once_in_order(tmp_path):
    for i in range(3):
        pq.write_table(pa.table({"x": [i]}), tmp_path / f"p{i}.parquet")
    (tmp_path / "README").write_text("not data")
    expected = [str(tmp_path / f"p{i}.parquet") for i in range(3)]
    ds = df.read_parquet(str(tmp_path))
    assert ds.input_files() == expected
    assert ds.filter(expr="x > 0").union(ds).input_files() == expected
    assert ds.materialize().input_files() == expected
    assert df.range(3).input_files() == []


def test_summary_matches_ray_datas_numbers():
    # Ray Data's own summary() example: these are the numbers its docstring shows.
    ds = df.from_items(
        [
            {"age": 25, "salary": 50000, "name": "Alice", "city": "NYC"},
            {"age": 30, "salary": 60000, "name": None, "city": "LA"},
            {"age": 0, "salary": None, "name": "Bob", "city": None},
        ]
    )
    table = ds.summary().to_pandas().set_index("statistic")
    assert list(table.index) == [
        "approx_quantile[0]",
        "approx_topk[0]",
        "approx_topk[1]",
        "count",
        "max",
        "mean",
        "min",
        "missing_pct",
        "std",
        "zero_pct",
    ]
    age = table["age"]
    assert (age["count"], age["min"], age["max"], age["approx_quantile[0]"]) == (3, 0, 30, 25.0)
    assert age["mean"] == pytest.approx(55 / 3)
    assert age["std"] == pytest.approx(13.123346, abs=1e-6)
    assert age["zero_pct"] == pytest.approx(100 / 3)
    assert table["salary"]["std"] == pytest.approx(5000.0)
    assert table["salary"]["missing_pct"] == pytest.approx(100 / 3)
    assert table["city"]["approx_topk[0]"] == {"city": "LA", "count": 1}
    assert table["city"]["approx_topk[1]"] == {"city": "NYC", "count": 1}
    assert table["city"]["mean"] is None
    city = ds.summary(columns=["city"]).get_column_stats("city").set_index("statistic")
    assert city["value"]["count"] == 3
    assert list(ds.summary(columns=["city"]).to_pandas().columns) == ["statistic", "city"]


def test_summary_across_blocks_is_exact_and_temporal_gets_min_max():
    import datetime as dt

    blocks = [
        pa.table({"v": [1.0, 2.0, 2.0], "t": [dt.date(2024, 1, 2)] * 3}),
        pa.table({"v": [4.0, None, 10.0], "t": [dt.date(2023, 5, 1), None, dt.date(2025, 1, 1)]}),
    ]
    s = summarize(blocks, blocks[0].schema)
    v = s.stats["v"]
    values = [1.0, 2.0, 2.0, 4.0, 10.0]
    mean = sum(values) / 5
    assert v["mean"] == pytest.approx(mean)
    assert v["std"] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in values) / 5))
    assert (v["approx_quantile[0]"], v["count"], v["missing_pct"]) == (2.0, 6, 100 / 6)
    assert s.stats["t"] == {
        "count": 6,
        "missing_pct": 100 / 6,
        "min": dt.date(2023, 5, 1),
        "max": dt.date(2025, 1, 1),
    }


def test_summary_bad_arguments_name_the_problem():
    ds = df.from_items([{"a": 1}])
    with pytest.raises(PlanError, match="summary: .*'nope'"):
        ds.summary(columns=["nope"])
    with pytest.raises(PlanError, match="summary: override_dtype_agg_mapping .*aggregate"):
        ds.summary(override_dtype_agg_mapping={pa.int64(): lambda c: []})
    with pytest.raises(PlanError, match="no column 'b'"):
        ds.summary().get_column_stats("b")


def test_name_is_kept_by_derived_datasets_and_shown_in_stats():
    ds = df.range(4)
    assert ds.name is None
    ds.set_name("ids")
    doubled = ds.map_batches(lambda b: {"id": b["id"] * 2})
    assert doubled.name == "ids"
    assert doubled.stats().startswith("Dataset ids: read_range")
    doubled.take_all()
    assert doubled.stats().startswith("Dataset ids:\noperator")
    assert doubled.materialize().name == "ids"
    assert repr(doubled.iterator()) == "DataIterator(ids)"
    ds.set_name(None)
    assert ds.name is None and doubled.name == "ids"
    with pytest.raises(PlanError, match="set_name: name must be a str"):
        ds.set_name(3)


def test_copy_has_the_same_rows_and_name_and_its_own_stats():
    ds = df.range(5)
    ds.set_name("five")
    ds.take_all()
    dup = ds.copy()
    assert dup is not ds and dup.name == "five"
    assert dup.take_all() == [{"id": i} for i in range(5)]
    assert df.Dataset.copy(ds, _deep_copy=True).name == "five"
    with pytest.raises(PlanError, match="copy: _as must be a subclass of Dataset"):
        ds.copy(_as=dict)


def test_streaming_train_test_split_random_is_complementary_and_seeded():
    src = df.range(2000, override_num_blocks=4)
    train, test = src.streaming_train_test_split(0.25, seed=7)
    a = [r["id"] for r in train.take_all()]
    b = [r["id"] for r in test.take_all()]
    assert sorted(a + b) == list(range(2000))
    assert 400 < len(b) < 600
    again = src.streaming_train_test_split(0.25, seed=7)[1].take_all()
    assert [r["id"] for r in again] == b
    other = src.streaming_train_test_split(0.25, seed=8)[1].take_all()
    assert [r["id"] for r in other] != b


def test_streaming_train_test_split_hash_uses_ray_datas_buckets():
    rows = [{"key": f"user{i % 50}", "v": i} for i in range(500)]
    train, test = df.from_items(rows).streaming_train_test_split(
        0.3, split_type="hash", hash_column="key"
    )

    def bucket_is_train(key):  # Ray Data's formula
        h = int.from_bytes(hashlib.blake2b(str(key).encode(), digest_size=8).digest(), "big")
        return h < (1 - 0.3) * (1 << 64)

    assert [r["v"] for r in train.take_all()] == [r["v"] for r in rows if bucket_is_train(r["key"])]
    assert [r["v"] for r in test.take_all()] == [
        r["v"] for r in rows if not bucket_is_train(r["key"])
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"test_size": 1.0}, "test_size must be between 0 and 1"),
        ({"test_size": 0.2, "split_type": "hash"}, "hash_column is required"),
        ({"test_size": 0.2, "split_type": "hash", "hash_column": "id", "seed": 1}, "seed is not"),
        ({"test_size": 0.2, "hash_column": "id"}, "hash_column is not supported for random"),
        ({"test_size": 0.2, "split_type": "x"}, "split_type must be 'hash' or 'random'"),
    ],
)
def test_streaming_train_test_split_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match="streaming_train_test_split: " + match):
        df.range(10).streaming_train_test_split(**kwargs)


def test_data_iterator_schema_stats_materialize_context():
    it = df.range(6).map_batches(lambda b: {"y": b["id"] + 1}).iterator()
    assert it.stats().endswith("not executed yet")
    assert it.schema() == pa.schema([("y", pa.int64())])
    assert sum(r["y"] for r in it.iter_rows()) == 21
    assert "map_batches" in it.stats()
    mat = it.materialize()
    assert mat.take_all() == [{"y": i + 1} for i in range(6)]
    assert it.get_context() is df.DataContext.get_current()


def test_an_iterator_without_a_dataset_materializes_and_reads_schema_from_a_block():
    from dataflow.iterators import DataIterator

    src = df.range(10).map_batches(lambda b: {"z": b["id"] * 3})
    it = DataIterator(src._open_stream, name="raw")
    assert it.schema() == pa.schema([("z", pa.int64())])
    mat = it.materialize()
    assert mat.count() == 10 and mat.sum("z") == 135


def test_data_iterator_to_torch_gives_features_and_label_like_ray():
    torch = pytest.importorskip("torch")
    rows = [{"a": float(i), "b": 2.0 * i, "y": i % 2} for i in range(5)]
    it = df.from_items(rows, override_num_blocks=1).iterator()
    batches = list(it.to_torch(label_column="y", batch_size=2))
    assert [tuple(f.shape) for f, _ in batches] == [(2, 2), (2, 2), (1, 2)]
    features = torch.cat([f for f, _ in batches])
    labels = torch.cat([lab for _, lab in batches])
    assert features.tolist() == [[float(i), 2.0 * i] for i in range(5)]
    assert labels.tolist() == [[i % 2] for i in range(5)]
    (groups, label), *_ = it.to_torch(
        label_column="y",
        feature_columns=[["a"], ["b"]],
        feature_column_dtypes=[torch.float64, torch.int32],
        batch_size=5,
        unsqueeze_label_tensor=False,
    )
    assert [g.dtype for g in groups] == [torch.float64, torch.int32]
    assert groups[1].tolist() == [[0], [2], [4], [6], [8]] and label.tolist() == [0, 1, 0, 1, 0]
    (named, none), *_ = it.to_torch(feature_columns={"x": ["b", "a"]}, batch_size=5)
    assert none is None and named["x"][4].tolist() == [8.0, 4.0]
    assert len(list(it.to_torch(batch_size=2, drop_last=True))) == 2
    with pytest.raises(PlanError, match="to_torch: no label column 'nope'"):
        next(iter(it.to_torch(label_column="nope")))
    with pytest.raises(PlanError, match="2 feature_column_dtypes for 1 feature column groups"):
        it.to_torch(feature_columns=[["a"]], feature_column_dtypes=[torch.int32, torch.int32])
