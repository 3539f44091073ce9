"""ooc_repartition: read_parquet → repartition(64) → write_parquet, 512 MiB store.

Out of core (issue 17, see ``_ooc``). dataflow's and Ray Data's
``repartition(64)`` cut the rows, in order, into 64 blocks; Daft's equivalent
is ``into_partitions(64)``. The check reads the output one batch at a time:
every id exactly once and the sums of the input; the record's ``extra`` has
the number of files written.
"""

from __future__ import annotations

from benchmarks.workloads import DataPaths, Result, RunContext, _ooc

COLUMNS = ["id", "a"]
BLOCKS = 64


def _dataflow(ctx: RunContext) -> None:
    import dataflow as df

    _ooc.dataflow_write(ctx, df.read_parquet(list(ctx.data.main_files)).repartition(BLOCKS))


def _daft(ctx: RunContext) -> None:
    import daft

    frame = daft.read_parquet(list(ctx.data.main_files)).into_partitions(BLOCKS)
    frame.write_parquet(str(ctx.out_dir))


def _ray(ctx: RunContext) -> None:
    import ray.data

    ds = ray.data.read_parquet(list(ctx.data.main_files)).repartition(BLOCKS)
    ds.write_parquet(str(ctx.out_dir))


def _pyarrow(ctx: RunContext) -> None:
    table = _ooc.read_all(ctx.data)
    for i in range(BLOCKS):
        lo, hi = table.num_rows * i // BLOCKS, table.num_rows * (i + 1) // BLOCKS
        _ooc.write_one(ctx, table.slice(lo, hi - lo), f"part-{i:02d}")


def _prepare(data: DataPaths) -> None:
    _ooc.reference(data, "sums", COLUMNS, _ooc.base_sums)


def _check(ctx: RunContext) -> Result:
    want = _ooc.reference(ctx.data, "sums", COLUMNS, _ooc.base_sums)
    return _ooc.check_written(
        ctx,
        "ooc_repartition",
        COLUMNS,
        lambda _, b: _ooc.base_sums(b),
        want,
        _ooc.IdSet(ctx.data.rows),
    )


WORKLOAD = _ooc.workload(
    "ooc_repartition",
    "read_parquet → repartition(64) → write_parquet",
    {"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
    _check,
    _prepare,
)
