"""The exchange operator run by the streaming executor (inline and local backends)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from dataflow.aggregate import Count, Mean, Sum
from dataflow.context import DataContext
from dataflow.errors import UserCodeError
from dataflow.exec.exchange.operator import ExchangeOperator
from dataflow.exec.exchange.partition import sort_keys
from dataflow.exec.exchange.tasks import (
    AggregateSpec,
    JoinSpec,
    MapGroupsSpec,
    RandomShuffleSpec,
    RepartitionSpec,
    SortSpec,
)
from dataflow.exec.executor import OutputStream, StreamingExecutor
from dataflow.exec.interfaces import ExecEnv, RefBundle
from dataflow.exec.operators.input import InputBuffer
from runtime.backends.inline import InlineBackend


@pytest.fixture(scope="module")
def inline():
    backend = InlineBackend(num_cpus=2)
    yield backend
    backend.shutdown()


def _blocks(n: int, num_blocks: int, seed: int = 0) -> list[pa.Table]:
    rng = np.random.default_rng(seed)
    t = pa.table(
        {
            "id": np.arange(n),
            "k": pa.array(
                list(np.array(["a", "b", "c"])[rng.integers(0, 3, n)]), mask=rng.random(n) < 0.05
            ),
            "v": pa.array(rng.integers(0, 100, n), mask=rng.random(n) < 0.05),
        }
    )
    step = -(-n // num_blocks)
    return [t.slice(i, step) for i in range(0, n, step)]


def run(
    backend, spec, tables, *, right=None, num_partitions=None, ctx=None, total_rows=None
) -> list[pa.Table]:
    ctx = ctx or DataContext()
    ins = [InputBuffer("left", tables=tables)]
    if right is not None:
        ins.append(InputBuffer("right", tables=right))
    op = ExchangeOperator(
        "exchange", ins, spec, num_partitions=num_partitions, total_rows=total_rows
    )
    ex = StreamingExecutor(op, backend, ctx)
    ex.start()
    with OutputStream(ex) as stream:
        return list(stream.iter_blocks())


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables([t for t in tables if t.num_columns])


def test_sort_multi_key_matches_pandas(inline):
    blocks = _blocks(3000, 7)
    key = sort_keys(["k", "v"], [True, False])
    out = run(inline, SortSpec(key), blocks)
    assert len(out) > 1  # really partitioned
    got = _concat(out).to_pandas()
    exp = (
        _concat(blocks)
        .to_pandas()
        .sort_values(["k", "v"], ascending=[False, True], na_position="last", kind="stable")
    )
    pd.testing.assert_frame_equal(
        got[["k", "v"]].reset_index(drop=True), exp[["k", "v"]].reset_index(drop=True)
    )
    assert sorted(got["id"]) == list(range(3000))


def test_random_shuffle_is_a_seeded_permutation_independent_of_partitions(inline):
    blocks = _blocks(2000, 5)
    a = _concat(run(inline, RandomShuffleSpec(7), blocks)).column("id").to_pylist()
    b = (
        _concat(run(inline, RandomShuffleSpec(7), blocks, num_partitions=3))
        .column("id")
        .to_pylist()
    )
    c = _concat(run(inline, RandomShuffleSpec(8), blocks)).column("id").to_pylist()
    assert sorted(a) == list(range(2000))
    assert a == b and a != c and a != list(range(2000))


def test_groupby_aggregate_matches_pandas(inline):
    blocks = _blocks(3000, 6)
    aggs = [Count(), Sum("v"), Mean("v")]
    got = _concat(run(inline, AggregateSpec(["k"], aggs), blocks)).to_pandas()
    got = got.sort_values("k", na_position="last").reset_index(drop=True)
    g = _concat(blocks).to_pandas().groupby("k", dropna=False)
    assert got["count()"].tolist() == g.size().tolist()
    assert got["sum(v)"].tolist() == g["v"].sum().tolist()
    np.testing.assert_allclose(got["mean(v)"], g["v"].mean())


def test_global_aggregate_of_nothing_has_one_row(inline):
    (out,) = run(inline, AggregateSpec([], [Count(), Sum("v")]), [])
    assert out.to_pydict() == {"count()": [0], "sum(v)": [None]}


def test_map_groups_calls_fn_once_per_group(inline):
    blocks = _blocks(1000, 4)

    def summarize(df: pd.DataFrame) -> pd.DataFrame:
        key = df["k"].iloc[0]
        key = "<null>" if pd.isna(key) else key  # the null-key group is a group too
        return pd.DataFrame({"k": [key], "n": [len(df)], "ids": [int(df["id"].sum())]})

    spec = MapGroupsSpec(["k"], summarize, "pandas", (), {}, "map_groups(summarize)")
    got = _concat(run(inline, spec, blocks)).to_pandas().sort_values("k")
    exp = _concat(blocks).to_pandas().fillna({"k": "<null>"}).groupby("k")
    assert got["n"].tolist() == exp.size().tolist()
    assert got["ids"].tolist() == exp["id"].sum().tolist()


def test_map_groups_error_names_the_function(inline):
    def boom(batch):
        raise ValueError("bad group")

    spec = MapGroupsSpec(["k"], boom, "numpy", (), {}, "map_groups(boom)")
    with pytest.raises(UserCodeError, match="map_groups\\(boom\\).*bad group"):
        run(inline, spec, _blocks(100, 2))


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
def test_join_matches_pandas_merge(inline, how):
    rng = np.random.default_rng(1)
    left = pa.table({"key": rng.integers(0, 50, 400), "a": np.arange(400)})
    right = pa.table({"key2": rng.integers(25, 75, 300).astype(np.int32), "b": np.arange(300)})
    spec = JoinSpec(["key"], ["key2"], how, "_right")
    out = run(
        inline,
        spec,
        [left.slice(0, 200), left.slice(200)],
        right=[right.slice(0, 100), right.slice(100)],
    )
    got = _concat(out).to_pandas()
    exp = left.to_pandas().merge(right.to_pandas(), left_on="key", right_on="key2", how=how)
    cols = ["a", "b"]
    norm = lambda df: sorted(map(tuple, df[cols].astype("Float64").fillna(-1).to_numpy().tolist()))  # noqa: E731
    assert len(got) == len(exp)
    assert norm(got) == norm(exp)


def test_repartition_keeps_order_in_equal_blocks(inline):
    blocks = _blocks(1000, 7)
    out = run(inline, RepartitionSpec(3), blocks, num_partitions=3)
    assert [t.num_rows for t in out] == [333, 333, 334]
    assert _concat(out).column("id").to_pylist() == list(range(1000))


@pytest.mark.parametrize("n", [1, 3, 7, 50, 1200])
def test_streaming_repartition_cuts_the_same_blocks_and_frees_every_input(inline, n):
    """With the row count known, blocks are cut as rows arrive: the same output
    as the barrier (empty input blocks and more outputs than rows included),
    and nothing left in the store."""
    blocks = _blocks(1000, 9)
    blocks = [blocks[0], blocks[0].slice(0, 0), *blocks[1:], blocks[1].slice(0, 0)]
    before = inline.store_stats().num_objects  # the module's backend, shared
    want = run(inline, RepartitionSpec(n), blocks, num_partitions=n)
    got = run(inline, RepartitionSpec(n), blocks, num_partitions=n, total_rows=1000)
    assert [t.num_rows for t in got] == [t.num_rows for t in want]
    assert _concat(got).equals(_concat(want))
    assert _concat(got).column("id").to_pylist() == list(range(1000))
    assert inline.store_stats().num_objects == before


def test_streaming_repartition_plans_each_block_once_its_rows_are_in(inline):
    """Output block i is planned as soon as row (i + 1) * 25 has arrived, before
    the rest of the input; closing early frees what it held."""
    before = inline.store_stats().num_objects
    op = ExchangeOperator(
        "repartition(4)", [], RepartitionSpec(4), num_partitions=4, total_rows=100
    )
    op.start(ExecEnv(inline, DataContext()))
    planned = []
    for i in range(4):  # rows 0-29, 30-59, 60-89, 90-99 against cuts at 25, 50, 75, 100
        table = pa.table({"id": np.arange(30 * i, min(30 * i + 30, 100))})
        op._add_input(RefBundle(refs=(inline.put(table),), schema=table.schema, seq=(i,)), 0)
        planned.append([t.label for t in op._reduces])
    assert planned == [
        ["output block 0"],
        ["output block 0", "output block 1"],
        ["output block 0", "output block 1", "output block 2"],
        ["output block 0", "output block 1", "output block 2", "output block 3"],
    ]
    op.shutdown()
    assert inline.store_stats().num_objects == before


def test_streaming_repartition_closed_mid_block_frees_it_once(inline):
    """Closed while output 0 reads the first block and output 1 still needs
    its rest: the block is held and being read, and is freed exactly once."""
    before = inline.store_stats().num_objects
    op = ExchangeOperator("repartition(2)", [], RepartitionSpec(2), num_partitions=2, total_rows=20)
    op.start(ExecEnv(inline, DataContext()))
    table = pa.table({"id": np.arange(15)})
    ref = inline.put(table)
    op._add_input(RefBundle(refs=(ref,), schema=table.schema, seq=(0,)), 0)
    assert [t.label for t in op._reduces] == ["output block 0"]
    freed = []
    real_free = inline.free
    inline.free = lambda refs: (freed.extend(r.id for r in refs), real_free(refs))
    try:
        op.shutdown()
    finally:
        del inline.free
    assert freed.count(ref.id) == 1
    assert inline.store_stats().num_objects == before
    assert op.metrics.queued_bytes == 0  # freed, so no longer counted by the budget


def test_streaming_repartition_counts_only_the_input_it_holds(inline):
    """The memory budget sees the input blocks a streaming repartition holds
    (rows not all planned yet, or a reduce still reading them), not every block
    it was ever given: a count that only grew stopped the pipeline's other tasks
    once the input passed the store budget."""
    op = ExchangeOperator(  # an input that has not ended: reduces run while rows arrive
        "repartition(4)", [InputBuffer("in")], RepartitionSpec(4), num_partitions=4, total_rows=100
    )
    op.start(ExecEnv(inline, DataContext()))
    counted = []
    for i in range(4):  # rows 0-29, 30-59, 60-89, 90-99 against cuts at 25, 50, 75, 100
        table = pa.table({"id": np.arange(30 * i, min(30 * i + 30, 100))})
        op._add_input(RefBundle(refs=(inline.put(table),), schema=table.schema, seq=(i,)), 0)
        counted.append(op.metrics.queued_bytes)
        while op._reduces:
            op.on_task_done(op.dispatch())
        counted.append(op.metrics.queued_bytes)
    # Each 30-row block is 240 bytes: block i is held until output i + 1 has read its rest.
    assert counted == [240, 240, 480, 240, 480, 240, 320, 0]
    out = [op._get_next() for _ in range(4)]
    assert [b.num_rows for b in out] == [25, 25, 25, 25]
    inline.free([r for b in out for r in b.refs])
    op.shutdown()


def test_streaming_repartition_refuses_input_out_of_order(inline):
    op = ExchangeOperator("repartition(2)", [], RepartitionSpec(2), num_partitions=2, total_rows=20)
    op.start(ExecEnv(inline, DataContext()))
    table = pa.table({"id": np.arange(10)})
    op._add_input(RefBundle(refs=(inline.put(table),), schema=table.schema, seq=(1,)), 0)
    with pytest.raises(RuntimeError, match="arrived after .* needs its input in order"):
        op._add_input(RefBundle(refs=(inline.put(table),), schema=table.schema, seq=(0,)), 0)
    op.shutdown()
