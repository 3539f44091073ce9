"""Behaviour of the Ray Data parameters matched for issue 20 (readers, join,
repartition, splits, groupby, sort): each asserts the rows it gives."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataflow as df
from dataflow.errors import PlanError, SourceError
from dataflow.plan.logical import Read


@pytest.fixture(autouse=True)
def _inline():
    df.init("inline", num_cpus=2)
    yield
    df.shutdown()


@pytest.fixture
def parquet_dir(tmp_path):
    for i in range(4):
        pq.write_table(pa.table({"i": [i] * 3, "v": [0.5, 1.5, 2.5]}), tmp_path / f"f{i}.parquet")
    (tmp_path / "done").write_text("marker")
    (tmp_path / "README").write_text("not parquet")
    return tmp_path


def test_read_parquet_skips_non_parquet_files_by_default(parquet_dir):
    ds = df.read_parquet(str(parquet_dir))
    assert ds.count() == 12 and ds.sum("i") == 18
    with pytest.raises(Exception, match="Parquet"):
        df.read_parquet(str(parquet_dir), file_extensions=None).count()


def test_ignore_missing_paths_skips_a_missing_path(parquet_dir):
    paths = [str(parquet_dir / "f1.parquet"), str(parquet_dir / "gone.parquet")]
    assert df.read_parquet(paths, ignore_missing_paths=True).take_all() == [
        {"i": 1, "v": v} for v in (0.5, 1.5, 2.5)
    ]
    with pytest.raises(SourceError, match="ignore_missing_paths=True skips it"):
        df.read_parquet(paths).count()


def test_shuffle_files_permutes_files_with_a_seed(parquet_dir):
    def order(**kw):
        ds = df.read_parquet(str(parquet_dir), override_num_blocks=4, **kw)
        return [r["i"] for r in ds.take_all()][::3]

    ctx = df.DataContext.get_current()
    old, ctx.preserve_order = ctx.preserve_order, True
    try:
        assert order() == [0, 1, 2, 3]
        seeded = order(shuffle=df.FileShuffleConfig(seed=1))
        assert sorted(seeded) == [0, 1, 2, 3] and seeded != [0, 1, 2, 3]
        assert order(shuffle=df.FileShuffleConfig(seed=1)) == seeded
        assert sorted(order(shuffle="files")) == [0, 1, 2, 3]
    finally:
        ctx.preserve_order = old
    with pytest.raises(ValueError, match="shuffle must be None, 'files' or FileShuffleConfig"):
        df.read_parquet(str(parquet_dir), shuffle="rows")


def test_partition_filter_skip_paths_and_include_paths(tmp_path):
    for year in (2023, 2024):
        (tmp_path / f"year={year}").mkdir()
        pq.write_table(pa.table({"v": [year]}), tmp_path / f"year={year}" / "a.parquet")
    ds = df.read_parquet(
        str(tmp_path), partition_filter=lambda p: p["year"] == "2024", include_paths=True
    )
    assert ds.take_all() == [
        {"v": 2024, "year": 2024, "path": str(tmp_path / "year=2024" / "a.parquet")}
    ]
    skip = [str(tmp_path / "year=2023" / "a.parquet")]
    assert [r["v"] for r in df.read_parquet(str(tmp_path), skip_paths=skip).take_all()] == [2024]


def test_read_arguments_become_the_read_tasks_resources(parquet_dir):
    ds = df.read_parquet(str(parquet_dir), concurrency=2, num_cpus=0.5, parallelism=3)
    read = ds._plan
    assert isinstance(read, Read)
    assert (read.compute.max_size, read.resources.cpu, read.parallelism) == (2, 0.5, 3)
    assert ds.count() == 12
    with pytest.raises(PlanError, match="read_csv: max_calls=2 restarts a Ray task worker"):
        df.read_csv(str(parquet_dir), max_calls=2)
    with pytest.raises(PlanError, match="read_parquet: include_row_hash=True is not supported"):
        df.read_parquet(str(parquet_dir), include_row_hash=True)


def test_read_parquet_tensor_column_schema(tmp_path):
    arrays = [np.arange(6, dtype=np.float32) + k for k in range(2)]
    pq.write_table(pa.table({"t": [a.tobytes() for a in arrays]}), tmp_path / "t.parquet")
    rows = df.read_parquet(str(tmp_path), tensor_column_schema={"t": (np.float32, (2, 3))})
    got = rows.take_all()
    np.testing.assert_array_equal(got[1]["t"], arrays[1].reshape(2, 3))
    assert got[0]["t"].shape == (2, 3)


def test_text_json_and_numpy_reader_parameters(tmp_path):
    (tmp_path / "a.txt").write_bytes("é\n\nb\n".encode("latin-1"))
    assert df.read_text(str(tmp_path / "a.txt"), encoding="latin-1").take_all() == [
        {"text": "é"},
        {"text": "b"},
    ]
    assert (
        df.read_text(str(tmp_path / "a.txt"), encoding="latin-1", drop_empty_lines=False).count()
        == 3
    )
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "a.jsonl").write_text('{"x": 1}\n{"x": 2}\n')
    (tmp_path / "j" / "notes.txt").write_text("skipped: not a JSON extension")
    assert df.read_json(str(tmp_path / "j"), lines=True).take_all() == [{"x": 1}, {"x": 2}]
    (tmp_path / "n").mkdir()
    np.save(tmp_path / "n" / "o.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(Exception, match="allow_pickle"):
        df.read_numpy(str(tmp_path / "n")).take_all()


def test_orc_round_trip(tmp_path):
    df.range(7).with_column("s", "id * 2").write_orc(str(tmp_path / "o"))
    back = df.read_orc(str(tmp_path / "o"))
    assert sorted((r["id"], r["s"]) for r in back.take_all()) == [(i, 2 * i) for i in range(7)]
    assert back.select_columns(["s"]).sum("s") == 42


def test_join_ray_signature_and_old_form():
    a = df.from_items([{"id": i, "v": i * 10} for i in range(4)])
    b = df.from_items([{"id": i, "v": i * 100} for i in range(2, 6)])

    def rows(ds):
        return sorted((tuple(r.items()) for r in ds.take_all()), key=str)

    inner = a.join(b, "inner", 2, on=("id",))
    assert rows(inner) == rows(a.join(b, on="id", how="inner"))
    assert rows(inner) == [
        (("id", 2), ("v", 20), ("v_right", 200)),
        (("id", 3), ("v", 30), ("v_right", 300)),
    ]
    left = a.join(b, "left_outer", 2, on=("id",), left_suffix="_l", right_suffix="_r")
    assert sorted(r["id"] for r in left.take_all()) == [0, 1, 2, 3]
    assert {"v_l", "v_r"} <= set(left.take(1)[0])
    assert sorted(r["id"] for r in a.join(b, "full_outer", 2).take_all()) == list(range(6))
    assert rows(a.join(b, "id")) == rows(inner)  # the older join(ds, on) form
    with pytest.raises(PlanError, match="join_type='left_semi' is not supported"):
        a.join(b, "left_semi", 2)
    with pytest.raises(PlanError, match="partition_size_hint=.*drop it"):
        a.join(b, "inner", 2, partition_size_hint=10)
    c = df.from_items([{"id": float(i)} for i in range(2)])
    with pytest.raises(PlanError, match="validate_schemas=True and key 'id' is int64"):
        a.join(c, "inner", 2, validate_schemas=True)


def test_repartition_target_rows_and_keys():
    ds = df.range(10, override_num_blocks=3)
    strict = ds.repartition(target_num_rows_per_block=4, strict=True)
    assert [b.num_rows for b in strict.iterator().iter_blocks()] == [4, 4, 2]
    assert strict.take_all() == ds.take_all()
    assert [
        b.num_rows for b in ds.repartition(target_num_rows_per_block=3).iterator().iter_blocks()
    ] == [3, 3, 3, 1]
    keyed = df.from_items([{"k": i % 3, "v": i} for i in range(12)]).repartition(
        3, keys=["k"], sort=True
    )
    blocks = [b.column("k").to_pylist() for b in keyed.iterator().iter_blocks()]
    assert sorted(blocks) == [[0] * 4, [1] * 4, [2] * 4]
    with pytest.raises(ValueError, match="exactly one of num_blocks or target_num_rows"):
        ds.repartition(2, target_num_rows_per_block=3)


def test_split_proportionately_is_exact_and_stratify_keeps_proportions():
    parts = df.range(10).split_proportionately([0.2, 0.3])
    assert [[r["id"] for r in p.take_all()] for p in parts] == [
        [0, 1],
        [2, 3, 4],
        [5, 6, 7, 8, 9],
    ]
    labelled = df.from_items([{"x": i, "y": "a" if i < 80 else "b"} for i in range(100)])
    train, test = labelled.train_test_split(0.25, stratify="y")
    counts = {r["y"]: r["count()"] for r in test.groupby("y").count().take_all()}
    assert counts == {"a": 20, "b": 5} and train.count() == 75
    assert sorted(r["x"] for r in train.union(test).take_all()) == list(range(100))


def test_groupby_num_partitions_sort_boundaries_union_zip():
    ds = df.from_items([{"k": i % 5, "v": i} for i in range(50)])
    got = ds.groupby("k", num_partitions=3).sum("v").take_all()
    assert sorted((r["k"], r["sum(v)"]) for r in got) == [(k, 225 + 10 * k) for k in range(5)]
    assert df.range(5).sort("id", descending=True, boundaries=[2]).take(2) == [
        {"id": 4},
        {"id": 3},
    ]
    with pytest.raises(ValueError, match="boundaries must be a sorted list of numbers"):
        df.range(5).sort("id", boundaries=[3, 1])
    assert df.range(2).union(df.range(1), df.range(3)).count() == 6
    zipped = df.range(2).zip(
        df.range(2).rename_columns({"id": "a"}), df.range(2).rename_columns({"id": "b"})
    )
    assert zipped.take_all() == [{"id": 0, "a": 0, "b": 0}, {"id": 1, "a": 1, "b": 1}]


def test_connector_readers_take_rays_per_read_parameters(tmp_path):
    import sqlite3

    from dataflow.compat import TaskPoolStrategy
    from dataflow.sources.range import RangeDatasource

    db = str(tmp_path / "app.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(10)])
    ds = df.read_sql(
        "SELECT id FROM t",
        lambda: sqlite3.connect(db),
        shard_keys=["id"],
        parallelism=2,
        concurrency=1,
        ray_remote_args={"num_cpus": 0.5},
    )
    node = ds._plan
    assert (node.parallelism, node.compute.max_size, node.resources.cpu) == (2, 1, 0.5)
    assert sorted(r["id"] for r in ds.take_all()) == list(range(10))

    src = df.read_datasource(RangeDatasource(6), compute=TaskPoolStrategy(size=2), num_cpus=2)
    assert (src._plan.compute.max_size, src._plan.resources.cpu) == (2, 2)
    assert src.count() == 6
    with pytest.raises(PlanError, match="read_datasource: reads run as tasks"):
        df.read_datasource(RangeDatasource(6), compute=df.ActorPoolStrategy(size=2))
    with pytest.raises(PlanError, match="read_sql: label_selector="):
        df.read_sql("SELECT 1", lambda: sqlite3.connect(db), label_selector={"a": "b"})
    with pytest.raises(PlanError, match="read_delta: shuffle='files' is not supported"):
        df.read_delta(str(tmp_path), shuffle="files")
    with pytest.raises(PlanError, match="read_iceberg: catalog="):
        df.read_iceberg(table_identifier="db.t", catalog=object())


def test_read_datasource_passes_read_args_to_get_read_tasks():
    from dataflow.sources.datasource import BlockMetadata, Datasource, ReadTask

    class Repeat(Datasource):
        def get_read_tasks(self, parallelism, *, times=1):
            return [ReadTask(lambda: iter([pa.table({"x": [times] * times})]), BlockMetadata())]

    assert df.read_datasource(Repeat(), times=3).take_all() == [{"x": 3}] * 3
    assert df.read_datasource(Repeat()).take_all() == [{"x": 1}]


def test_webdataset_and_tfrecords_listing_parameters(tmp_path):
    df.from_items([{"__key__": f"k{i}", "cls": i} for i in range(4)]).write_webdataset(
        str(tmp_path / "wds"), min_rows_per_file=4
    )
    (tmp_path / "wds" / "notes.txt").write_text("not a shard")
    ds = df.read_webdataset(
        str(tmp_path / "wds"), include_paths=True, verbose_open=True, file_extensions=["tar"]
    )
    rows = ds.take_all()
    assert sorted(r["cls"] for r in rows) == [0, 1, 2, 3]
    assert all(r["path"].endswith(".tar") for r in rows)
    df.range(5).write_tfrecords(str(tmp_path / "tfr"))
    back = df.read_tfrecords(str(tmp_path / "tfr"), shuffle="files", concurrency=1)
    assert sorted(r["id"] for r in back.take_all()) == [0, 1, 2, 3, 4]
    both = [str(tmp_path / "tfr"), str(tmp_path / "nope")]
    assert df.read_tfrecords(both, ignore_missing_paths=True).count() == 5
    with pytest.raises(SourceError, match="nope"):
        df.read_tfrecords(both).count()
