from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from dataflow.context import DataContext
from dataflow.errors import SourceError
from dataflow.sources.datasource import TaskSizer
from dataflow.sources.parquet import ParquetDatasource


class CountingFS(LocalFileSystem):
    """The local filesystem, counting the bytes every opened file returns."""

    bytes_read = 0

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        read = f.read

        def counted(*args):
            data = read(*args)
            CountingFS.bytes_read += len(data)
            return data

        f.read = counted
        return f


def write(path, table, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path, **kwargs)


def numbers(lo, hi):
    return pa.table(
        {"a": pa.array(range(lo, hi), pa.int64()), "b": [f"s{i}" for i in range(lo, hi)]}
    )


@pytest.fixture
def hive_dir(tmp_path):
    write(str(tmp_path / "y=1" / "part-0.parquet"), numbers(0, 50), row_group_size=10)
    write(str(tmp_path / "y=2" / "part-0.parquet"), numbers(50, 100), row_group_size=10)
    (tmp_path / "_SUCCESS").write_text("{}")
    (tmp_path / ".hidden.parquet").write_bytes(b"not parquet")
    (tmp_path / "y=2" / "_temporary-x").mkdir()
    (tmp_path / "y=2" / "_temporary-x" / "junk.parquet").write_bytes(b"junk")
    return tmp_path


def test_directory_read_gives_exact_rows_with_hive_columns(hive_dir, read_all):
    out = read_all(ParquetDatasource(str(hive_dir))).sort_by("a")
    assert out.schema.names == ["a", "b", "y"]
    assert out.schema.field("y").type == pa.int64()
    assert out.column("a").to_pylist() == list(range(100))
    assert out.column("b").to_pylist()[48:52] == ["s48", "s49", "s50", "s51"]
    assert out.column("y").to_pylist() == [1] * 50 + [2] * 50


def test_count_and_schema_come_from_footers_only(tmp_path):
    rng = np.random.default_rng(0)
    for y in (1, 2):  # files well above the 64 KiB footer read-ahead
        write(str(tmp_path / f"y={y}" / "f.parquet"), pa.table({"v": rng.random(50_000)}))
    CountingFS.bytes_read = 0
    src = ParquetDatasource(str(tmp_path), filesystem=CountingFS(skip_instance_cache=True))
    assert src.num_rows() == 100_000
    assert src.schema() == pa.schema([("v", pa.float64()), ("y", pa.int64())])
    file_bytes = sum(f.stat().st_size for f in tmp_path.rglob("*.parquet"))
    assert 0 < CountingFS.bytes_read < file_bytes / 3


def test_filter_and_columns_prune_row_groups_and_bytes(tmp_path, read_all, run_tasks):
    n = 100_000
    write(
        str(tmp_path / "f.parquet"),
        pa.table({"a": np.arange(n), "b": np.arange(n) * 0.5, "c": np.arange(n) % 7}),
        row_group_size=10_000,
    )
    fs = CountingFS(skip_instance_cache=True)
    src = ParquetDatasource(str(tmp_path), filesystem=fs)
    # Footers cached (with the fragments a filter prunes by): what follows
    # counts data reads only.
    src.num_rows()
    list(src.iter_read_tasks(1, filter=pc.field("a") >= 0))
    CountingFS.bytes_read = 0
    full = read_all(src, 1)
    full_bytes = CountingFS.bytes_read

    CountingFS.bytes_read = 0
    tasks = run_tasks(src, 1, columns=["b"], filter=pc.field("a") >= 95_000)
    pruned_bytes = CountingFS.bytes_read
    out = pa.concat_tables([b for t in tasks for b in t])
    assert full.num_rows == n
    assert out.column_names == ["b"]
    assert out.column("b").to_pylist() == [i * 0.5 for i in range(95_000, n)]
    assert pruned_bytes < full_bytes / 8  # 1 of 10 row groups, 2 of 3 columns
    (task,) = list(src.iter_read_tasks(1, filter=pc.field("a") >= 95_000))
    assert task.metadata.num_rows is None
    assert (
        task.metadata.size_bytes
        < pq.ParquetFile(tmp_path / "f.parquet").metadata.row_group(0).total_byte_size * 2
    )


def test_partition_filter_skips_files_without_opening_them(hive_dir, read_all):
    # A partition the filter excludes may even be unreadable.
    write(str(hive_dir / "y=3" / "part-0.parquet"), numbers(100, 110))
    (hive_dir / "y=3" / "part-0.parquet").write_bytes(b"corrupt")
    src = ParquetDatasource(str(hive_dir))
    tasks = list(src.iter_read_tasks(4, filter=(pc.field("y") == 2) & (pc.field("a") < 53)))
    assert {f for t in tasks for f in t.metadata.input_files} == {
        str(hive_dir / "y=2" / "part-0.parquet")
    }
    out = read_all(src, 4, filter=(pc.field("y") == 2) & (pc.field("a") < 53))
    assert out.to_pydict() == {"a": [50, 51, 52], "b": ["s50", "s51", "s52"], "y": [2, 2, 2]}


def test_big_file_splits_by_row_groups_small_files_group(tmp_path, monkeypatch, run_tasks):
    ctx = DataContext.get_current()
    monkeypatch.setattr(ctx, "target_max_block_size", 200_000)
    monkeypatch.setattr(ctx, "target_min_block_size", 1)
    big = pa.table({"x": np.arange(200_000, dtype=np.int64)})  # 1.6 MB, 20 row groups
    write(str(tmp_path / "big" / "f.parquet"), big, row_group_size=10_000)
    tasks = run_tasks(ParquetDatasource(str(tmp_path / "big")), 2)
    assert len(tasks) >= 8
    assert all(b.nbytes <= 200_000 for t in tasks for b in t)
    assert (
        pa.concat_tables([b for t in tasks for b in t]).column("x").to_pylist()
        == big.column("x").to_pylist()
    )

    for i in range(40):
        write(str(tmp_path / "small" / f"f{i:03d}.parquet"), pa.table({"x": [i] * 100}))
    monkeypatch.setattr(ctx, "target_max_block_size", 128 << 20)
    tasks = run_tasks(ParquetDatasource(str(tmp_path / "small")), 4)
    assert 4 <= len(tasks) <= 5
    assert all(len(t) == 1 for t in tasks)  # one coalesced block per task
    got = [b.column("x").to_pylist() for t in tasks for b in t]
    assert sum(got, []) == [i for i in range(40) for _ in range(100)]


def test_schema_unification_and_conflicts(tmp_path, read_all):
    write(
        str(tmp_path / "ok" / "1.parquet"),
        pa.table({"a": pa.array([1, 2], pa.int32()), "b": ["x", "y"]}),
    )
    write(
        str(tmp_path / "ok" / "2.parquet"), pa.table({"a": pa.array([3], pa.int64()), "c": [1.5]})
    )
    src = ParquetDatasource(str(tmp_path / "ok"))
    assert src.schema() == pa.schema([("a", pa.int64()), ("b", pa.string()), ("c", pa.float64())])
    out = read_all(src).sort_by("a")
    assert out.select(["a", "b", "c"]).to_pylist() == [
        {"a": 1, "b": "x", "c": None},
        {"a": 2, "b": "y", "c": None},
        {"a": 3, "b": None, "c": 1.5},
    ]

    write(str(tmp_path / "bad" / "1.parquet"), pa.table({"a": [1]}))
    write(str(tmp_path / "bad" / "2.parquet"), pa.table({"a": ["x"]}))
    with pytest.raises(SourceError, match="incompatible") as info:
        ParquetDatasource(str(tmp_path / "bad")).schema()
    assert info.value.path == str(tmp_path / "bad" / "2.parquet")
    assert "1.parquet" in str(info.value)


def test_corrupt_files_raise_source_error_naming_the_path(tmp_path, run_tasks):
    write(str(tmp_path / "a.parquet"), numbers(0, 10))
    (tmp_path / "b.parquet").write_bytes(b"PAR1 this is not parquet at all PAR1")
    tasks = list(ParquetDatasource(str(tmp_path)).iter_read_tasks(4))
    results = []
    for task in tasks:
        try:
            results.append(sum(b.num_rows for b in task()))
        except SourceError as e:
            results.append(e.path)
    assert sorted(map(str, results)) == sorted(["10", str(tmp_path / "b.parquet")])

    # A valid footer over damaged pages: the error surfaces in the read task.
    path = tmp_path / "pages" / "c.parquet"
    write(str(path), pa.table({"a": np.arange(10_000)}), compression="snappy")
    raw = bytearray(path.read_bytes())
    raw[100:4000] = b"\xff" * 3900
    path.write_bytes(bytes(raw))
    with pytest.raises(SourceError) as info:
        run_tasks(ParquetDatasource(str(path)))
    assert info.value.path == str(path)
    assert "read_parquet" in str(info.value)


def test_bad_paths_and_columns(tmp_path):
    with pytest.raises(SourceError, match="no such file") as info:
        ParquetDatasource(str(tmp_path / "missing")).num_rows()
    assert info.value.path == str(tmp_path / "missing")
    with pytest.raises(SourceError, match="matches no file"):
        ParquetDatasource(str(tmp_path / "*.parquet")).num_rows()
    write(str(tmp_path / "f.parquet"), numbers(0, 3))
    with pytest.raises(SourceError, match=r"columns \['zz'\] are not in"):
        list(ParquetDatasource(str(tmp_path)).iter_read_tasks(1, columns=["zz"]))
    with pytest.raises(ValueError, match="partitioning"):
        ParquetDatasource(str(tmp_path), partitioning="directory")


def test_glob_list_include_paths_and_limit(tmp_path, read_all):
    for i in range(10):
        write(str(tmp_path / f"f{i}.parquet"), numbers(i * 10, i * 10 + 10))
    src = ParquetDatasource(
        [str(tmp_path / "f1.parquet"), str(tmp_path / "f[23].parquet")], include_paths=True
    )
    out = read_all(src)
    assert out.column("a").to_pylist() == list(range(10, 40))
    assert out.column("path").to_pylist() == [
        str(tmp_path / f"f{i}.parquet") for i in (1, 2, 3) for _ in range(10)
    ]
    assert read_all(src, columns=["path"]).num_rows == 30

    src = ParquetDatasource(str(tmp_path))
    tasks = list(src.iter_read_tasks(10, limit=15))
    # Planning stops once the limit is covered: 2 of 10 files, 15 rows.
    assert [f.rsplit("/", 1)[1] for t in tasks for f in t.metadata.input_files] == [
        "f0.parquet",
        "f1.parquet",
    ]
    assert sum(t.metadata.num_rows for t in tasks) == 15
    assert sum(b.num_rows for t in tasks for b in t()) == 15


class SlowFS(LocalFileSystem):
    """The local filesystem with an object store's latency on every open; records
    opens (a list: ``append`` is atomic, ``+= 1`` from footer threads could lose counts)."""

    opened: list = []

    def _open(self, path, mode="rb", **kwargs):
        SlowFS.opened.append(path)
        time.sleep(0.0005)
        return super()._open(path, mode, **kwargs)


def test_planning_streams_first_batch_before_footers_finish(tmp_path, monkeypatch):
    """The first read task runs while most footers are still unread: planning
    streams. Counted in opens, not seconds, so a loaded machine cannot fail it."""
    monkeypatch.setattr(DataContext.get_current(), "target_min_block_size", 1)
    table = pa.table({"a": np.arange(1000), "b": np.arange(1000) * 2.0})
    for i in range(2000):
        pq.write_table(table, str(tmp_path / f"f{i:04d}.parquet"))
    fs = SlowFS(skip_instance_cache=True)
    monkeypatch.setattr(SlowFS, "opened", [])

    tasks = ParquetDatasource(str(tmp_path), filesystem=fs).iter_read_tasks(64)
    first_batch = next(iter(next(tasks)()))
    opened_before_first_batch = len(SlowFS.opened)
    rest = list(tasks)

    assert first_batch.column("a").to_pylist()[:3] == [0, 1, 2]
    assert first_batch.num_rows % 1000 == 0
    assert 1 + len(rest) >= 60
    assert len(set(SlowFS.opened)) == 2000  # every footer was read in the end
    assert opened_before_first_batch < 2000 / 4, opened_before_first_batch


def test_read_tasks_ramp_up_then_even_waves(tmp_path, monkeypatch, run_tasks):
    """Big tasks: a first wave of eighth-size tasks, then whole waves of even tasks
    (none left over for a lone last task); tasks are sized on the columns read."""
    import dataflow.sources.parquet as parquet

    ctx = DataContext.get_current()
    monkeypatch.setattr(ctx, "target_max_block_size", 1 << 20)
    monkeypatch.setattr(ctx, "target_min_block_size", 1)
    monkeypatch.setattr(parquet, "_RAMP_MIN_TASK_BYTES", 100_000)
    for i in range(4):
        ids = np.arange(i * 100_000, (i + 1) * 100_000, dtype=np.int64)
        table = pa.table({"x": ids, "y": ids.astype(np.float64), "z": ids * 2})
        write(str(tmp_path / f"f{i}.parquet"), table, row_group_size=5_000)
    src = ParquetDatasource(str(tmp_path))
    rows = [t.metadata.num_rows for t in src.get_read_tasks(2, columns=["x"])]
    # 3.2 MB of x over 2 slots: 2 waves of 0.8 MB (+ a row group of slack); the
    # first wave is cut into 0.105 MB tasks: 2 row groups of 40 kB each.
    assert rows[:2] == [10_000, 10_000]
    assert len(rows) % 2 == 0 and sum(rows) == 400_000
    assert rows[2:] == [95_000, 95_000, 95_000, 95_000]
    tasks = run_tasks(src, 2)
    got = pa.concat_tables([b for t in tasks for b in t]).column("x").to_pylist()
    assert got == list(range(400_000))


def test_a_sizer_shrinks_later_tasks_to_the_measured_cost(tmp_path):
    for i in range(2):
        ids = np.arange(i * 100_000, (i + 1) * 100_000, dtype=np.int64)
        write(str(tmp_path / f"f{i}.parquet"), pa.table({"x": ids}), row_group_size=5_000)
    src = ParquetDatasource(str(tmp_path))
    sizer = TaskSizer(target_s=1.0)
    tasks = src.iter_read_tasks(1, sizer=sizer)
    first = next(tasks)  # planned from bytes alone: the whole 1.6 MB (one slot)
    assert first.metadata.num_rows == 200_000
    # Measured: 1.6 MB took 4 s, so 1 s is 0.4 MB = 10 row groups of 40 kB.
    sizer.observe(4.0, first.metadata.size_bytes)
    src = ParquetDatasource(str(tmp_path))
    rows = [t.metadata.num_rows for t in src.iter_read_tasks(1, sizer=sizer)]
    assert rows == [50_000] * 4


def test_footers_are_parsed_once_per_process_until_the_file_changes(tmp_path, monkeypatch):
    import dataflow as df
    from dataflow.sources import parquet

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"x": np.arange(10)}), path)
    reads = []
    real = pq.read_metadata
    monkeypatch.setattr(
        parquet.pq, "read_metadata", lambda *a, **k: reads.append(a) or real(*a, **k)
    )
    assert df.read_parquet(str(path)).count() == 10
    assert df.read_parquet(str(path)).sum("x") == 45  # a new dataset: the footer is reused
    assert len(reads) == 1
    # Rewritten in place (same size, a new modification time): parsed again.
    pq.write_table(pa.table({"x": np.arange(10, 20)}), path)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert df.read_parquet(str(path)).sum("x") == sum(range(10, 20))
    assert len(reads) == 2
