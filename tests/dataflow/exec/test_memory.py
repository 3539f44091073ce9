"""Bounded memory: a pipeline much larger than the store budget with a slow consumer."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pytest

import dataflow as df
from dataflow.context import DataContext
from dataflow.plan.logical import MapBatches, Read
from dataflow.plan.planner import execute
from dataflow.session import get_backend
from dataflow.sources.datasource import BlockMetadata, Datasource, ReadTask

MiB = 1024 * 1024
BLOCK_ROWS = MiB  # int64: 8 MiB blocks


class Big(Datasource):
    def __init__(self, n_tasks):
        self.n_tasks = n_tasks

    def get_read_tasks(self, parallelism, **pushdown):
        return [
            ReadTask(
                lambda i=i: [pa.table({"x": np.full(BLOCK_ROWS, i, dtype=np.int64)})],
                BlockMetadata(num_rows=BLOCK_ROWS, size_bytes=8 * BLOCK_ROWS),
            )
            for i in range(self.n_tasks)
        ]


def plus_one(b):
    return {"x": b["x"] + 1}


def test_gigabyte_through_a_64_mib_budget_with_a_slow_consumer():
    df.init("local", num_cpus=2)
    try:
        ctx = DataContext().replace(enable_progress_bars=False, object_store_memory=64 * MiB)
        plan = MapBatches(fn=plus_one, batch_size=None, inputs=(Read(Big(128)),))
        total = 0
        checksum = 0
        with execute(plan, ctx) as stream:
            for table in stream.iter_blocks():
                total += table.nbytes
                checksum += int(table.column("x")[0].as_py())
                time.sleep(0.02)  # a consumer slower than the pipeline
        assert total == 128 * 8 * MiB
        assert checksum == sum(range(1, 129))
        peak = get_backend().store_stats().peak_bytes
        running_at_most = 2 * 2 * 2  # two operators x two CPUs x queue depth 2
        block = 8 * MiB + 64 * 1024  # Arrow IPC framing on top of the buffer
        assert peak <= 64 * MiB + running_at_most * block, peak / MiB
        assert get_backend().store_stats().num_objects == 0
    finally:
        df.shutdown()


# -- memory_limit: a leaking UDF stops with MemoryLimitError, not an OOM kill ---------

LEAKED: list = []
"""What ``leak`` keeps: per worker process, or in this process on driver threads."""
LEAK_BYTES = 24 * MiB


def leak(batch: dict) -> dict:
    LEAKED.append(np.ones(LEAK_BYTES // 8))  # pages written: resident
    return batch


def _tree_rss(backend) -> int:
    import psutil

    return psutil.Process().memory_info().rss + backend.worker_rss_bytes()


@pytest.mark.parametrize("placement", ["processes", "threads"])
def test_a_leaking_udf_stops_with_an_error_naming_it(placement):
    """memory_limit = what the tree holds now + 256 MiB; the UDF keeps 24 MiB a
    batch, 4.8 GiB over its 200 batches: the run stops with MemoryLimitError
    naming map_batches(leak) well before that (no OOM kill, no hang), and the
    workers that ran it are ended with it."""
    backend = df.init("local", num_cpus=2, prestart_workers=True)
    try:
        base = _tree_rss(backend)
        limit = base + 256 * MiB
        ctx = DataContext.get_current()
        saved = (ctx.memory_limit, ctx.task_placement, ctx.enable_progress_bars)
        ctx.memory_limit, ctx.task_placement, ctx.enable_progress_bars = limit, placement, False
        try:
            ds = df.range(200 * 1000, override_num_blocks=200).map_batches(leak, batch_size=None)
            with pytest.raises(
                df.MemoryLimitError, match=r"while read_range->map_batches\(leak\) "
            ) as info:
                ds.materialize()
        finally:
            ctx.memory_limit, ctx.task_placement, ctx.enable_progress_bars = saved
        err = info.value
        assert err.operator == "read_range->map_batches(leak)"
        assert "over DataContext.memory_limit" in str(err) and "raise memory_limit" in str(err)
        where = "the driver" if placement == "threads" else "worker process"
        assert where in str(err)
        # Stopped near the limit: past 1.5x it stops at the next sample (0.25 s).
        assert limit < err.rss_bytes < 2 * limit, (err.rss_bytes - base) / MiB
        assert backend.store_stats().num_objects == 0
    finally:
        LEAKED.clear()
        df.shutdown()


def test_memory_guard_waits_for_the_grace_and_blames_the_biggest_task():
    from dataflow.errors import MemoryLimitError
    from dataflow.exec.memory_guard import GRACE_S, MemoryGuard

    class Op:
        def __init__(self, name, futures):
            self.name, self.futures = name, futures

        def active_tasks(self):
            return self.futures

    class Backend:
        def task_pid(self, fut):
            return fut

        def worker_pids(self):
            return []

    small, big = Op("map(small)", [os.getpid()]), Op("map(big)", [])
    guard = MemoryGuard(1000, Backend())
    guard.check(0.0, 1001, [small, big])  # over: the grace starts
    guard.check(GRACE_S - 0.1, 1400, [small, big])
    guard.check(GRACE_S, 900, [small, big])  # back under: the grace resets
    guard.check(GRACE_S + 1, 1001, [])
    guard.check(2 * GRACE_S + 1.5, 1001, [])  # nothing ran or launched: backpressure waits
    guard.on_task_start(big, None, 0.0)
    with pytest.raises(MemoryLimitError, match=r"while map\(big\) launched tasks") as info:
        guard.check(2 * GRACE_S + 2, 1001, [])
    assert info.value.operator == "map(big)"
    with pytest.raises(MemoryLimitError, match=r"for 0.0 s while map\(small\) ran"):
        MemoryGuard(1000, Backend()).check(0.0, 1501, [small])  # past 1.5x: at once
