"""ooc_sort: read_parquet → sort("a") → write_parquet, 512 MiB object store.

Out of core (issue 17, see ``_ooc``): the whole table goes through the sort.
The check reads the output one batch at a time: every id exactly once, the
sums of the input, each file sorted by ``a`` and the files' ranges disjoint
(so the files in order of their first value are one sorted sequence, whatever
names the engine gave them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.workloads import DataPaths, Result, RunContext, _ooc

if TYPE_CHECKING:
    import pyarrow as pa

COLUMNS = ["id", "a"]


def _dataflow(ctx: RunContext) -> None:
    import dataflow as df

    _ooc.dataflow_write(ctx, df.read_parquet(list(ctx.data.main_files)).sort("a"))


def _daft(ctx: RunContext) -> None:
    import daft

    daft.read_parquet(list(ctx.data.main_files)).sort("a").write_parquet(str(ctx.out_dir))


def _ray(ctx: RunContext) -> None:
    import ray.data

    ray.data.read_parquet(list(ctx.data.main_files)).sort("a").write_parquet(str(ctx.out_dir))


def _pyarrow(ctx: RunContext) -> None:
    _ooc.write_one(ctx, _ooc.read_all(ctx.data).sort_by("a"))


def _prepare(data: DataPaths) -> None:
    _ooc.reference(data, "sums", COLUMNS, _ooc.base_sums)


def _check(ctx: RunContext) -> Result:
    import numpy as np

    ranges: dict[str, list] = {}  # path -> [first a, last a]

    def visit(path: str, batch: pa.RecordBatch) -> dict[str, int | float]:
        a = batch["a"].to_numpy()
        if len(a):
            span = ranges.setdefault(path, [a[0], None])
            if (span[1] is not None and a[0] < span[1]) or bool((np.diff(a) < 0).any()):
                raise AssertionError(f"ooc_sort: {path} is not sorted by a")
            span[1] = a[-1]
        return _ooc.base_sums(batch)

    want = _ooc.reference(ctx.data, "sums", COLUMNS, _ooc.base_sums)
    out = _ooc.check_written(ctx, "ooc_sort", COLUMNS, visit, want, _ooc.IdSet(ctx.data.rows))
    spans = sorted((lo, hi, path) for path, (lo, hi) in ranges.items())
    for (_, hi, before), (lo, _, after) in zip(spans, spans[1:]):
        if hi > lo:
            raise AssertionError(f"ooc_sort: {before} ends at a={hi}, after {after} begins ({lo})")
    return out


WORKLOAD = _ooc.workload(
    "ooc_sort",
    "read_parquet → sort('a') → write_parquet",
    {"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
    _check,
    _prepare,
)
