"""groupby: read_parquet(cat, a) → groupby("cat").mean("a") over 20 keys."""

from __future__ import annotations

from collections.abc import Iterable

from benchmarks.workloads import Result, RunContext, Workload, checksum

COLUMNS = ["cat", "a"]


def _result(rows: int, means: Iterable[tuple[str, float]]) -> Result:
    ordered = sorted(means)
    return Result(
        rows=rows,
        checksum=checksum(
            groups=len(ordered),
            first=f"{ordered[0][0]}:{ordered[0][1]:.7e}",
            sum_means=float(sum(m for _, m in ordered)),
        ),
    )


def _from_rows(rows: int, out: list[dict]) -> Result:
    # Ray Data names the aggregate "mean(a)"; take whichever column is not the key.
    return _result(rows, ((r["cat"], next(v for k, v in r.items() if k != "cat")) for r in out))


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    ds = df.read_parquet(list(ctx.data.main_files), columns=COLUMNS)
    return _from_rows(ctx.data.rows, ds.groupby("cat").mean("a").take_all())


def _daft(ctx: RunContext) -> Result:
    import daft
    from daft import col

    out = daft.read_parquet(list(ctx.data.main_files)).groupby("cat").agg(col("a").mean())
    columns = out.to_pydict()
    return _result(ctx.data.rows, zip(columns["cat"], columns["a"]))


def _ray(ctx: RunContext) -> Result:
    import ray.data

    ds = ray.data.read_parquet(list(ctx.data.main_files), columns=COLUMNS)
    return _from_rows(ctx.data.rows, ds.groupby("cat").mean("a").take_all())


def _pyarrow(ctx: RunContext) -> Result:
    import pyarrow.dataset as pads

    table = pads.dataset(list(ctx.data.main_files), format="parquet").to_table(columns=COLUMNS)
    out = table.group_by("cat").aggregate([("a", "mean")]).to_pydict()
    return _result(ctx.data.rows, zip(out["cat"], out["a_mean"]))


def _partial(path: str) -> dict[str, tuple[float, int]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=COLUMNS)
    out = table.group_by("cat").aggregate([("a", "sum"), ("a", "count")]).to_pydict()
    return {k: (s, n) for k, s, n in zip(out["cat"], out["a_sum"], out["a_count"])}


def _pyarrow_mp(ctx: RunContext) -> Result:
    totals: dict[str, list] = {}
    for part in ctx.handle.map(_partial, ctx.data.main_files):
        for key, (s, n) in part.items():
            acc = totals.setdefault(key, [0.0, 0])
            acc[0] += s
            acc[1] += n
    return _result(ctx.data.rows, ((k, s / n) for k, (s, n) in totals.items()))


WORKLOAD = Workload(
    name="groupby",
    description="read_parquet → groupby('cat').mean('a'): 20 keys",
    dataset="main",
    runs={
        "dataflow": _dataflow,
        "daft": _daft,
        "ray": _ray,
        "pyarrow": _pyarrow,
        "pyarrow-mp": _pyarrow_mp,
    },
)
