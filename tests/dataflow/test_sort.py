"""Dataset.sort / random_shuffle / repartition / randomize_block_order against pandas,
on the inline and local backends."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import dataflow as df


def _table(n: int = 2000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(n),
            "s": pa.array(
                list(np.array(["x", "y", "zz", ""])[rng.integers(0, 4, n)]),
                mask=rng.random(n) < 0.1,
            ),
            "a": pa.array(rng.integers(0, 20, n), mask=rng.random(n) < 0.1),
            "f": rng.normal(size=n),
        }
    )


@pytest.mark.parametrize(
    "keys,descending", [("f", False), ("a", True), (["s", "a", "f"], [False, True, False])]
)
def test_sort_matches_pandas(backend, make_ds, keys, descending):
    t = _table()
    got = make_ds(t, num_blocks=4).sort(keys, descending=descending).to_pandas()
    cols = [keys] if isinstance(keys, str) else keys
    asc = (
        [not descending] * len(cols)
        if isinstance(descending, bool)
        else [not d for d in descending]
    )
    exp = t.to_pandas().sort_values(cols, ascending=asc, na_position="last", kind="stable")
    pd.testing.assert_frame_equal(
        got[cols].reset_index(drop=True), exp[cols].reset_index(drop=True)
    )
    assert sorted(got["id"]) == list(range(t.num_rows))


def test_sort_then_take_and_empty_dataset(backend):
    ds = df.from_arrow([pa.table({"a": np.arange(1000)[::-1].copy()})])
    assert ds.sort("a").take(3) == [{"a": 0}, {"a": 1}, {"a": 2}]
    empty = df.from_arrow([pa.table({"a": pa.array([], pa.int64())})])
    assert empty.sort("a").take_all() == []


def test_random_shuffle_is_deterministic_permutation(backend, make_ds):
    t = _table(3000)
    ds = make_ds(t, num_blocks=5)
    a = ds.random_shuffle(seed=11).to_pandas()["id"].tolist()
    b = ds.random_shuffle(seed=11).to_pandas()["id"].tolist()
    c = ds.random_shuffle(seed=12).to_pandas()["id"].tolist()
    assert sorted(a) == list(range(3000))
    assert a == b and a != c and a != list(range(3000))
    # Not a block-order shuffle: neighbours are scattered.
    assert np.mean(np.abs(np.diff(a)) == 1) < 0.05


def test_random_shuffle_same_on_inline_and_local():
    t = _table(1500)
    orders = []
    for name in ("inline", "local"):
        df.init(name, num_cpus=2)
        try:
            ds = df.from_arrow([t.slice(i, 300) for i in range(0, 1500, 300)])
            orders.append(ds.random_shuffle(seed=5).to_pandas()["id"].tolist())
        finally:
            df.shutdown()
    assert orders[0] == orders[1]


def test_repartition_and_block_order(backend):
    ds = df.from_arrow([pa.table({"id": np.arange(i, i + 100)}) for i in range(0, 1000, 100)])
    blocks = list(ds.repartition(3).iterator().iter_blocks())
    assert [b.num_rows for b in blocks] == [333, 333, 334]
    assert pa.concat_tables(blocks).column("id").to_pylist() == list(range(1000))
    shuffled = ds.repartition(4, shuffle=True).to_pandas()["id"]
    assert sorted(shuffled) == list(range(1000))
    first = [
        b.column("id")[0].as_py() for b in ds.randomize_block_order(seed=2).iterator().iter_blocks()
    ]
    again = [
        b.column("id")[0].as_py() for b in ds.randomize_block_order(seed=2).iterator().iter_blocks()
    ]
    assert first == again and sorted(first) == list(range(0, 1000, 100)) and first != sorted(first)


def test_bad_arguments_are_named():
    ds = df.from_arrow([pa.table({"a": [1, 2]})])
    with pytest.raises(df.PlanError, match="sort: unknown column 'b'"):
        ds.sort("b")
    with pytest.raises(ValueError, match="sort: descending must be a bool or one bool per key"):
        ds.sort(["a"], descending=[True, False])
    with pytest.raises(ValueError, match="repartition: num_blocks must be an int >= 1"):
        ds.repartition(0)
    with pytest.raises(ValueError, match="random_shuffle: seed must be None or an int"):
        ds.random_shuffle(seed=-1)


@pytest.mark.parametrize("keys,descending", [("f", True), (["a", "s"], [False, True])])
def test_sort_then_take_runs_as_top_k_with_the_full_sort_result(backend, make_ds, keys, descending):
    from dataflow.plan.optimizer import OptimizerFlags

    t = _table()
    ds = make_ds(t, num_blocks=4).sort(keys, descending=descending)
    assert ds.limit(25)._optimized().input.name.endswith("top 25)")
    top = ds.take(25)
    ctx = df.DataContext.get_current()
    old, ctx.optimizer_flags = ctx.optimizer_flags, OptimizerFlags.none()
    try:
        assert top == ds.take(25)  # unoptimized: a full sort, then the limit
    finally:
        ctx.optimizer_flags = old
    assert top == ds.take_all()[:25]
