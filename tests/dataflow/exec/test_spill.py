"""Spill as the user sees it: ``DataContext.spill_path`` decides where blocks
that do not fit go, ``stats()`` reports this run's bytes spilled and restored,
the disk bandwidth and the directory, and a full spill disk stops the pipeline
with ``SpillError`` naming the directory, leaving no file behind."""

from __future__ import annotations

import errno
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataflow as df
import runtime.store as store_module
from dataflow.context import DataContext

STORE = 4 << 20
ROWS = STORE // 4  # two int64 columns: 4x the store


@pytest.fixture
def spill_ctx(tmp_path):
    """A 4 MiB store spilling under ``tmp_path/spill`` (set through the context)."""
    ctx = DataContext.get_current()
    saved = (ctx.spill_path, ctx.target_max_block_size, ctx.enable_progress_bars)
    ctx.spill_path = str(tmp_path / "spill")
    ctx.target_max_block_size = 512 << 10
    ctx.enable_progress_bars = False
    yield ctx
    df.shutdown()
    ctx.spill_path, ctx.target_max_block_size, ctx.enable_progress_bars = saved


def _sorted_keys(parquet_dir: str | None = None) -> df.Dataset:
    """A sort of ``ROWS`` shuffled keys, from memory blocks or from Parquet files
    (then nothing is put before the run: the spill happens in its tasks)."""
    keys = np.random.default_rng(0).permutation(ROWS)
    t = pa.table({"id": np.arange(ROWS), "key": keys})
    parts = [t.slice(i, ROWS // 16) for i in range(0, ROWS, ROWS // 16)]
    if parquet_dir is None:
        return df.from_arrow(parts).sort("key")
    os.makedirs(parquet_dir)
    for i, part in enumerate(parts):
        pq.write_table(part, f"{parquet_dir}/part-{i:02d}.parquet")
    return df.read_parquet(parquet_dir).sort("key")


def test_stats_report_this_runs_spill_and_its_directory(spill_ctx):
    backend = df.init("local", num_cpus=2, object_store_memory=STORE)
    spill_dir = backend.store_stats().spill_dir
    assert os.path.dirname(spill_dir) == spill_ctx.spill_path
    ds = _sorted_keys()
    runs = []
    for _ in range(2):
        keys = np.concatenate([b["key"] for b in ds.iter_batches(batch_size=None)])
        np.testing.assert_array_equal(keys, np.arange(ROWS))
        runs.append((ds._last_stream.stats(), backend.store_stats()))
    (first, after_first), (second, after_second) = runs
    for stats in (first, second):
        assert stats.store_spilled_bytes > 0 and stats.store_restored_bytes > 0
        assert stats.spill_write_s > 0 and stats.spill_dir == spill_dir
        assert stats.spill_write_bytes_per_s > 0 and stats.spill_bytes_per_s > 0
    # Per run, not the session's running total.
    assert second.store_spilled_bytes == after_second.spilled_bytes - after_first.spilled_bytes
    assert second.store_restored_bytes == after_second.restored_bytes - after_first.restored_bytes
    text = ds.stats()
    assert f"restored {second.store_restored_bytes / (1 << 20):.1f} MiB" in text
    assert f"in {spill_dir}" in text
    assert backend.store_stats().used_bytes == 0
    df.shutdown()
    assert not os.path.exists(spill_dir)


def test_init_spill_dir_overrides_the_context(spill_ctx, tmp_path):
    backend = df.init("local", num_cpus=1, spill_dir=str(tmp_path / "other"))
    assert os.path.dirname(backend.store_stats().spill_dir) == str(tmp_path / "other")


def _assert_clean_failure(ds: df.Dataset, ctx: DataContext, spill_dir: str) -> None:
    with pytest.raises(df.SpillError, match="spilling a .* MiB block to .* failed") as info:
        ds.materialize()
    assert info.value.directory == spill_dir and spill_dir in str(info.value)
    assert isinstance(info.value, df.DataflowError)
    assert sorted(os.listdir(spill_dir)) == ["owner.pid"]  # no block file, no partial file
    df.shutdown()
    assert os.listdir(ctx.spill_path) == []


@pytest.mark.parametrize("source", ["memory", "parquet"])
def test_a_full_spill_disk_fails_with_spill_error_and_leaves_nothing(
    spill_ctx, monkeypatch, tmp_path, source
):
    """Injected ENOSPC after a few spills: while putting the input blocks
    (memory) or in the sort's tasks (parquet)."""
    ds = _sorted_keys(None if source == "memory" else str(tmp_path / "in"))
    backend = df.init("local", num_cpus=2, object_store_memory=STORE)
    spill_dir = backend.store_stats().spill_dir
    writes = []

    def write_ipc(path: str, table: pa.Table, real=store_module._write_ipc) -> int:
        if path.startswith(spill_dir) and len(writes) >= 3:  # a few spills fit, then full
            with open(path, "wb") as f:
                f.write(b"\0" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        writes.append(path)
        return real(path, table)

    monkeypatch.setattr(store_module, "_write_ipc", write_ipc)
    _assert_clean_failure(ds, spill_ctx, spill_dir)


def test_a_real_full_spill_disk(spill_ctx, tiny_disk, tmp_path):
    ds = _sorted_keys(str(tmp_path / "in"))
    spill_ctx.spill_path = tiny_disk
    backend = df.init("local", num_cpus=2, object_store_memory=STORE)
    _assert_clean_failure(ds, spill_ctx, backend.store_stats().spill_dir)


def fail_on_block_5(batch: pa.Table) -> pa.Table:
    if batch["id"][0].as_py() == 5 * (ROWS // 16):
        raise ValueError("block 5 is bad")
    return batch


def test_blocks_delivered_before_a_failure_are_freed(spill_ctx):
    """materialize() took blocks 0-4 (spilled: 4x the store) before block 5
    failed: they are freed with the run, not kept until shutdown."""
    backend = df.init("local", num_cpus=2, object_store_memory=STORE)
    keys = np.arange(ROWS)
    parts = [pa.table({"id": keys[i : i + ROWS // 16]}) for i in range(0, ROWS, ROWS // 16)]
    ds = df.from_arrow(parts).map_batches(fail_on_block_5, batch_format="pyarrow", batch_size=None)
    with pytest.raises(df.UserCodeError, match="block 5 is bad"):
        ds.materialize()
    stats = backend.store_stats()
    assert stats.spilled_bytes > 0
    assert (stats.num_objects, stats.used_bytes) == (0, 0)
    assert sorted(os.listdir(stats.spill_dir)) == ["owner.pid"]
