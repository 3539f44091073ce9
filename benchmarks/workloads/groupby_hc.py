"""groupby_hc: read_parquet(id, a) → with_column(k = id % keys) → groupby(k).sum(a).

High cardinality: ``keys`` is an eighth of the rows (4,000,000 at 32M rows), so
partial aggregation barely shrinks the data and the merge dominates. ``k`` is
a float, as ``id % 4e6`` is in Python (``--param hc_keys=N`` picks another count).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.workloads import Result, RunContext, Workload, checksum

if TYPE_CHECKING:
    import pyarrow as pa

COLUMNS = ["id", "a"]


def _keys(ctx: RunContext) -> float:
    return float(ctx.param("hc_keys", max(1, ctx.data.rows // 8)))


def _result(rows: int, table: pa.Table) -> Result:
    import pyarrow.compute as pc

    sums = table.column(table.column_names[1])
    return Result(
        rows=rows,
        checksum=checksum(
            groups=table.num_rows,
            sum_keys=float(pc.sum(table.column(0)).as_py() or 0.0),
            total=float(pc.sum(sums).as_py() or 0.0),
        ),
    )


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    ds = df.read_parquet(list(ctx.data.main_files), columns=COLUMNS)
    ds = ds.with_column("k", df.col("id") % _keys(ctx))
    return _result(ctx.data.rows, ds.groupby("k").sum("a").to_arrow())


def _daft(ctx: RunContext) -> Result:
    import daft
    from daft import col

    frame = daft.read_parquet(list(ctx.data.main_files)).select(
        (col("id") % _keys(ctx)).alias("k"), col("a")
    )
    return _result(ctx.data.rows, frame.groupby("k").agg(col("a").sum()).to_arrow())


def _ray(ctx: RunContext) -> Result:
    import pyarrow as pa
    import ray.data

    keys = _keys(ctx)
    ds = ray.data.read_parquet(list(ctx.data.main_files), columns=COLUMNS)
    ds = ds.map_batches(lambda b: {"k": b["id"] % keys, "a": b["a"]}, batch_format="numpy")
    out = ds.groupby("k").sum("a").to_pandas()
    return _result(ctx.data.rows, pa.Table.from_pandas(out, preserve_index=False))


def _pyarrow(ctx: RunContext) -> Result:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    table = pads.dataset(list(ctx.data.main_files), format="parquet").to_table(columns=COLUMNS)
    keys = int(_keys(ctx))
    # Integer keys with the same values as id % keys (pyarrow's hash table is
    # slow on whole-number doubles); the checksum sums them as floats.
    k = pc.subtract(table["id"], pc.multiply(pc.divide(table["id"], keys), keys))
    grouped = pa.table({"k": k, "a": table["a"]}).group_by("k").aggregate([("a", "sum")])
    return _result(ctx.data.rows, grouped.select(["k", "a_sum"]))


WORKLOAD = Workload(
    name="groupby_hc",
    description="read_parquet → with_column(k = id % (rows/8)) → groupby(k).sum(a)",
    dataset="main",
    runs={"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
)
