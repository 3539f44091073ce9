"""One measured run, in a fresh interpreter: ``python -m benchmarks.child '<json spec>'``.

The parent (``benchmarks.runner``) samples this process tree's memory from
outside; this side sets the engine up, times the workload's run and writes
the result as JSON to the spec's ``result_file``. Only the standard library
is imported before the workload asks for more, so ``startup`` measures the
engine, not the harness.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
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
    cold = bool(spec.get("cold")) and not timed_setup
    store_mib = ctx.param("store_mib", workload.store_mib or 0)
    if store_mib:  # read by the engines' setup (benchmarks.engines.store_bytes)
        os.environ[engines.STORE_ENV] = str(store_mib * 1024 * 1024)
        ctx.extra["store_mib"] = store_mib
    if cold:
        # The whole process is timed, as `time python script.py` would: the
        # interpreter's start (from the parent's clock), imports, the engine's
        # start, the run and its shutdown; not the result check.
        ctx.start_clock(elapsed=time.time() - spec["t0_epoch"])
        for module in workload.preload:
            importlib.import_module(module)
        ctx.handle = (engine.cold_setup or engine.setup)()
    elif not timed_setup:
        for module in workload.preload:
            importlib.import_module(module)
        ctx.handle = engine.setup()
    torn_down = False
    try:
        cpu0 = 0.0 if cold else tree_cpu_s()
        if not cold:
            ctx.start_clock()
        t0 = time.perf_counter()
        result = run(ctx)
        if cold:
            engine.teardown(ctx.handle)
            torn_down = True
            wall = time.time() - spec["t0_epoch"]
        else:
            wall = time.perf_counter() - t0
        cpu = tree_cpu_s() - cpu0
        if workload.check is not None:
            result = workload.check(ctx)
        if result is None:
            raise TypeError(
                f"workload {workload.name!r}: run for {engine.name!r} returned None "
                "and the workload has no check()"
            )
        if result.wall_s is not None:
            wall = result.wall_s
        if ctx.extra:
            result = dataclasses.replace(result, extra={**ctx.extra, **(result.extra or {})})
    finally:
        if not timed_setup and not torn_down:
            engine.teardown(ctx.handle)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "ttfb_s": ctx.first_batch_s,
        "rows": result.rows,
        "units": result.units,
        "startup_s": result.startup_s,
        "extra": result.extra,
        "checksum": result.checksum,
        "version": engine.version(),
    }


def tree_cpu_s() -> float:
    """CPU seconds (user + system) of this process and every process under it,
    live or already reaped (workers that exited count through RUSAGE_CHILDREN)."""
    import resource

    import psutil

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


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
