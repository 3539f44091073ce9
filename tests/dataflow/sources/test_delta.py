"""read_delta / write_delta against real Delta tables, written by dataflow and by
``deltalake`` itself: exact round trips, time travel, pruning, atomic commits."""

from __future__ import annotations

import datetime
import enum
import os

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import dataflow as df
from dataflow.errors import SourceError, UserCodeError
from dataflow.expressions import col
from dataflow.sources.delta import DeltaDatasink, DeltaDatasource

deltalake = pytest.importorskip("deltalake")

UTC = datetime.timezone.utc


@pytest.fixture(autouse=True)
def inline_backend():
    df.init(backend="inline")
    yield
    df.shutdown()


def sample(n: int = 60, start: int = 0) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "cat": pa.array([["a", "b", "c"][i % 3] for i in ids]),
            "x": pa.array([i * 0.5 for i in ids], pa.float64()),
            "day": pa.array([datetime.date(2024, 1, 1 + i % 2) for i in ids]),
            "ts": pa.array(
                [datetime.datetime(2024, 1, 1, 0, 0, i % 60, 123456, tzinfo=UTC) for i in ids],
                pa.timestamp("us", tz="UTC"),
            ),
            "flag": pa.array([i % 2 == 0 for i in ids]),
            "tags": pa.array([[i, i + 1] for i in ids], pa.list_(pa.int64())),
            "maybe": pa.array([None if i % 4 == 0 else f"s{i}" for i in ids]),
        }
    )


def by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def files_of(path) -> dict[str, bytes]:
    """Every file under ``path`` (log included) with its content."""
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = f.read()
    return out


def task_files(source: DeltaDatasource, **pushdown) -> set[str]:
    return {
        os.path.basename(p)
        for t in source.iter_read_tasks(4, **pushdown)
        for p in t.metadata.input_files
    }


def test_roundtrip_is_exact_and_deltalake_reads_it(tmp_path):
    table = sample()
    path = str(tmp_path / "t")
    df.from_arrow(table).repartition(3).write_delta(path, partition_by=["cat"])
    back = df.read_delta(path).to_arrow()
    # Partition columns keep their place in the table's schema.
    assert back.schema == table.schema
    assert by_id(back).equals(table)
    # The table is a real Delta table: deltalake reads the same rows and version 0.
    dt = deltalake.DeltaTable(path)
    assert dt.version() == 0
    assert dt.metadata().partition_columns == ["cat"]
    assert by_id(pa.table(dt.to_pyarrow_table()).select(table.column_names)).equals(table)
    # Statistics are in the log (what lets readers prune files).
    actions = pa.table(dt.get_add_actions(flatten=True))
    assert pc.sum(actions.column("num_records")).as_py() == 60
    assert pc.min(actions.column("min.id")).as_py() == 0
    assert pc.max(actions.column("max.id")).as_py() == 59


def test_reads_a_table_written_by_deltalake(tmp_path):
    table = sample(40)
    path = str(tmp_path / "t")
    deltalake.write_deltalake(path, table, partition_by=["day"])
    assert by_id(df.read_delta(path).to_arrow()).equals(table)
    assert df.read_delta(path).count() == 40  # from the log
    rows = df.read_delta(path, columns=["id"], filter=col("day") == datetime.date(2024, 1, 2))
    assert sorted(r["id"] for r in rows.take_all()) == list(range(1, 40, 2))


def test_versions_and_time_travel(tmp_path):
    path = str(tmp_path / "t")
    df.from_arrow(sample(10)).write_delta(path)
    df.from_arrow(sample(5, start=10)).write_delta(path, mode="append")
    df.from_arrow(sample(3, start=100)).write_delta(path, mode="overwrite")
    ids = {v: sorted(r["id"] for r in df.read_delta(path, version=v).take_all()) for v in range(3)}
    assert ids == {0: list(range(10)), 1: list(range(15)), 2: [100, 101, 102]}
    assert sorted(r["id"] for r in df.read_delta(path).take_all()) == [100, 101, 102]
    assert df.read_delta(path, version=1).count() == 15
    # A time: the version current then (every commit so far is in the past).
    later = datetime.datetime.now(UTC) + datetime.timedelta(seconds=5)
    assert df.read_delta(path, version=later.isoformat()).count() == 3


def test_filter_prunes_files_by_statistics_and_partitions(tmp_path):
    path = str(tmp_path / "t")
    # 8 tasks of sorted ids, 2 partitions: 16 files, ids 0..799.
    df.range(800, override_num_blocks=8).with_column("half", col("id") >= 400).write_delta(
        path, partition_by=["half"]
    )
    source = DeltaDatasource(path)
    assert len(task_files(source)) == 8
    # Statistics: only the first task's file holds ids < 100.
    kept = task_files(source, filter=pc.field("id") < 100)
    assert len(kept) == 1
    assert source.explain_read(filter=pc.field("id") < 100).startswith(
        "version 0, files 1 of 8 (0 pruned by partition values, 7 by statistics)"
    )
    # Partition values: half == true drops the 4 files of the first half without stats.
    assert len(task_files(source, filter=pc.field("half") == True)) == 4  # noqa: E712
    assert "4 pruned by partition values, 0 by statistics" in source.explain_read(
        filter=pc.field("half") == True  # noqa: E712
    )
    # Both at once: either side of an | may hold in a file.
    either = (pc.field("half") == True) | (pc.field("id") < 100)  # noqa: E712
    assert len(task_files(source, filter=either)) == 5
    # Results are exact, and equal to filtering the whole table.
    ds = df.read_delta(path, columns=["id"], filter="id >= 395 and id < 405 and half")
    assert sorted(r["id"] for r in ds.take_all()) == list(range(400, 405))
    whole = df.read_delta(path).to_arrow()
    expected = sorted(
        whole.filter((pc.field("id") >= 395) & (pc.field("id") < 405)).column("id").to_pylist()
    )
    assert (
        sorted(
            r["id"] for r in df.read_delta(path).filter(expr="id >= 395 and id < 405").take_all()
        )
        == expected
    )


def test_explain_shows_the_pushdown(tmp_path, capsys):
    path = str(tmp_path / "t")
    df.range(100, override_num_blocks=4).write_delta(path)
    df.read_delta(path).filter(expr="id < 10").select_columns(["id"]).explain()
    text = capsys.readouterr().out
    assert (
        "-- Scans --\nread_delta: version 0, files 1 of 4 (0 pruned by partition values, 3 by statistics), columns [id], filter (id < 10)"
        in text
    )


def test_statistics_edge_cases_do_not_drop_matching_rows(tmp_path):
    path = str(tmp_path / "t")
    # deltalake keeps timestamp statistics in milliseconds (truncated max), long
    # strings may be truncated, NaN is null for is_null().
    t = pa.table(
        {
            "ts": pa.array(
                [datetime.datetime(2024, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)],
                pa.timestamp("us", tz="UTC"),
            ),
            "s": ["z" * 40],
            "f": [float("nan")],
        }
    )
    deltalake.write_deltalake(path, t)
    exact = datetime.datetime(2024, 1, 1, 0, 0, 0, 999999, tzinfo=UTC)
    assert df.read_delta(path, filter=col("ts") >= exact).count() == 1
    assert df.read_delta(path, filter=col("s") == "z" * 40).count() == 1
    assert df.read_delta(path, filter=col("s") > "z" * 39).count() == 1
    assert df.read_delta(path, filter=col("f").is_null()).count() == 1
    # A filter that cannot match prunes the file.
    source = DeltaDatasource(path)
    assert (
        task_files(source, filter=pc.field("ts") < pa.scalar(exact - datetime.timedelta(days=1)))
        == set()
    )


def test_schema_evolution_old_files_read_nulls(tmp_path):
    path = str(tmp_path / "t")
    deltalake.write_deltalake(path, pa.table({"a": [1, 2]}))
    deltalake.write_deltalake(
        path, pa.table({"a": [3], "b": ["x"]}), mode="append", schema_mode="merge"
    )
    rows = sorted(df.read_delta(path).take_all(), key=lambda r: r["a"])
    assert rows == [{"a": 1, "b": None}, {"a": 2, "b": None}, {"a": 3, "b": "x"}]
    assert df.read_delta(path, filter=col("b") == "x", columns=["a"]).take_all() == [{"a": 3}]
    assert df.read_delta(path, filter=col("b").is_null()).count() == 2


def test_append_types_follow_the_table(tmp_path):
    path = str(tmp_path / "t")
    df.from_arrow(pa.table({"a": pa.array([1], pa.int64()), "b": ["x"]})).write_delta(path)
    # int32 data into an int64 column; a missing nullable column reads as null.
    df.from_arrow(pa.table({"a": pa.array([2], pa.int32())})).write_delta(path)
    back = by_id(df.read_delta(path).to_arrow().rename_columns(["id", "b"]))
    assert back.to_pylist() == [{"id": 1, "b": "x"}, {"id": 2, "b": None}]
    with pytest.raises(UserCodeError, match=r"columns \[.c.\] are not in the Delta table"):
        df.from_arrow(pa.table({"a": [3], "c": [1.0]})).write_delta(path)
    # Unsigned ints widen, nanoseconds become microseconds: Delta has neither.
    other = str(tmp_path / "u")
    t = pa.table(
        {"u": pa.array([2**32 - 1], pa.uint32()), "t": pa.array([10**9], pa.timestamp("ns"))}
    )
    df.from_arrow(t).write_delta(other)
    assert df.read_delta(other).to_arrow().to_pylist() == [
        {"u": 2**32 - 1, "t": datetime.datetime(1970, 1, 1, 0, 0, 1)}
    ]
    # Tensor columns are stored as lists (Delta has no tensor type).
    tensors = str(tmp_path / "tensors")
    df.range_tensor(3, shape=(2,)).write_delta(tensors)
    assert df.read_delta(tensors).take_all() == [{"data": [i, i]} for i in range(3)]


def test_failed_write_commits_nothing_and_leaves_no_file(tmp_path):
    path = tmp_path / "t"
    df.from_arrow(sample(20)).write_delta(str(path), partition_by=["cat"])
    before = files_of(path)

    def fail_on_7th(batch):
        if batch["id"][0] == 6:
            raise ValueError("bad block 7")
        return batch

    for mode in ("append", "overwrite"):
        with pytest.raises(UserCodeError, match="bad block 7"):
            df.from_arrow(sample(10)).repartition(10).map_batches(fail_on_7th).write_delta(
                str(path), mode=mode
            )
        assert deltalake.DeltaTable(str(path)).version() == 0
        assert files_of(path) == before
    # A table that did not exist is not created.
    fresh = tmp_path / "fresh"
    with pytest.raises(UserCodeError, match="bad block 7"):
        df.from_arrow(sample(10)).repartition(10).map_batches(fail_on_7th).write_delta(
            str(fresh), partition_by=["cat"]
        )
    assert not fresh.exists()


def test_modes_and_partitioning_errors(tmp_path):
    path = str(tmp_path / "t")
    df.from_arrow(sample(6)).write_delta(path, partition_by=["cat"])
    with pytest.raises(FileExistsError, match="mode='append'"):
        df.from_arrow(sample(6)).write_delta(path, mode="error")
    df.from_arrow(sample(6)).write_delta(path, mode="ignore")
    assert deltalake.DeltaTable(path).version() == 0
    with pytest.raises(ValueError, match=r"partitioned by \['cat'\], not by \['day'\]"):
        df.from_arrow(sample(6)).write_delta(path, partition_by=["day"])
    with pytest.raises(ValueError, match="mode must be one of"):
        DeltaDatasink(path, mode="upsert")
    # partition_by left out: the table's partitioning is kept; Ray Data's SaveMode
    # (an Enum of these strings) is accepted as mode.
    SaveMode = enum.Enum("SaveMode", {"APPEND": "append"})
    df.from_arrow(sample(3, start=6)).write_delta(path, mode=SaveMode.APPEND)
    assert deltalake.DeltaTable(path).metadata().partition_columns == ["cat"]
    assert df.read_delta(path).count() == 9


def test_missing_table_version_and_column_are_source_errors(tmp_path):
    missing = str(tmp_path / "nope")
    secret = "sekrit-key-123"
    with pytest.raises(SourceError, match="no readable Delta table at") as info:
        df.read_delta(missing, storage_options={"AWS_SECRET_ACCESS_KEY": secret})
    assert info.value.path == missing
    assert secret not in str(info.value)
    path = str(tmp_path / "t")
    df.range(3).write_delta(path)
    with pytest.raises(SourceError, match=r"has no version 5 \(the latest is 0\)"):
        df.read_delta(path, version=5)
    with pytest.raises(SourceError, match=r"columns \['zz'\] are not in"):
        df.read_delta(path, columns=["zz"]).take_all()
    with pytest.raises(df.PlanError, match="read_delta: filter must be"):
        df.read_delta(path, filter=lambda r: True)


def test_column_mapping_is_refused_clearly(tmp_path):
    path = str(tmp_path / "t")
    deltalake.write_deltalake(
        path, pa.table({"a": [1]}), configuration={"delta.columnMapping.mode": "name"}
    )
    with pytest.raises(SourceError, match="uses column mapping"):
        df.read_delta(path)


def test_read_and_write_on_worker_processes(tmp_path):
    df.shutdown()
    df.init(backend="local", num_cpus=2)
    path = str(tmp_path / "t")
    df.range(1000, override_num_blocks=4).write_delta(path)
    ds = df.read_delta(path, filter=col("id") % 100 == 0)
    assert sorted(r["id"] for r in ds.take_all()) == list(range(0, 1000, 100))
