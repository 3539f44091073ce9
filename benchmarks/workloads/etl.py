"""etl: read_parquet → map_batches(d = a*b + c) → filter(d > 0) → write_parquet."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.workloads import Result, RunContext, Workload, checksum

if TYPE_CHECKING:
    import pyarrow as pa


def add_d(table: pa.Table) -> pa.Table:
    """The UDF every engine runs (Daft as the equivalent expression): ``d = a*b + c``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    d = pc.add(pc.multiply(table["a"], table["b"]), pc.cast(table["c"], pa.float64()))
    return table.append_column("d", d)


def _dataflow(ctx: RunContext) -> None:
    import dataflow as df

    ds = df.read_parquet(list(ctx.data.main_files))
    ds.map_batches(add_d, batch_format="pyarrow").filter(expr="d > 0").write_parquet(
        str(ctx.out_dir)
    )


def _daft(ctx: RunContext) -> None:
    import daft
    from daft import col

    frame = daft.read_parquet(list(ctx.data.main_files))
    frame = frame.with_column("d", col("a") * col("b") + col("c").cast(daft.DataType.float64()))
    frame.where(col("d") > 0).write_parquet(str(ctx.out_dir))


def _ray(ctx: RunContext) -> None:
    import ray.data

    ds = ray.data.read_parquet(list(ctx.data.main_files))
    ds.map_batches(add_d, batch_format="pyarrow").filter(expr="d > 0").write_parquet(
        str(ctx.out_dir)
    )


def _etl_file(path: str, out: Path) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = add_d(pq.read_table(path))
    pq.write_table(table.filter(pc.greater(table["d"], 0)), out / Path(path).name)


def _pyarrow(ctx: RunContext) -> None:
    for path in ctx.data.main_files:
        _etl_file(path, ctx.out_dir)


def _pyarrow_mp(ctx: RunContext) -> None:
    ctx.handle.starmap(_etl_file, [(path, ctx.out_dir) for path in ctx.data.main_files])


def _check(ctx: RunContext) -> Result:
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    table = pads.dataset(str(ctx.out_dir), format="parquet").to_table(columns=["id", "d"])
    return Result(
        rows=ctx.data.rows,  # rows/s counts rows read: the work done, whatever passes the filter
        checksum=checksum(
            rows=table.num_rows,
            sum_id=pc.sum(table["id"]).as_py() or 0,
            sum_d=float(pc.sum(table["d"]).as_py() or 0.0),
        ),
    )


WORKLOAD = Workload(
    name="etl",
    description="read_parquet → map_batches(d = a*b + c) → filter(d > 0) → write_parquet",
    dataset="main",
    runs={
        "dataflow": _dataflow,
        "daft": _daft,
        "ray": _ray,
        "pyarrow": _pyarrow,
        "pyarrow-mp": _pyarrow_mp,
    },
    check=_check,
)
