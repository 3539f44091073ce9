"""read_lance / write_lance against real Lance datasets, written by dataflow and
by pylance itself: exact round trips, versions, pushdown, atomic commits."""

from __future__ import annotations

import datetime
import os

import pyarrow as pa
import pytest

import dataflow as df
from dataflow.errors import SourceError, UserCodeError
from dataflow.expressions import col, parse
from dataflow.sources.lance import LanceDatasource, to_lance_sql

lance = pytest.importorskip("lance")


@pytest.fixture(autouse=True)
def inline_backend():
    df.init(backend="inline")
    yield
    df.shutdown()


def sample(n: int = 40, start: int = 0) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "cat": pa.array([["a", "b", "c"][i % 3] for i in ids]),
            "x": pa.array([i * 0.5 for i in ids]),
            "day": pa.array([datetime.date(2024, 1, 1 + i % 2) for i in ids]),
            "vec": pa.array([[float(i), float(i + 1)] for i in ids], pa.list_(pa.float32(), 2)),
            "maybe": pa.array([None if i % 4 == 0 else f"s{i}" for i in ids]),
        }
    )


def by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def files_of(path) -> dict[str, bytes]:
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


def test_roundtrip_is_exact_and_lance_reads_it(tmp_path):
    uri = str(tmp_path / "d.lance")
    table = sample()
    df.from_arrow(table).repartition(4).write_lance(uri, min_rows_per_file=5)
    back = df.read_lance(uri).to_arrow()
    assert back.schema == table.schema
    assert by_id(back).equals(table)
    dataset = lance.dataset(uri)
    assert dataset.version == 1  # one commit
    assert len(dataset.get_fragments()) == 4  # one fragment per write task
    assert by_id(dataset.to_table()).equals(table)
    assert df.read_lance(uri).count() == 40
    # Tensor columns stay tensors (Lance stores Arrow's extension type).
    tensors = str(tmp_path / "t.lance")
    df.range_tensor(3, shape=(2, 2)).write_lance(tensors)
    back = df.read_lance(tensors).take_all()
    assert [r["data"].tolist() for r in back] == [[[i, i], [i, i]] for i in range(3)]


def test_reads_a_dataset_written_by_lance(tmp_path):
    uri = str(tmp_path / "d.lance")
    lance.write_dataset(sample(30), uri, max_rows_per_file=10)
    assert by_id(df.read_lance(uri).to_arrow()).equals(sample(30))
    source = LanceDatasource(uri)
    tasks = list(source.iter_read_tasks(3))
    # Small fragments share a task (blocks stay above target_min_block_size) ...
    assert [t.metadata.input_files for t in tasks] == [
        tuple(f"{uri}#fragment={i}" for i in range(3))
    ]
    assert tasks[0].metadata.num_rows == 30
    # ... and each gets its own without that floor.
    ctx = df.DataContext.get_current()
    old, ctx.target_min_block_size = ctx.target_min_block_size, 1
    try:
        assert len(list(source.iter_read_tasks(3))) == 3
    finally:
        ctx.target_min_block_size = old
    rows = df.read_lance(uri, columns=["id"], filter=col("cat") == "b").take_all()
    assert sorted(r["id"] for r in rows) == list(range(1, 30, 3))


def test_versions_and_modes(tmp_path):
    uri = str(tmp_path / "d.lance")
    df.from_arrow(sample(10)).write_lance(uri)
    with pytest.raises(FileExistsError, match="mode='append'"):
        df.from_arrow(sample(10)).write_lance(uri)
    df.from_arrow(sample(5, start=10)).write_lance(uri, mode="append")
    df.from_arrow(sample(3, start=100)).write_lance(uri, mode="overwrite")
    ids = {v: sorted(r["id"] for r in df.read_lance(uri, version=v).take_all()) for v in (1, 2, 3)}
    assert ids == {1: list(range(10)), 2: list(range(15)), 3: [100, 101, 102]}
    assert df.read_lance(uri).count() == 3
    # A tag names a version too.
    lance.dataset(uri).tags.create("first", 1)
    assert df.read_lance(uri, version="first").count() == 10


def test_filters_and_columns_pushed_into_lance(tmp_path, capsys):
    uri = str(tmp_path / "d.lance")
    df.from_arrow(sample(60)).repartition(3).write_lance(uri, min_rows_per_file=1)
    # A translatable filter runs in Lance's scan, nothing is left for the rows.
    ds = df.read_lance(uri).filter(expr="id < 10 and cat == 'a'").select_columns(["id"])
    assert sorted(r["id"] for r in ds.take_all()) == [0, 3, 6, 9]
    ds.explain()
    scans = capsys.readouterr().out.split("-- Scans --\n")[1].split("\n")[0]
    assert scans == (
        "read_lance: version 1, fragments 3, columns [id], "
        "filter ((id < 10) AND (cat = 'a')) (in Lance's scan)"
    )
    # Arithmetic Lance's SQL does not share with Python (%) is applied to the rows;
    # its column is read for that and dropped after.
    ds = df.read_lance(uri, columns=["x"], filter="id % 20 == 0 and id < 50")
    assert sorted(r["x"] for r in ds.take_all()) == [0.0, 10.0, 20.0]
    ds.explain()
    scans = capsys.readouterr().out.split("-- Scans --\n")[1].split("\n")[0]
    assert scans.endswith(
        "columns [x], filter (id < 50) (in Lance's scan), "
        "then filter (id % 20 == 0) & (id < 50) on the rows"
    )
    # Lance SQL, as Ray Data takes it, also works (a string that is no dataflow expression).
    rows = df.read_lance(uri, filter="id < 6 AND cat = 'b'", columns=["id"]).take_all()
    assert rows == [{"id": 1}, {"id": 4}]
    # ... and combines with a pushed filter.
    both = df.read_lance(uri, filter="id < 30 AND cat = 'b'").filter(expr="id >= 20")
    assert sorted(r["id"] for r in both.take_all()) == [22, 25, 28]
    assert df.read_lance(uri).limit(7).count() == 7
    assert df.read_lance(uri).filter(expr="id % 10 == 0").limit(4).count() == 4
    nulls = df.read_lance(uri, filter=col("maybe").is_null(), columns=["id"]).take_all()
    assert sorted(r["id"] for r in nulls) == list(range(0, 60, 4))


def test_filter_translation():
    schema = pa.schema([("a", pa.int64()), ("f", pa.float64()), ("odd name", pa.string())])
    assert to_lance_sql(parse("a > 3 and f == 1.5"), schema) == ("((a > 3) AND (f = 1.5))", True)
    assert to_lance_sql(parse("a + 1 != 3"), schema) == ("((a + 1) <> 3)", True)
    assert to_lance_sql(col("odd name").is_in(["x", "it's"]), schema) == (
        "(`odd name` IN ('x', 'it''s'))",
        True,
    )
    assert to_lance_sql(col("a").is_null(), schema) == ("(a IS NULL)", True)
    assert to_lance_sql(col("f").is_null(), schema) is None  # NaN counts as null in dataflow
    assert to_lance_sql(col("a") >= datetime.date(2024, 1, 2), schema) == (
        "(a >= DATE '2024-01-02')",
        True,
    )
    assert to_lance_sql(parse("a > 3 and a % 2 == 0"), schema) == ("(a > 3)", False)
    assert to_lance_sql(parse("a > 3 or a % 2 == 0"), schema) is None
    assert to_lance_sql(~parse("a > 3 and a % 2 == 0"), schema) is None
    assert to_lance_sql(~parse("a > 3"), schema) == ("(NOT (a > 3))", True)
    assert to_lance_sql(col("zz") == 1, schema) is None


def test_failed_write_commits_nothing_and_leaves_no_file(tmp_path):
    uri = tmp_path / "d.lance"
    df.from_arrow(sample(10)).write_lance(str(uri))
    before = files_of(uri)

    def fail_on_7th(batch):
        if batch["id"][0].as_py() == 6:
            raise ValueError("bad block 7")
        return batch

    for mode in ("append", "overwrite"):
        with pytest.raises(UserCodeError, match="bad block 7"):
            df.from_arrow(sample(10)).repartition(10).map_batches(
                fail_on_7th, batch_format="pyarrow"
            ).write_lance(str(uri), mode=mode, min_rows_per_file=1)
        assert lance.dataset(str(uri)).version == 1
        assert files_of(uri) == before
    fresh = tmp_path / "fresh.lance"
    with pytest.raises(UserCodeError, match="bad block 7"):
        df.from_arrow(sample(10)).repartition(10).map_batches(
            fail_on_7th, batch_format="pyarrow"
        ).write_lance(str(fresh), min_rows_per_file=1)
    assert not fresh.exists()


def test_append_follows_the_dataset_schema(tmp_path):
    uri = str(tmp_path / "d.lance")
    df.from_arrow(pa.table({"a": pa.array([1], pa.int64()), "b": ["x"]})).write_lance(uri)
    df.from_arrow(pa.table({"a": pa.array([2], pa.int32())})).write_lance(uri, mode="append")
    assert sorted(df.read_lance(uri).take_all(), key=lambda r: r["a"]) == [
        {"a": 1, "b": "x"},
        {"a": 2, "b": None},
    ]
    with pytest.raises(UserCodeError, match=r"columns \['c'\] are not in the Lance dataset"):
        df.from_arrow(pa.table({"a": [3], "c": [1.0]})).write_lance(uri, mode="append")
    with pytest.raises(ValueError, match="mode must be one of"):
        df.from_arrow(pa.table({"a": [3]})).write_lance(uri, mode="upsert")


def test_bad_uri_version_filter_and_column(tmp_path):
    missing = str(tmp_path / "nope.lance")
    with pytest.raises(SourceError, match="no readable Lance dataset at") as info:
        df.read_lance(missing, storage_options={"aws_secret_access_key": "sekrit-123"})
    assert info.value.path == missing
    assert "sekrit-123" not in str(info.value)
    uri = str(tmp_path / "d.lance")
    df.from_arrow(sample(5)).write_lance(uri)
    with pytest.raises(SourceError, match=r"has no version 9 \(the latest is 1\)"):
        df.read_lance(uri, version=9)
    with pytest.raises(SourceError, match="Lance cannot evaluate the filter"):
        df.read_lance(uri, filter="nope_column = 3")
    with pytest.raises(SourceError, match=r"columns \['zz'\] are not in"):
        df.read_lance(uri, columns=["zz"]).take_all()


def test_read_and_write_on_worker_processes(tmp_path):
    df.shutdown()
    df.init(backend="local", num_cpus=2)
    uri = str(tmp_path / "d.lance")
    df.range(1000, override_num_blocks=4).write_lance(uri, min_rows_per_file=100)
    ds = df.read_lance(uri).filter(expr="id % 100 == 0")
    assert sorted(r["id"] for r in ds.take_all()) == list(range(0, 1000, 100))
