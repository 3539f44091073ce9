"""sort: read_parquet → sort("a") → take(10) whole rows."""

from __future__ import annotations

from benchmarks.workloads import Result, RunContext, Workload, checksum

TOP = 10


def _result(rows: int, ids: list[int]) -> Result:
    return Result(rows=rows, checksum=checksum(ids="-".join(str(i) for i in ids)))


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    top = df.read_parquet(list(ctx.data.main_files)).sort("a").take(TOP)
    return _result(ctx.data.rows, [r["id"] for r in top])


def _daft(ctx: RunContext) -> Result:
    import daft

    top = daft.read_parquet(list(ctx.data.main_files)).sort("a").limit(TOP).to_pydict()
    return _result(ctx.data.rows, top["id"])


def _ray(ctx: RunContext) -> Result:
    import ray.data

    top = ray.data.read_parquet(list(ctx.data.main_files)).sort("a").take(TOP)
    return _result(ctx.data.rows, [r["id"] for r in top])


def _top(path: str) -> list[tuple[float, int]]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    top = table.take(pc.select_k_unstable(table, TOP, [("a", "ascending")]))
    return list(zip(top["a"].to_pylist(), top["id"].to_pylist()))


def _pyarrow(ctx: RunContext) -> Result:
    best = sorted(pair for path in ctx.data.main_files for pair in _top(path))[:TOP]
    return _result(ctx.data.rows, [i for _, i in best])


def _pyarrow_mp(ctx: RunContext) -> Result:
    best = sorted(pair for part in ctx.handle.map(_top, ctx.data.main_files) for pair in part)
    return _result(ctx.data.rows, [i for _, i in best[:TOP]])


WORKLOAD = Workload(
    name="sort",
    description="read_parquet → sort('a') → take(10)",
    dataset="main",
    runs={
        "dataflow": _dataflow,
        "daft": _daft,
        "ray": _ray,
        "pyarrow": _pyarrow,
        "pyarrow-mp": _pyarrow_mp,
    },
)
