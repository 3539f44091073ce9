"""One measured run, in a fresh interpreter: ``python -m benchmarks.child '<json spec>'``.

The parent (``benchmarks.runner``) samples this process tree's memory from
outside; this side sets the engine up, times the workload's run and writes
the result as JSON to the spec's ``result_file``. Only the standard library
is imported before the workload asks for more, so ``startup`` measures the
engine, not the harness.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from benchmarks import engines, workloads
from benchmarks.workloads import DataPaths, RunContext


def _data(spec: dict, dataset: str) -> DataPaths:
    root = Path(spec["data_root"])
    if dataset == "none":
        return DataPaths(root=root, main_files=(), small_files=(), rows=0, small_rows=0)
    from benchmarks.data import paths_of

    return paths_of(root)


def measure(spec: dict) -> dict:
    """Run ``spec["workload"]`` on ``spec["engine"]`` once; returns the timings and result."""
    workload = workloads.get(spec["workload"])
    run = workload.run_for(spec["engine"])
    engine = engines.get(spec["engine"])
    ctx = RunContext(
        data=_data(spec, workload.dataset),
        out_dir=Path(spec["out_dir"]),
        engine=engine.name,
        params=spec.get("params", {}),
    )
    timed_setup = workload.timing == "process"
    if not timed_setup:
        for module in workload.preload:
            importlib.import_module(module)
        ctx.handle = engine.setup()
    try:
        ctx.start_clock()
        t0 = time.perf_counter()
        result = run(ctx)
        wall = time.perf_counter() - t0
        if workload.check is not None:
            result = workload.check(ctx)
        if result is None:
            raise TypeError(
                f"workload {workload.name!r}: run for {engine.name!r} returned None "
                "and the workload has no check()"
            )
        if result.wall_s is not None:
            wall = result.wall_s
    finally:
        if not timed_setup:
            engine.teardown(ctx.handle)
    return {
        "wall_s": wall,
        "ttfb_s": ctx.first_batch_s,
        "rows": result.rows,
        "units": result.units,
        "startup_s": result.startup_s,
        "checksum": result.checksum,
        "version": engine.version(),
    }


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    try:
        out = measure(spec)
        code = 0
    except BaseException as exc:  # report every failure, KeyboardInterrupt included
        out = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        code = 1
    Path(spec["result_file"]).write_text(json.dumps(out))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
