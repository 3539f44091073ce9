"""sort and random_shuffle over a dataset 4x the object store: they finish by
spilling, with exact results and shared memory within the budget plus slack."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import dataflow as df
from dataflow.context import DataContext

STORE = 8 << 20
BLOCK = 1 << 20


@pytest.fixture
def small_store():
    backend = df.init("local", num_cpus=2, object_store_memory=STORE)
    ctx = DataContext.get_current()
    old = ctx.target_max_block_size
    ctx.target_max_block_size = BLOCK
    yield backend
    ctx.target_max_block_size = old
    df.shutdown()


def _big() -> tuple[pa.Table, df.Dataset]:
    n = (4 * STORE) // 16  # two int64 columns: 4x the store
    rng = np.random.default_rng(0)
    t = pa.table({"id": np.arange(n), "key": rng.integers(0, 1 << 40, n)})
    return t, df.from_arrow([t.slice(i, n // 32) for i in range(0, n, n // 32)])


def test_sort_spills_and_is_exact(small_store):
    t, ds = _big()
    keys = np.concatenate(
        [b.column("key").to_numpy() for b in ds.sort("key").iterator().iter_blocks()]
    )
    np.testing.assert_array_equal(keys, np.sort(t.column("key").to_numpy()))
    stats = small_store.store_stats()
    assert stats.spilled_bytes > 0
    assert stats.peak_bytes <= STORE + 4 * BLOCK


def test_random_shuffle_spills_and_is_a_permutation(small_store):
    t, ds = _big()
    ids = np.concatenate(
        [b.column("id").to_numpy() for b in ds.random_shuffle(seed=1).iterator().iter_blocks()]
    )
    assert len(ids) == t.num_rows
    np.testing.assert_array_equal(np.sort(ids), np.arange(t.num_rows))
    assert small_store.store_stats().spilled_bytes > 0
    assert small_store.store_stats().peak_bytes <= STORE + 4 * BLOCK
    assert small_store.store_stats().used_bytes == 0  # everything freed


def test_repartition_of_a_read_streams_without_spilling(small_store, tmp_path):
    """The input's row count is known from the Parquet footers and its blocks
    arrive in order: each output block is cut as its rows arrive, so 4x the
    store passes through spilling little or nothing (the same plan with
    preserve_order off waits for the whole input and spills 27 MiB of 32)."""
    import pyarrow.parquet as pq

    t, _ = _big()
    step = t.num_rows // 32
    for i in range(32):
        pq.write_table(t.slice(i * step, step), tmp_path / f"part-{i:02d}.parquet")
    blocks = list(df.read_parquet(str(tmp_path)).repartition(32).iterator().iter_blocks())
    assert pa.concat_tables(blocks).equals(t.slice(0, 32 * step))
    stats = small_store.store_stats()
    assert stats.spilled_bytes <= STORE // 2  # 0 in the runs here
    assert stats.peak_bytes <= STORE
    assert stats.used_bytes == 0  # every input block freed once its last reader was done
