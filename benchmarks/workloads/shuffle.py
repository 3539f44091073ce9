"""shuffle: read_parquet → random_shuffle(seed=0) → iterate every batch."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from benchmarks.workloads import Result, RunContext, Workload, checksum

if TYPE_CHECKING:
    import pyarrow as pa

BATCH = 4096


def _consume(ctx: RunContext, batches: Iterable[pa.Table | pa.RecordBatch]) -> Result:
    import pyarrow.compute as pc

    rows = sum_id = 0
    for batch in batches:
        ctx.first_batch()
        rows += batch.num_rows
        sum_id += pc.sum(batch["id"]).as_py() or 0
    return Result(rows=rows, checksum=checksum(rows=rows, sum_id=sum_id))


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    ds = df.read_parquet(list(ctx.data.main_files)).random_shuffle(seed=0)
    return _consume(ctx, ds.iter_batches(batch_size=BATCH, batch_format="pyarrow"))


def _daft(ctx: RunContext) -> Result:
    import daft

    frame = daft.read_parquet(list(ctx.data.main_files)).shuffle(seed=0)
    return _consume(ctx, frame.to_arrow_iter())


def _ray(ctx: RunContext) -> Result:
    import ray.data

    ds = ray.data.read_parquet(list(ctx.data.main_files)).random_shuffle(seed=0)
    return _consume(ctx, ds.iter_batches(batch_size=BATCH, batch_format="pyarrow"))


def _pyarrow(ctx: RunContext) -> Result:
    import numpy as np
    import pyarrow.dataset as pads

    table = pads.dataset(list(ctx.data.main_files), format="parquet").to_table()
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    return _consume(ctx, shuffled.to_batches(max_chunksize=BATCH))


WORKLOAD = Workload(
    name="shuffle",
    description="read_parquet → random_shuffle(seed=0) → iter_batches(4096)",
    dataset="main",
    runs={"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
)
