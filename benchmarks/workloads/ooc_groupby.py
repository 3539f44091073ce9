"""ooc_groupby: read_parquet(id, a) → k = id % (rows/16) → groupby(k).sum(a) →
write_parquet, 512 MiB store.

Out of core (issue 17, see ``_ooc``): 4,000,000 integer keys at 64M rows, so
the partial aggregates are as big as a sixteenth of the input and the merge
is an exchange of its own. The check: every key exactly once, the sum of the
keys, the total of the sums and ``sum(k * sum_k)`` (which catches a sum given
to the wrong key) against the input summed one file at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.workloads import DataPaths, Result, RunContext, _ooc

if TYPE_CHECKING:
    import pyarrow as pa

COLUMNS = ["id", "a"]


def _dataflow(ctx: RunContext) -> None:
    import dataflow as df

    ds = df.read_parquet(list(ctx.data.main_files), columns=COLUMNS)
    ds = ds.with_column("k", df.col("id") % _ooc.keys(ctx.data))
    _ooc.dataflow_write(ctx, ds.groupby("k").sum("a"))


def _daft(ctx: RunContext) -> None:
    import daft
    from daft import col

    frame = daft.read_parquet(list(ctx.data.main_files)).select(
        (col("id") % _ooc.keys(ctx.data)).alias("k"), col("a")
    )
    frame.groupby("k").agg(col("a").sum()).write_parquet(str(ctx.out_dir))


def _ray(ctx: RunContext) -> None:
    import ray.data

    n = _ooc.keys(ctx.data)
    ds = ray.data.read_parquet(list(ctx.data.main_files), columns=COLUMNS)
    ds = ds.map_batches(lambda b: {"k": b["id"] % n, "a": b["a"]}, batch_format="numpy")
    ds.groupby("k").sum("a").write_parquet(str(ctx.out_dir))


def _pyarrow(ctx: RunContext) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = _ooc.read_all(ctx.data, COLUMNS)
    n = _ooc.keys(ctx.data)
    k = pc.subtract(table["id"], pc.multiply(pc.divide(table["id"], n), n))
    _ooc.write_one(ctx, pa.table({"k": k, "a": table["a"]}).group_by("k").aggregate([("a", "sum")]))


def _partial(n: int):
    def sums(table: pa.Table) -> dict[str, int | float]:
        ids, a = table["id"].to_numpy(), table["a"].to_numpy()
        return {"total": float(a.sum()), "weighted": float(((ids % n) * a).sum())}

    return sums


def _want(data: DataPaths) -> dict[str, int | float]:
    n = _ooc.keys(data)
    groups = min(n, data.rows)  # ids are 0..rows-1
    sums = _ooc.reference(data, f"groupby-{n}", COLUMNS, _partial(n))
    return {"groups": groups, "sum_k": groups * (groups - 1) // 2, **sums}


def _prepare(data: DataPaths) -> None:
    _want(data)


def _check(ctx: RunContext) -> Result:
    def visit(_: str, batch: pa.RecordBatch) -> dict[str, int | float]:
        k = batch["k"]
        (sums,) = [batch[c] for c in batch.schema.names if c != "k"]  # "sum(a)" or "a"
        return {
            "groups": batch.num_rows,
            "sum_k": _ooc.int_sum(k),
            "total": _ooc.float_sum(sums),
            "weighted": float((k.to_numpy() * sums.to_numpy()).sum()),
        }

    keys = _ooc.IdSet(min(_ooc.keys(ctx.data), ctx.data.rows))
    return _ooc.check_written(ctx, "ooc_groupby", None, visit, _want(ctx.data), keys, "k")


WORKLOAD = _ooc.workload(
    "ooc_groupby",
    "read_parquet → k = id % (rows/16) → groupby(k).sum(a) → write_parquet",
    {"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
    _check,
    _prepare,
)
