"""ooc_sort: read_parquet → sort("a") → write_parquet, 512 MiB object store.

Out of core (issue 17, see ``_ooc``): the whole table goes through the sort.
The check reads the output one batch at a time: every id exactly once, the
sums of the input, each file sorted by ``a`` and the files' ranges disjoint
(so the files in order of their first value are one sorted sequence, whatever
names the engine gave them).
"""

from __future__ import annotations

from benchmarks.workloads import DataPaths, Result, RunContext, Workload, _ooc

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

    got = {"rows": 0, "sum_id": 0, "sum_a": 0.0}
    seen = _ooc.IdSet(ctx.data.rows)
    ranges = []
    for path in _ooc.output_files(ctx):
        first = last = None
        for batch in _ooc.batches(path, COLUMNS):
            seen.add(batch["id"])
            for key, value in _ooc.base_sums(batch).items():
                got[key] += value
            a = batch["a"].to_numpy()
            if not len(a):
                continue
            if (last is not None and a[0] < last) or bool((np.diff(a) < 0).any()):
                raise AssertionError(f"ooc_sort: {path} is not sorted by a")
            first = a[0] if first is None else first
            last = a[-1]
        if first is not None:
            ranges.append((first, last, path))
    ranges.sort()
    for (_, hi, before), (lo, _, after) in zip(ranges, ranges[1:]):
        if hi > lo:
            raise AssertionError(f"ooc_sort: {before} ends at a={hi}, after {after} begins ({lo})")
    seen.check("ooc_sort")
    _ooc.compare("ooc_sort", got, _ooc.reference(ctx.data, "sums", COLUMNS, _ooc.base_sums))
    return _ooc.result(ctx.data, got, len(ranges))


WORKLOAD = Workload(
    name="ooc_sort",
    description="read_parquet → sort('a') → write_parquet, 512 MiB store (out of core)",
    dataset="main",
    runs={"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
    check=_check,
    prepare=_prepare,
    store_mib=_ooc.STORE_MIB,
)
