"""Order by default: rows leave in dataset order on every backend; the reorder
window is bounded; splits are exact even with ``preserve_order=False``;
``count()`` runs user code."""

from __future__ import annotations

import gc
import time

import numpy as np
import pyarrow as pa
import pytest

import dataflow as df
from dataflow import session
from dataflow.context import DataContext
from dataflow.errors import UserCodeError


@pytest.fixture
def unordered():
    """The context with ``preserve_order=False`` for one test."""
    ctx = DataContext.get_current()
    old, ctx.preserve_order = ctx.preserve_order, False
    yield ctx
    ctx.preserve_order = old


def _slow_first_block(batch: dict) -> dict:
    # The first block straggles, so completion order differs from dataset order.
    if batch["id"][0] == 0:
        time.sleep(0.3)
    return batch


def _ids(rows: list[dict]) -> list[int]:
    return [int(r["id"]) for r in rows]


def test_rows_leave_in_dataset_order_by_default(backend):
    assert DataContext.get_current().preserve_order is True
    ds = df.range(400, override_num_blocks=8).map_batches(_slow_first_block)
    assert _ids(ds.take_all()) == list(range(400))
    assert _ids(ds.limit(120).take_all()) == list(range(120))
    batch = df.range_tensor(6, shape=(2, 3), override_num_blocks=3).take_batch(6)
    assert batch["data"][:, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    both = (
        df.range(50, override_num_blocks=2)
        .map_batches(_slow_first_block)
        .union(df.range(30, override_num_blocks=3).map(lambda r: {"id": r["id"] + 50}))
    )
    assert _ids(both.take_all()) == list(range(80))


def test_splits_are_exact_even_in_completion_order(backend, unordered):
    ds = df.range(100, override_num_blocks=4).map_batches(_slow_first_block)
    train, test = ds.train_test_split(test_size=0.25)
    assert _ids(train.take_all()) == list(range(75))
    assert _ids(test.take_all()) == list(range(75, 100))
    parts = ds.split(3)
    assert [_ids(p.take_all()) for p in parts] == [
        list(range(33)),
        list(range(33, 66)),
        list(range(66, 100)),
    ]
    props = ds.split_proportionately([0.1, 0.25])
    assert [_ids(p.take_all()) for p in props] == [
        list(range(10)),
        list(range(10, 35)),
        list(range(35, 100)),
    ]


def test_split_proportionately_keeps_every_split_non_empty(backend):
    # int(20 * 0.1) == int(20 * 0.11) == 2: the first cut moves down to 1.
    parts = df.range(20).split_proportionately([0.1, 0.01])
    assert [_ids(p.take_all()) for p in parts] == [[0], [1], list(range(2, 20))]
    with pytest.raises(ValueError, match="3 rows cannot make 4 non-empty splits"):
        df.range(3).split_proportionately([0.2, 0.2, 0.2])
    with pytest.raises(ValueError, match="sum to less than 1"):
        df.range(10).split_proportionately([0.5, 0.5])
    with pytest.raises(ValueError, match="numbers > 0"):
        df.range(10).split_proportionately([0.5, 0])
    with pytest.raises(ValueError, match="non-empty list"):
        df.range(10).split_proportionately([])


def _explode(row: dict) -> dict:
    raise ValueError(f"bad row {row['id']}")


def test_count_runs_user_code(backend):
    with pytest.raises(UserCodeError, match="bad row"):
        df.range(10).map(_explode).count()
    with pytest.raises(UserCodeError, match="bad row"):
        df.range(10).flat_map(lambda r: [_explode(r)]).count()
    # A UDF-free plan is answered from metadata, without running anything.
    assert df.range(10**12).select_columns(["id"]).limit(7).count() == 7
    assert df.range(10).map(lambda r: {"id": r["id"] + 1}).count() == 10


def _stamp(batch: dict) -> dict:
    start = time.monotonic()
    if batch["id"][0] == 0:
        time.sleep(1.5)
    return {"id": batch["id"][:1], "start": np.array([start]), "end": np.array([time.monotonic()])}


@pytest.mark.parametrize("window", [1, 1 << 30])
def test_a_straggler_backpressures_instead_of_growing_the_window(window):
    session.init("local", num_cpus=2)
    ctx = DataContext.get_current()
    old = ctx.reorder_window_bytes
    ctx.reorder_window_bytes = window
    try:
        rows = df.range(40 * 100, override_num_blocks=40).map_batches(_stamp).take_all()
    finally:
        ctx.reorder_window_bytes = old
        session.shutdown()
    assert _ids(rows) == list(range(0, 4000, 100))  # in order either way
    straggler_end = rows[0]["end"]
    started_meanwhile = sum(r["start"] < straggler_end for r in rows[1:])
    if window == 1:
        # Only the tasks already queued in the two workers (two deep) and one more
        # per worker before the first held output stops launches.
        assert started_meanwhile <= 6
    else:
        assert started_meanwhile >= 20  # the others keep both workers busy


def test_preserve_order_false_still_returns_every_row(backend, unordered):
    ds = df.range(400, override_num_blocks=8).map_batches(_slow_first_block)
    assert sorted(_ids(ds.take_all())) == list(range(400))


def test_order_survives_materialize_and_iter_batches(backend):
    table = pa.table({"id": np.arange(1000), "x": np.arange(1000) % 7})
    ds = df.from_arrow([table.slice(i, 100) for i in range(0, 1000, 100)])
    mat = ds.map_batches(_slow_first_block).materialize()
    got = [int(v) for b in mat.iter_batches(batch_size=64) for v in b["id"]]
    assert got == list(range(1000))


def test_a_split_of_a_split_keeps_the_blocks_it_passes_through(backend):
    # limit(3) passes the first split's block through unchanged: the second
    # split must keep the first (which owns it) alive after it is dropped.
    ds = df.from_arrow([pa.table({"x": [1, 2, 3]})]).split(1)[0].limit(3).split(1)[0]
    gc.collect()
    assert ds.take_all() == [{"x": 1}, {"x": 2}, {"x": 3}]
    assert df.from_arrow([pa.table({"x": [1, 2, 3]})]).split(1)[0].limit(1).split(1)[
        0
    ].take_all() == [{"x": 1}]
