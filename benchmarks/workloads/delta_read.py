"""delta_read: read a Delta table of the main dataset with a selective filter
(``id < rows / 10`` on sorted ids: the log's statistics skip 9 files in 10)."""

from __future__ import annotations

from benchmarks.workloads import Result, RunContext, Workload
from benchmarks.workloads._lakehouse import cutoff, delta_path, prepare_delta, result


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    ds = df.read_delta(delta_path(ctx.data), filter=df.col("id") < cutoff(ctx.data))
    return result(ctx.data, ds.to_arrow())


def _daft(ctx: RunContext) -> Result:
    import daft
    from daft import col

    frame = daft.read_deltalake(delta_path(ctx.data)).where(col("id") < cutoff(ctx.data))
    return result(ctx.data, frame.to_arrow())


def _ray(ctx: RunContext) -> Result:
    import pyarrow as pa
    import ray
    import ray.data

    ds = ray.data.read_delta(delta_path(ctx.data)).filter(expr=f"id < {cutoff(ctx.data)}")
    return result(ctx.data, pa.concat_tables(ray.get(ds.to_arrow_refs())))


def _pyarrow(ctx: RunContext) -> Result:
    import pyarrow.dataset as pads
    from deltalake import DeltaTable

    # deltalake's own reader: a pyarrow dataset over the table's files.
    dataset = DeltaTable(delta_path(ctx.data)).to_pyarrow_dataset()
    return result(ctx.data, dataset.to_table(filter=pads.field("id") < cutoff(ctx.data)))


WORKLOAD = Workload(
    name="delta_read",
    description="read_delta(filter id < rows/10) of the main table (Delta, one file per source file)",
    dataset="main",
    preload=("deltalake",),  # the format's library: every engine reads through it
    runs={"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
    prepare=prepare_delta,
)
