"""overhead: range(2_000_000, 2,000 blocks) → map_batches(identity) → count(): blocks/s.

``--param overhead_rows=N --param overhead_blocks=K`` shrink it (the tests do).
"""

from __future__ import annotations

from benchmarks.workloads import Result, RunContext, Workload, checksum
from benchmarks.workloads._common import daft_identity_count, identity

ROWS = 2_000_000
BLOCKS = 2_000


def _size(ctx: RunContext) -> tuple[int, int]:
    return ctx.param("overhead_rows", ROWS), ctx.param("overhead_blocks", BLOCKS)


def _result(rows: int, blocks: int) -> Result:
    return Result(rows=rows, checksum=checksum(rows=rows), units=blocks)


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    rows, blocks = _size(ctx)
    ds = df.range(rows, override_num_blocks=blocks)
    return _result(ds.map_batches(identity, batch_format="pyarrow").count(), blocks)


def _daft(ctx: RunContext) -> Result:
    import daft

    rows, blocks = _size(ctx)
    return _result(daft_identity_count(daft.range(rows, partitions=blocks), "id"), blocks)


def _ray(ctx: RunContext) -> Result:
    import ray.data

    rows, blocks = _size(ctx)
    ds = ray.data.range(rows, override_num_blocks=blocks)
    return _result(ds.map_batches(identity, batch_format="pyarrow").count(), blocks)


def _block_rows(rows: int, blocks: int, i: int) -> int:
    import numpy as np
    import pyarrow as pa

    start, stop = rows * i // blocks, rows * (i + 1) // blocks
    return identity(pa.table({"id": np.arange(start, stop)})).num_rows


def _pyarrow(ctx: RunContext) -> Result:
    rows, blocks = _size(ctx)
    return _result(sum(_block_rows(rows, blocks, i) for i in range(blocks)), blocks)


def _pyarrow_mp(ctx: RunContext) -> Result:
    rows, blocks = _size(ctx)
    tasks = [(rows, blocks, i) for i in range(blocks)]
    return _result(sum(ctx.handle.starmap(_block_rows, tasks)), blocks)


WORKLOAD = Workload(
    name="overhead",
    description="range(2M, override_num_blocks=2000).map_batches(identity).count(): per-block cost",
    dataset="none",
    runs={
        "dataflow": _dataflow,
        "daft": _daft,
        "ray": _ray,
        "pyarrow": _pyarrow,
        "pyarrow-mp": _pyarrow_mp,
    },
    unit="blocks",
)
