"""memory_bound: 4 GiB of tensors through a 256 MiB object store to a slow consumer.

range_tensor(n, shape=(1024,)) (8 KiB a row) → map_batches(data + 1) →
iter_batches(4096) with a consumer that sleeps ``SLOW_S`` per batch, so the
pipeline must stop producing instead of growing memory. What this measures is
the peak /dev/shm and RSS columns: a streaming engine stays near the store size
plus a block per running task, whatever the data size. The store size needs a
runtime restart inside the timed run (dataflow ``init``, Ray ``ray.init``), so
wall times include it. ``--param memory_mib=N`` changes the data size,
``--param store_mib=N`` the store.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from benchmarks.workloads import Result, RunContext, Workload, checksum

ROW_VALUES = 1024  # int64 values a row: 8 KiB
MEMORY_MIB = 4096
STORE_MIB = 256
BLOCK_MIB = 64
BATCH = 4096
SLOW_S = 0.01  # the consumer's time per batch (a training step)


def _rows(ctx: RunContext) -> int:
    return ctx.param("memory_mib", MEMORY_MIB) * 1024 * 1024 // (ROW_VALUES * 8)


def _blocks(ctx: RunContext) -> int:
    return max(1, ctx.param("memory_mib", MEMORY_MIB) // BLOCK_MIB)


def add_one(batch: dict[str, Any]) -> dict[str, Any]:
    """The map every engine runs: a new block as big as its input."""
    return {"data": batch["data"] + 1}


def _consume(batches: Iterable[Any]) -> Result:
    rows = total = 0
    for batch in batches:
        data = batch["data"]
        rows += len(data)
        total += int(data[:, 0].sum())
        time.sleep(SLOW_S)
    return Result(rows=rows, checksum=checksum(rows=rows, sum_first=total))


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    df.init(object_store_memory=ctx.param("store_mib", STORE_MIB) * 1024 * 1024)
    ds = df.range_tensor(_rows(ctx), shape=(ROW_VALUES,), override_num_blocks=_blocks(ctx))
    ds = ds.map_batches(add_one, batch_format="numpy", batch_size=None)
    return _consume(ds.iter_batches(batch_size=BATCH, batch_format="numpy"))


def _ray(ctx: RunContext) -> Result:
    import ray
    import ray.data

    from benchmarks.engines.ray_engine import start, stop

    ray.shutdown()  # the engine's Ray has the default store size
    temp_dir = start(object_store_memory=ctx.param("store_mib", STORE_MIB) * 1024 * 1024)
    try:
        ds = ray.data.range_tensor(
            _rows(ctx), shape=(ROW_VALUES,), override_num_blocks=_blocks(ctx)
        ).map_batches(add_one, batch_format="numpy", batch_size=None)
        return _consume(ds.iter_batches(batch_size=BATCH, batch_format="numpy"))
    finally:
        stop(temp_dir)


def _generated(ctx: RunContext) -> Iterable[dict[str, Any]]:
    """The hand-written stream: one block made, mapped and cut into batches at a time."""
    import numpy as np

    rows = _rows(ctx)
    per_block = -(-rows // _blocks(ctx))
    for start in range(0, rows, per_block):
        ids = np.arange(start, min(rows, start + per_block), dtype=np.int64)
        block = add_one({"data": np.repeat(ids[:, None], ROW_VALUES, axis=1)})["data"]
        for lo in range(0, len(block), BATCH):
            yield {"data": block[lo : lo + BATCH]}


def _pyarrow(ctx: RunContext) -> Result:
    return _consume(_generated(ctx))


WORKLOAD = Workload(
    name="memory_bound",
    description="range_tensor 4 GiB → map_batches(+1) → slow iter_batches, 256 MiB store",
    dataset="none",
    runs={"dataflow": _dataflow, "ray": _ray, "pyarrow": _pyarrow},
)
