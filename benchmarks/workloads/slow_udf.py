"""slow_udf: read 8 files (a, b) → map_batches(a Python UDF costing ~15 µs a row) → iterate.

The UDF holds the GIL for ``COST_S`` per row (a busy loop, as per-row Python
would), so the run is UDF-bound: the ideal wall is the UDF's total time over
the worker processes, and the first output should come after a small fraction
of it. The harness's ttfb column is the time to the first batch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from benchmarks.workloads import Result, RunContext, Workload, checksum

if TYPE_CHECKING:
    import pyarrow as pa

COLUMNS = ["a", "b"]
FILES = 8
COST_S = 15e-6


def busy(batch: pa.Table) -> pa.Table:
    """``COST_S`` seconds of Python per row, then ``s = a + b``."""
    import pyarrow.compute as pc

    deadline = time.perf_counter() + COST_S * batch.num_rows
    while time.perf_counter() < deadline:
        pass
    return batch.append_column("s", pc.add(batch["a"], batch["b"]))


def _consume(ctx: RunContext, tables) -> Result:
    import pyarrow.compute as pc

    rows, total = 0, 0.0
    for table in tables:
        ctx.first_batch()
        rows += table.num_rows
        total += pc.sum(table["s"]).as_py() or 0.0
    return Result(rows=rows, checksum=checksum(rows=rows, sum_s=total))


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    ds = df.read_parquet(list(ctx.data.main_files[:FILES]), columns=COLUMNS)
    ds = ds.map_batches(busy, batch_format="pyarrow")
    return _consume(ctx, ds.iter_batches(batch_size=None, batch_format="pyarrow"))


def _daft(ctx: RunContext) -> Result:
    import daft
    import pyarrow as pa
    from daft import DataType, col

    @daft.func.batch(return_dtype=DataType.float64(), use_process=True)
    def busy_sum(a: daft.Series, b: daft.Series) -> daft.Series:
        out = busy(pa.table({"a": a.to_arrow(), "b": b.to_arrow()}))
        return daft.Series.from_arrow(out["s"])

    frame = daft.read_parquet(list(ctx.data.main_files[:FILES])).select(
        busy_sum(col("a"), col("b")).alias("s")
    )
    return _consume(ctx, (pa.Table.from_batches([b]) for b in frame.to_arrow_iter()))


def _ray(ctx: RunContext) -> Result:
    import ray.data

    ds = ray.data.read_parquet(list(ctx.data.main_files[:FILES]), columns=COLUMNS)
    ds = ds.map_batches(busy, batch_format="pyarrow")
    return _consume(ctx, ds.iter_batches(batch_size=None, batch_format="pyarrow"))


def _file(path: str) -> pa.Table:
    import pyarrow.parquet as pq

    return busy(pq.read_table(path, columns=COLUMNS))


def _pyarrow_mp(ctx: RunContext) -> Result:
    return _consume(ctx, ctx.handle.imap(_file, list(ctx.data.main_files[:FILES])))


WORKLOAD = Workload(
    name="slow_udf",
    description="read 8 files → map_batches(~15 µs/row of Python) → iterate (first output, balance)",
    dataset="main",
    runs={"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow-mp": _pyarrow_mp},
)
