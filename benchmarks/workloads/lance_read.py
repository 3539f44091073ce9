"""lance_read: read a Lance dataset of the main dataset (one fragment per source
file) with a selective filter (``id < rows / 10``) pushed into Lance's scan."""

from __future__ import annotations

from benchmarks.workloads import Result, RunContext, Workload
from benchmarks.workloads._lakehouse import cutoff, lance_uri, prepare_lance, result


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    ds = df.read_lance(lance_uri(ctx.data), filter=df.col("id") < cutoff(ctx.data))
    return result(ctx.data, ds.to_arrow())


def _daft(ctx: RunContext) -> Result:
    import daft
    from daft import col

    frame = daft.read_lance(lance_uri(ctx.data)).where(col("id") < cutoff(ctx.data))
    return result(ctx.data, frame.to_arrow())


def _ray(ctx: RunContext) -> Result:
    import pyarrow as pa
    import ray
    import ray.data

    ds = ray.data.read_lance(lance_uri(ctx.data), filter=f"id < {cutoff(ctx.data)}")
    return result(ctx.data, pa.concat_tables(ray.get(ds.to_arrow_refs())))


def _pyarrow(ctx: RunContext) -> Result:
    import lance

    # Lance's own reader, in this process.
    table = lance.dataset(lance_uri(ctx.data)).to_table(filter=f"id < {cutoff(ctx.data)}")
    return result(ctx.data, table)


WORKLOAD = Workload(
    name="lance_read",
    description="read_lance(filter id < rows/10) of the main table (one fragment per source file)",
    dataset="main",
    preload=("lance",),  # the format's library: every engine reads through it
    runs={"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
    prepare=prepare_lance,
)
