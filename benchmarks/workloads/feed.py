"""feed: read_parquet(a, b, c) → map_batches(standardize) → iter_torch_batches(4096), consumed."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.workloads import Result, RunContext, Workload, checksum
from benchmarks.workloads._common import torch_batches

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

COLUMNS = ("a", "b", "c")
BATCH = 4096
# The generator's distributions: a, b ~ N(0, 1); c uniform on -5..5 (variance 10).
_MEAN = {"a": 0.0, "b": 0.0, "c": 0.0}
_STD = {"a": 1.0, "b": 1.0, "c": math.sqrt(10.0)}


def standardize(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``(x - mean) / std`` as float32, the model-ready form (Daft runs the same as expressions)."""
    import numpy as np

    return {k: ((v - _MEAN[k]) / _STD[k]).astype(np.float32) for k, v in batch.items()}


def _consume(ctx: RunContext, batches: Iterable[dict]) -> Result:
    rows = 0
    sums = dict.fromkeys(COLUMNS, 0.0)
    for batch in batches:
        ctx.first_batch()
        rows += len(batch["a"])
        for k in COLUMNS:
            sums[k] += float(batch[k].double().sum())
    return Result(
        rows=rows, checksum=checksum(rows=rows, **{f"sum_{k}": v for k, v in sums.items()})
    )


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    ds = df.read_parquet(list(ctx.data.main_files), columns=list(COLUMNS))
    ds = ds.map_batches(standardize, batch_format="numpy")
    # --param feed_loader_workers=N: through torch's DataLoader(to_torch_dataset(...),
    # num_workers=N) instead of iter_torch_batches (issue 13: N > 0 at least as fast as 0).
    workers = ctx.param("feed_loader_workers", -1)
    if workers < 0:
        return _consume(ctx, ds.iter_torch_batches(batch_size=BATCH))
    import torch

    loader = torch.utils.data.DataLoader(
        ds.to_torch_dataset(batch_size=BATCH), batch_size=None, num_workers=workers
    )
    return _consume(ctx, loader)


def _daft(ctx: RunContext) -> Result:
    import daft
    from daft import col

    frame = daft.read_parquet(list(ctx.data.main_files)).select(
        *[((col(k) - _MEAN[k]) / _STD[k]).cast(daft.DataType.float32()).alias(k) for k in COLUMNS]
    )
    return _consume(ctx, torch_batches(frame.to_arrow_iter(), BATCH))


def _ray(ctx: RunContext) -> Result:
    import ray.data

    ds = ray.data.read_parquet(list(ctx.data.main_files), columns=list(COLUMNS))
    ds = ds.map_batches(standardize, batch_format="numpy")
    return _consume(ctx, ds.iter_torch_batches(batch_size=BATCH))


def _read_standardized(path: str) -> pa.Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=list(COLUMNS))
    return pa.table(standardize({k: table[k].to_numpy() for k in COLUMNS}))


def _row_groups(paths: Iterable[str]) -> Iterable[pa.Table]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in paths:
        file = pq.ParquetFile(path)
        for i in range(file.num_row_groups):
            table = file.read_row_group(i, columns=list(COLUMNS))
            yield pa.table(standardize({k: table[k].to_numpy() for k in COLUMNS}))


def _pyarrow(ctx: RunContext) -> Result:
    return _consume(ctx, torch_batches(_row_groups(ctx.data.main_files), BATCH))


def _pyarrow_mp(ctx: RunContext) -> Result:
    tables = ctx.handle.imap(_read_standardized, [str(Path(p)) for p in ctx.data.main_files])
    return _consume(ctx, torch_batches(tables, BATCH))


WORKLOAD = Workload(
    name="feed",
    description="read_parquet(a, b, c) → map_batches(standardize) → iter_torch_batches(4096)",
    dataset="main",
    runs={
        "dataflow": _dataflow,
        "daft": _daft,
        "ray": _ray,
        "pyarrow": _pyarrow,
        "pyarrow-mp": _pyarrow_mp,
    },
    preload=("torch",),
)
