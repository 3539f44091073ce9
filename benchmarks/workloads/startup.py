"""startup: a fresh interpreter imports the engine, starts it and returns one row of range(10)."""

from __future__ import annotations

from benchmarks.workloads import Result, RunContext, Workload, checksum


def _result(rows: list[dict]) -> Result:
    return Result(rows=len(rows), checksum=checksum(rows=len(rows), id=rows[0]["id"]))


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    try:
        return _result(df.range(10).take(1))
    finally:
        df.shutdown()


def _daft(ctx: RunContext) -> Result:
    import daft

    columns = daft.range(10).limit(1).to_pydict()
    return _result([{"id": v} for v in columns["id"]])


def _ray(ctx: RunContext) -> Result:
    import ray.data

    from benchmarks.engines.ray_engine import start, stop

    temp_dir = start()
    try:
        return _result(ray.data.range(10).take(1))
    finally:
        stop(temp_dir)


def _pyarrow(ctx: RunContext) -> Result:
    import pyarrow as pa

    return _result(pa.table({"id": pa.array(range(10))}).slice(0, 1).to_pylist())


WORKLOAD = Workload(
    name="startup",
    description="first row of range(10) from a fresh interpreter (whole process timed)",
    dataset="none",
    runs={"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
    timing="process",
)
