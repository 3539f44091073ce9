"""shard_plan and shard_rows: shares of a plan cut at its sources are disjoint
and together cover every row; plans that need every row are refused by name."""

from __future__ import annotations

import collections

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import dataflow as df
from dataflow.errors import PlanError
from dataflow.plan.optimizer import optimize
from dataflow.plan.planner import execute
from dataflow.plan.shard import (
    RowRangeDatasource,
    ShardedDatasource,
    _read_slice,
    batch_share,
    rows_follow_input,
    shard_plan,
    shard_rows,
    share_range,
    source_rows,
    wrap,
)


@pytest.fixture(autouse=True)
def inline():
    df.init("inline")
    yield
    df.shutdown()


def ids_of(plan) -> list[int]:
    ctx = df.DataContext.get_current().copy()
    with execute(optimize(plan, ctx.optimizer_flags), ctx) as stream:
        return [i for t in stream.iter_blocks() for i in t.column("id").to_pylist()]


def shares(ds: df.Dataset, count: int) -> list[list[int]]:
    return [ids_of(shard_plan(ds._plan, i, count)) for i in range(count)]


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_read_tasks_are_dealt_round_robin(tmp_path, monkeypatch, count):
    # Tiny files would all be read by one task (then one share has all the rows).
    monkeypatch.setattr(df.DataContext.get_current(), "target_min_block_size", 1)
    for k in range(7):
        pq.write_table(
            pa.table({"id": list(range(k * 10, k * 10 + 10))}), tmp_path / f"{k}.parquet"
        )
    ds = df.read_parquet(str(tmp_path), columns=["id"]).map_batches(lambda b: b)
    parts = shares(ds, count)
    assert collections.Counter(i for p in parts for i in p) == collections.Counter(range(70))
    if count <= 3:
        assert all(parts)  # 2 * count read tasks: nobody is left without work


def test_in_memory_blocks_are_cut_into_row_ranges():
    ds = df.from_arrow([pa.table({"id": list(range(0, 5))}), pa.table({"id": list(range(5, 12))})])
    assert shares(ds.filter(expr="id != 3"), 3) == [[0, 5, 6], [1, 2, 7, 8], [4, 9, 10, 11]]


def test_a_union_shards_each_input():
    ds = df.range(10).union(df.from_items([{"id": i} for i in range(10, 16)]))
    parts = shares(ds, 2)
    assert sorted(parts[0] + parts[1]) == list(range(16))
    assert not set(parts[0]) & set(parts[1])


def test_the_sharded_source_keeps_its_pushdowns():
    source = shard_plan(df.range(8)._plan, 1, 2).datasource
    assert isinstance(source, ShardedDatasource)
    assert source.get_name() == "range" and source.parallelism == 4
    assert source.reads_without_gil == source.inner.reads_without_gil


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda ds: ds.limit(3), "limit(3)"),
        (lambda ds: ds.sort("id"), "sort(id)"),
        (lambda ds: ds.random_shuffle(), "random_shuffle"),
        (lambda ds: ds.zip(df.range(10)), "zip"),
        (lambda ds: ds.repartition(2), "repartition(2)"),
    ],
)
def test_plans_needing_every_row_are_refused_naming_the_operator(make, name):
    with pytest.raises(PlanError) as info:
        shard_plan(make(df.range(10))._plan, 0, 2, where="to_torch_dataset")
    assert str(info.value).startswith(
        f"to_torch_dataset: {name} needs the rows of every share, so the plan cannot be "
        "split into 2 independent shares at its sources"
    )


def test_bad_share_index():
    with pytest.raises(ValueError, match="share 2 out of range 0..1"):
        shard_plan(df.range(3)._plan, 2, 2)


def test_one_share_is_the_whole_plan():
    plan = df.range(10).random_shuffle(seed=3)._plan
    assert shard_plan(plan, 0, 1) is plan


# -- by rows -----------------------------------------------------------------------


def _parquet_ids(tmp_path, n: int, files: int, row_group: int) -> str:
    for k in range(files):
        lo, hi = n * k // files, n * (k + 1) // files
        pq.write_table(
            pa.table({"id": list(range(lo, hi))}),
            tmp_path / f"{k:02d}.parquet",
            row_group_size=row_group,
        )
    return str(tmp_path)


@pytest.mark.parametrize(
    "ranges", [[(0, 100)], [(37, 38)], [(13, 77)], [(90, 100), (0, 5)], [(5, 9), (50, 61)]]
)
def test_row_ranges_of_files_and_memory_blocks(tmp_path, ranges):
    files = df.read_parquet(_parquet_ids(tmp_path, 60, files=4, row_group=7))
    memory = df.from_arrow([pa.table({"id": list(range(60, 75))}), pa.table({"id": [75]})])
    ds = files.union(memory, df.range(24).map_batches(lambda b: {"id": b["id"] + 76}))
    want = [i for a, b in ranges for i in range(a, b)]
    assert sorted(ids_of(shard_rows(ds._plan, ranges))) == sorted(want)


@pytest.mark.parametrize("blocks", [1, 3, 40])
def test_row_ranges_do_not_depend_on_how_a_process_cuts_read_tasks(tmp_path, monkeypatch, blocks):
    monkeypatch.setattr(df.DataContext.get_current(), "target_min_block_size", 1)
    ds = df.read_parquet(
        _parquet_ids(tmp_path, 300, files=3, row_group=10), override_num_blocks=blocks
    )
    assert ids_of(shard_rows(ds._plan, [(95, 213)])) == list(range(95, 213))


def test_a_filter_runs_after_the_row_cut(tmp_path):
    ds = df.read_parquet(_parquet_ids(tmp_path, 100, files=2, row_group=10)).filter(
        expr="id % 2 == 0"
    )
    share = shard_rows(ds._plan, [(10, 31)])
    assert ids_of(share) == list(range(10, 31, 2))
    read = next(n for n in share.walk() if hasattr(n, "datasource"))
    assert isinstance(read.datasource, RowRangeDatasource)
    assert read.datasource.num_rows() == 21 and not read.datasource.supports_predicate_pushdown


def test_a_sliced_read_task_stops_reading_after_its_rows():
    pulled = []

    def blocks():
        for k in range(10):
            pulled.append(k)
            yield pa.table({"id": list(range(k * 10, k * 10 + 10))})

    out = list(_read_slice(blocks, 25, 12))
    assert [t["id"].to_pylist() for t in out] == [list(range(25, 30)), list(range(30, 37))]
    assert pulled == [0, 1, 2, 3]


def test_a_filter_given_to_the_read_runs_after_the_cut(tmp_path):
    path = _parquet_ids(tmp_path, 20, files=2, row_group=5)
    filtered = df.read_parquet(path, filter=df.col("id") % 3 == 0)
    assert source_rows(filtered._plan) == [20]  # rows read, before the filter
    assert ids_of(shard_rows(filtered._plan, [(4, 16)])) == [6, 9, 12, 15]


def test_sources_that_cannot_count_their_rows(tmp_path):
    pacsv.write_csv(pa.table({"id": [1, 2, 3]}), tmp_path / "a.csv")
    ds = df.read_csv(str(tmp_path)).union(df.range(5))
    assert source_rows(ds._plan) == [None, 5]
    with pytest.raises(PlanError, match="shard: a source of this dataset cannot count its rows"):
        shard_rows(ds._plan, [(0, 5)], where="shard")


def test_rows_follow_input_unless_a_filter_or_flat_map_runs(tmp_path):
    path = _parquet_ids(tmp_path, 20, files=1, row_group=5)
    assert rows_follow_input(df.range(5).map_batches(lambda b: b).select_columns("id")._plan)
    assert not rows_follow_input(df.range(5).filter(expr="id > 1")._plan)
    assert not rows_follow_input(df.range(5).flat_map(lambda r: [r])._plan)
    assert not rows_follow_input(df.read_parquet(path, filter=df.col("id") > 3)._plan)


def test_row_cut_refuses_a_plan_that_needs_every_row():
    with pytest.raises(PlanError) as info:
        shard_rows(df.range(10).sort("id")._plan, [(0, 5)], where="shard", hint="do X")
    assert str(info.value) == (
        "shard: sort(id) needs the rows of every share, so the plan cannot be split into "
        "independent shares at its sources; do X"
    )


@pytest.mark.parametrize("total", [0, 1, 2, 7, 100, 101])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_share_arithmetic(total, count):
    keep = [share_range(total, i, count) for i in range(count)]
    assert [i for a, b in keep for i in range(a, b)] == list(range(total))
    assert max(b - a for a, b in keep) - min(b - a for a, b in keep) <= 1
    drop = [share_range(total, i, count, "drop") for i in range(count)]
    assert {b - a for a, b in drop} == {total // count}
    assert [i for a, b in drop for i in range(a, b)] == list(range(total - total % count))
    pad = [wrap(*share_range(total, i, count, "pad"), total) for i in range(count)]
    rows = [i for r in pad for a, b in r for i in range(a, b)]
    assert {sum(b - a for a, b in r) for r in pad} == {-(-total // count) if total else 0}
    assert set(rows) == set(range(total))
    # The padding repeats the first rows (cyclically), as DistributedSampler's does.
    padding = [i % total for i in range(len(rows) - total)] if total else []
    assert sorted(rows) == sorted(list(range(total)) + padding)


@pytest.mark.parametrize("rows, size", [(0, 4), (10, 4), (12, 4), (3, 8), (100, 7)])
@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_batch_shares_are_whole_batches(rows, size, parts):
    cut = [batch_share(rows, size, i, parts) for i in range(parts)]
    assert [i for a, b in cut for i in range(a, b)] == list(range(rows))
    assert sum(-(-(b - a) // size) for a, b in cut) == -(-rows // size)
    assert all((b - a) % size == 0 for a, b in cut if b < rows)
