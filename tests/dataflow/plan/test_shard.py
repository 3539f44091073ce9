"""shard_plan: shares of a plan cut at its sources are disjoint and together
cover every row; plans that need every row are refused by name."""

from __future__ import annotations

import collections

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataflow as df
from dataflow.errors import PlanError
from dataflow.plan.optimizer import optimize
from dataflow.plan.planner import execute
from dataflow.plan.shard import ShardedDatasource, shard_plan


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
