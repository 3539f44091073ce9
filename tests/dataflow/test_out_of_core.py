"""The out-of-core workloads of issue 17 (``benchmarks/workloads/ooc_*``) scaled
down: 2M rows (about 50 MiB in memory) through a 12 MiB object store, so every
all-to-all step spills, under a memory_limit; each written result is exact."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import dataflow as df
from dataflow.context import DataContext

pytestmark = pytest.mark.slow

ROWS = 2_000_000
FILES = 16
KEYS = ROWS // 16  # as the benchmarks: rows / 16 group keys and dimension rows
STORE = 12 << 20
BLOCK = 1 << 20
MEMORY_LIMIT = 3 << 30


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """``id`` (dense), ``a`` (normal floats), ``s`` (short strings) in 16 Parquet
    files, and the dimension table ``k`` (every key once, shuffled), ``v``."""
    root = tmp_path_factory.mktemp("ooc")
    rng = np.random.default_rng(0)
    ids = np.arange(ROWS)
    a = rng.standard_normal(ROWS)
    s = rng.integers(0, 10**6, ROWS)
    table = pa.table({"id": ids, "a": a, "s": pc.cast(pa.array(s), pa.string())})
    (root / "facts").mkdir()
    per = ROWS // FILES
    for i in range(FILES):
        pq.write_table(table.slice(i * per, per), root / "facts" / f"part-{i:02d}.parquet")
    dim_k = rng.permutation(KEYS)
    dim_v = rng.integers(0, 10**6, KEYS)
    pq.write_table(pa.table({"k": dim_k, "v": dim_v}), root / "dim.parquet")
    v_by_k = np.empty(KEYS, dtype=np.int64)
    v_by_k[dim_k] = dim_v
    return {"root": root, "a": a, "s": s, "v_by_k": v_by_k}


@pytest.fixture
def small_store(data):
    ctx = DataContext.get_current()
    saved = (ctx.target_max_block_size, ctx.memory_limit, ctx.enable_progress_bars)
    ctx.target_max_block_size, ctx.memory_limit, ctx.enable_progress_bars = (
        BLOCK,
        MEMORY_LIMIT,
        False,
    )
    backend = df.init("local", num_cpus=2, object_store_memory=STORE)
    yield backend
    df.shutdown()
    ctx.target_max_block_size, ctx.memory_limit, ctx.enable_progress_bars = saved


def _facts(data: dict) -> df.Dataset:
    return df.read_parquet(str(data["root"] / "facts"))


def _write(ds: df.Dataset, out, spills: bool = True) -> pa.Table:
    """Write ``ds``, check that it spilled (``spills``; else that it streamed
    through with less than the store spilled) and freed everything, and read
    the files back in name order (dataflow names them in dataset order)."""
    ds.write_parquet(str(out))
    stats = ds._last_stream.stats()
    if spills:
        assert stats.store_spilled_bytes > STORE and stats.store_restored_bytes > 0
    else:
        assert stats.store_spilled_bytes < STORE
    assert stats.spill_dir and not [n for n in os.listdir(stats.spill_dir) if n != "owner.pid"]
    files = sorted(p for p in os.listdir(out) if p.endswith(".parquet"))
    return pa.concat_tables(pq.read_table(out / f) for f in files)


def _assert_every_row_once(out: pa.Table, data: dict) -> np.ndarray:
    """Every input row exactly once, with its own ``a`` and ``s``; returns the ids."""
    ids = out["id"].to_numpy()
    assert len(ids) == ROWS
    np.testing.assert_array_equal(np.sort(ids), np.arange(ROWS))
    np.testing.assert_array_equal(out["a"].to_numpy(), data["a"][ids])
    np.testing.assert_array_equal(pc.cast(out["s"], pa.int64()).to_numpy(), data["s"][ids])
    return ids


def test_sort_writes_one_sorted_sequence(data, small_store, tmp_path):
    out = _write(_facts(data).sort("a"), tmp_path / "out")
    _assert_every_row_once(out, data)
    np.testing.assert_array_equal(out["a"].to_numpy(), np.sort(data["a"]))


def test_groupby_with_rows_over_16_keys(data, small_store, tmp_path):
    ds = _facts(data).select_columns(["id", "a"]).with_column("k", df.col("id") % KEYS)
    out = _write(ds.groupby("k").sum("a"), tmp_path / "out")
    k = out["k"].to_numpy()
    np.testing.assert_array_equal(np.sort(k), np.arange(KEYS))  # every key once
    want = np.bincount(np.arange(ROWS) % KEYS, weights=data["a"], minlength=KEYS)
    np.testing.assert_allclose(out["sum(a)"].to_numpy(), want[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("strategy", ["hash", "broadcast"])
def test_join_with_a_dimension_table(data, small_store, tmp_path, monkeypatch, strategy):
    # The 2 MiB dimension table is under a quarter of the store: broadcast by
    # default, the left side streaming in order; the hash join partitions (and
    # spills) both sides.
    if strategy == "hash":
        monkeypatch.setattr(df.DataContext.get_current(), "broadcast_join_max_bytes", 0)
    facts = _facts(data).with_column("k", df.col("id") % KEYS)
    dim = df.read_parquet(str(data["root"] / "dim.parquet"))
    joined = facts.join(dim, "inner", on=("k",))
    out = _write(joined, tmp_path / "out", spills=strategy == "hash")
    ids = _assert_every_row_once(out, data)
    np.testing.assert_array_equal(out["k"].to_numpy(), ids % KEYS)
    np.testing.assert_array_equal(out["v"].to_numpy(), data["v_by_k"][ids % KEYS])
    if strategy == "broadcast":
        np.testing.assert_array_equal(ids, np.arange(ROWS))  # left order
        ops = joined._last_stream.stats().operators
        assert any(o.name.startswith("broadcast_join(") for o in ops)


def test_random_shuffle(data, small_store, tmp_path):
    out = _write(_facts(data).random_shuffle(seed=0), tmp_path / "out")
    ids = _assert_every_row_once(out, data)
    ascending = float((np.diff(ids) > 0).mean())
    assert 0.49 < ascending < 0.51  # a random order, not the input's


def test_repartition_64_keeps_the_order_in_64_files(data, small_store, tmp_path):
    # The row count is in the footers and the blocks come in order: each
    # output block is cut as its rows arrive, with no barrier to spill.
    out = _write(_facts(data).repartition(64), tmp_path / "out", spills=False)
    np.testing.assert_array_equal(_assert_every_row_once(out, data), np.arange(ROWS))
    files = pads.dataset(str(tmp_path / "out"), format="parquet").files
    assert len(files) == 64
    assert {pq.ParquetFile(f).metadata.num_rows for f in files} == {ROWS // 64}
