"""smallfiles: 2,000 Parquet files of 1,000 rows → count(), then → map_batches(identity) → count().

The mapped count reads column ``id`` only in every engine: Daft's batch UDF is an
expression over ``id`` (``select(udf(col("id")))``), so Daft prunes the other
five columns at the read; the others are given the same projection
(``columns=["id"]``) so that each engine does the same work.
"""

from __future__ import annotations

from benchmarks.workloads import Result, RunContext, Workload, checksum
from benchmarks.workloads._common import daft_identity_count, identity


def _result(counted: int, mapped: int) -> Result:
    return Result(rows=counted + mapped, checksum=checksum(count=counted, mapped=mapped))


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    files = list(ctx.data.small_files)
    counted = df.read_parquet(files).count()
    mapped = (
        df.read_parquet(files, columns=["id"]).map_batches(identity, batch_format="pyarrow").count()
    )
    return _result(counted, mapped)


def _daft(ctx: RunContext) -> Result:
    import daft

    files = list(ctx.data.small_files)
    counted = daft.read_parquet(files).count_rows()
    return _result(counted, daft_identity_count(daft.read_parquet(files), "id"))


def _ray(ctx: RunContext) -> Result:
    import ray.data

    files = list(ctx.data.small_files)
    counted = ray.data.read_parquet(files).count()
    mapped = (
        ray.data.read_parquet(files, columns=["id"])
        .map_batches(identity, batch_format="pyarrow")
        .count()
    )
    return _result(counted, mapped)


def _metadata_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def _mapped_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return identity(pq.read_table(path, columns=["id"])).num_rows


def _pyarrow(ctx: RunContext) -> Result:
    files = ctx.data.small_files
    return _result(sum(map(_metadata_rows, files)), sum(map(_mapped_rows, files)))


def _pyarrow_mp(ctx: RunContext) -> Result:
    files = ctx.data.small_files
    pool = ctx.handle
    return _result(sum(pool.map(_metadata_rows, files)), sum(pool.map(_mapped_rows, files)))


WORKLOAD = Workload(
    name="smallfiles",
    description="2,000 files × 1,000 rows → count(), and → map_batches(identity) → count()",
    dataset="smallfiles",
    runs={
        "dataflow": _dataflow,
        "daft": _daft,
        "ray": _ray,
        "pyarrow": _pyarrow,
        "pyarrow-mp": _pyarrow_mp,
    },
)
