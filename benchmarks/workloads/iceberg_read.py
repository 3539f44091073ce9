"""iceberg_read: read an Iceberg table (sqlite catalog) of the main dataset with a
selective filter (``id < rows / 10`` on sorted ids: the manifests' metrics skip
9 files in 10)."""

from __future__ import annotations

from benchmarks.workloads import Result, RunContext, Workload
from benchmarks.workloads._lakehouse import (
    ICEBERG_TABLE,
    cutoff,
    iceberg_catalog,
    load_iceberg,
    prepare_iceberg,
    result,
)


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    ds = df.read_iceberg(
        table_identifier=ICEBERG_TABLE,
        catalog_kwargs=iceberg_catalog(ctx.data),
        row_filter=f"id < {cutoff(ctx.data)}",
    )
    return result(ctx.data, ds.to_arrow())


def _daft(ctx: RunContext) -> Result:
    import daft
    from daft import col

    frame = daft.read_iceberg(load_iceberg(ctx.data)).where(col("id") < cutoff(ctx.data))
    return result(ctx.data, frame.to_arrow())


def _ray(ctx: RunContext) -> Result:
    import pyarrow as pa
    import ray
    import ray.data
    from pyiceberg.expressions import LessThan

    ds = ray.data.read_iceberg(
        table_identifier=ICEBERG_TABLE,
        catalog_kwargs=iceberg_catalog(ctx.data),
        row_filter=LessThan("id", cutoff(ctx.data)),  # Ray 2.60 fails on a string filter
    )
    return result(ctx.data, pa.concat_tables(ray.get(ds.to_arrow_refs())))


def _pyarrow(ctx: RunContext) -> Result:
    # pyiceberg's own reader (pyarrow underneath), in this process.
    table = load_iceberg(ctx.data).scan(row_filter=f"id < {cutoff(ctx.data)}").to_arrow()
    return result(ctx.data, table)


WORKLOAD = Workload(
    name="iceberg_read",
    description="read_iceberg(row_filter id < rows/10) of the main table (sqlite catalog)",
    dataset="main",
    preload=(
        "pyiceberg.catalog.sql",
        "pyiceberg.io.pyarrow",
    ),  # the format's library: every engine reads through it
    runs={"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
    prepare=prepare_iceberg,
)
