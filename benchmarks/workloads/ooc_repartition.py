"""ooc_repartition: read_parquet → repartition(64) → write_parquet, 512 MiB store.

Out of core (issue 17, see ``_ooc``). dataflow's and Ray Data's
``repartition(64)`` cut the rows, in order, into 64 blocks; Daft's equivalent
is ``into_partitions(64)``. The check reads the output one batch at a time:
every id exactly once and the sums of the input; the record's ``extra`` has
the number of files written.
"""

from __future__ import annotations

from benchmarks.workloads import DataPaths, Result, RunContext, Workload, _ooc

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
    got = {"rows": 0, "sum_id": 0, "sum_a": 0.0}
    seen = _ooc.IdSet(ctx.data.rows)
    files = _ooc.output_files(ctx)
    for path in files:
        for batch in _ooc.batches(path, COLUMNS):
            seen.add(batch["id"])
            for key, value in _ooc.base_sums(batch).items():
                got[key] += value
    seen.check("ooc_repartition")
    _ooc.compare("ooc_repartition", got, _ooc.reference(ctx.data, "sums", COLUMNS, _ooc.base_sums))
    return _ooc.result(ctx.data, got, len(files))


WORKLOAD = Workload(
    name="ooc_repartition",
    description="read_parquet → repartition(64) → write_parquet, 512 MiB store (out of core)",
    dataset="main",
    runs={"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
    check=_check,
    prepare=_prepare,
    store_mib=_ooc.STORE_MIB,
)
