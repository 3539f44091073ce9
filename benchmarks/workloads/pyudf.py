"""pyudf: read id, text → map(per-row Python: lowercase, word count, length) → count.

The count comes with the sums of the UDF's outputs, so no engine can prune the UDF away.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from benchmarks.workloads import Result, RunContext, Workload, checksum

if TYPE_CHECKING:
    import pyarrow as pa

COLUMNS = ["id", "text"]


def enrich(text: str) -> dict[str, Any]:
    """The per-row Python work: lower-case, count words, measure length."""
    lower = text.lower()
    return {"lower": lower, "words": len(lower.split()), "length": len(lower)}


def enrich_row(row: dict[str, Any]) -> dict[str, Any]:
    """``enrich`` as a row → row function (Ray Data's ``map``)."""
    return {"id": row["id"], **enrich(row["text"])}


def _sums(tables: Iterable[pa.Table]) -> Result:
    rows = words = length = 0
    for table in tables:
        rows += table.num_rows
        w, n = _column_sums(table)
        words, length = words + w, length + n
    return Result(rows=rows, checksum=checksum(rows=rows, words=words, length=length))


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    ds = df.read_parquet(list(ctx.data.main_files), columns=COLUMNS).map(enrich_row)
    return _sums(ds.iter_batches(batch_size=None, batch_format="pyarrow"))


def _daft(ctx: RunContext) -> Result:
    import daft
    from daft import DataType, col

    dtype = DataType.struct(
        {"lower": DataType.string(), "words": DataType.int64(), "length": DataType.int64()}
    )
    udf = daft.func(return_dtype=dtype, unnest=True)(enrich)
    frame = daft.read_parquet(list(ctx.data.main_files)).select("id", udf(col("text")))
    out = frame.agg(
        col("id").count().alias("rows"), col("words").sum(), col("length").sum()
    ).to_pydict()
    rows, words, length = out["rows"][0], out["words"][0], out["length"][0]
    return Result(rows=rows, checksum=checksum(rows=rows, words=words, length=length))


def _ray(ctx: RunContext) -> Result:
    import ray.data

    ds = ray.data.read_parquet(list(ctx.data.main_files), columns=COLUMNS).map(enrich_row)
    return _sums(ds.iter_batches(batch_size=None, batch_format="pyarrow"))


def _file_sums(path: str) -> tuple[int, int, int]:
    """What a hand-written pipeline does for one file: the mapped rows as a table
    (``to_pylist`` -> ``enrich_row`` -> ``Table.from_pylist``, as ``map`` must
    make them), summed where they were made (they are not shipped back)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = pq.read_table(path, columns=COLUMNS).to_pylist()
    mapped = pa.Table.from_pylist([enrich_row(row) for row in rows])
    return mapped.num_rows, *_column_sums(mapped)


def _column_sums(table: pa.Table) -> tuple[int, int]:
    import pyarrow.compute as pc

    return pc.sum(table["words"]).as_py() or 0, pc.sum(table["length"]).as_py() or 0


def _result(parts: Iterable[tuple[int, int, int]]) -> Result:
    rows, words, length = (sum(x) for x in zip(*parts))
    return Result(rows=rows, checksum=checksum(rows=rows, words=words, length=length))


def _pyarrow(ctx: RunContext) -> Result:
    return _result(_file_sums(p) for p in ctx.data.main_files)


def _pyarrow_mp(ctx: RunContext) -> Result:
    return _result(ctx.handle.map(_file_sums, ctx.data.main_files))


WORKLOAD = Workload(
    name="pyudf",
    description="read id, text → map(per-row Python: lower, words, length) → count (+ sums)",
    dataset="main",
    runs={
        "dataflow": _dataflow,
        "daft": _daft,
        "ray": _ray,
        "pyarrow": _pyarrow,
        "pyarrow-mp": _pyarrow_mp,
    },
)
