"""Bounded memory: a pipeline much larger than the store budget with a slow consumer."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

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
