"""The workload interface and registry: every other module in this package is one workload.

A workload module defines ``WORKLOAD = Workload(...)``: a name, a one-line
description, the dataset it reads and one ``run`` function per engine. The
harness calls ``run(ctx)`` in a fresh process with the engine already set up
(unless ``timing="process"``), times it, then calls ``check(ctx)`` when the
workload writes files, so verifying the output is not timed. A run returns a
:class:`Result` whose ``checksum`` is engine-independent (order-free sums,
rounded floats): equal checksums show that the engines did the same work.

Example (``benchmarks/workloads/count_rows.py``)::

    from benchmarks.workloads import Result, RunContext, Workload

    def _pyarrow(ctx: RunContext) -> Result:
        import pyarrow.dataset as pads
        n = pads.dataset(ctx.data.main_files).count_rows()
        return Result(rows=n, checksum=checksum(rows=n))

    WORKLOAD = Workload(name="count_rows", description="count the main dataset's rows",
                        dataset="main", runs={"pyarrow": _pyarrow})

The registry is lazy and by name: adding a module is all it takes to add a
workload. This module imports only the standard library, so the ``startup``
workload's fresh interpreter pays for no harness imports.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

Dataset = Literal["none", "main", "smallfiles"]
Timing = Literal["run", "process"]


@dataclass(frozen=True)
class DataPaths:
    """The files of one generated dataset (see ``benchmarks.data``)."""

    root: Path
    main_files: tuple[str, ...]
    small_files: tuple[str, ...]
    rows: int
    small_rows: int


@dataclass
class RunContext:
    """What a run function gets: the data, a private output dir, the engine's handle."""

    data: DataPaths
    out_dir: Path
    engine: str
    handle: Any = None  # what the engine's setup() returned, e.g. a multiprocessing pool
    # Size knobs from `run --param NAME=INT` (e.g. overhead_blocks), read with param().
    params: Mapping[str, int] = field(default_factory=dict)
    first_batch_s: float | None = None
    # Details a run adds to its record (e.g. dataflow's spill stats of a write
    # whose Result comes from check()); merged into Result.extra.
    extra: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)

    def param(self, name: str, default: int) -> int:
        """The ``--param`` value ``name``, or the workload's ``default``."""
        return int(self.params.get(name, default))

    def start_clock(self, elapsed: float = 0.0) -> None:
        """Mark the start of the timed section (called by the harness), ``elapsed``
        seconds ago (a cold run's section began when its process was launched)."""
        self._t0 = time.perf_counter() - elapsed

    def first_batch(self) -> None:
        """Record time to first batch; streaming workloads call it on every batch."""
        if self.first_batch_s is None:
            self.first_batch_s = time.perf_counter() - self._t0


@dataclass(frozen=True)
class Result:
    """What a run produced: rows (for rows/s), an engine-independent checksum, units."""

    rows: int
    checksum: str
    units: int | None = None  # counted for the rate instead of rows (e.g. blocks)
    # A workload that times its own window (e.g. service_feed: first request to last
    # row, its processes' start-up excluded) sets these; wall_s replaces the harness's.
    wall_s: float | None = None
    startup_s: float | None = None
    # Details the harness keeps in the run's record as they are (e.g. ddp_feed's per-rank rates).
    extra: dict[str, Any] | None = None


RunFn = Callable[[RunContext], "Result | None"]


@dataclass(frozen=True)
class Workload:
    """One benchmark: the same work written idiomatically for each engine."""

    name: str
    description: str
    dataset: Dataset
    runs: Mapping[str, RunFn]
    # "run": time run() after engine setup; "process": the whole fresh process is timed.
    timing: Timing = "run"
    unit: str = "rows"
    # Called after the timer stops for workloads whose run() writes files and returns None.
    check: Callable[[RunContext], Result] | None = None
    # Imported before the timer starts (e.g. torch for feed): every engine needs them anyway.
    preload: tuple[str, ...] = ()
    # Called in the parent before each run, untimed and outside the sampled process:
    # builds what the workload reads from the generated data, once (e.g. the main
    # dataset converted to a Delta table, cached next to it).
    prepare: Callable[[DataPaths], None] | None = None
    # The object store every engine starts with, in MiB (dataflow's and Ray's
    # object_store_memory; Daft has none); --param store_mib=N overrides it.
    # None: each engine's default.
    store_mib: int | None = None

    def run_for(self, engine: str) -> RunFn:
        """The run function for ``engine``; raises KeyError naming the engines it has.
        A variant of dataflow (``dataflow-unordered``, ``dataflow-ray``: the same
        code under another context or backend) runs the ``dataflow`` function
        unless the workload has its own."""
        base = "dataflow" if engine.startswith("dataflow-") else engine
        try:
            return self.runs[engine] if engine in self.runs else self.runs[base]
        except KeyError:
            raise KeyError(
                f"workload {self.name!r} has no run for engine {engine!r}; "
                f"it has: {', '.join(sorted(self.runs))}"
            ) from None


ON_RAY_CLUSTER = ("etl", "feed", "groupby", "sort", "shuffle", "smallfiles", "inference")
"""The workloads that make sense on a Ray cluster: each runs as ``dataflow-ray``
(the ``dataflow`` code on the ray backend) beside Ray Data (``ray``) on one local
Ray. The others measure one machine (``startup``, ``overhead``, the store), a
peer Ray Data lacks, or serve other processes."""


def has_run(workload: Workload, engine: str) -> bool:
    """True when ``workload`` can run on ``engine`` (see ``Workload.run_for``)."""
    try:
        workload.run_for(engine)
    except KeyError:
        return False
    return True


def checksum(**parts: int | float | str) -> str:
    """A stable text digest: ints exactly, floats to 8 significant digits.

    >>> checksum(rows=3, sum_a=1.0000000001)
    'rows=3;sum_a=1.0000000e+00'
    """
    return ";".join(
        f"{key}={format(value, '.7e') if isinstance(value, float) else value}"
        for key, value in parts.items()
    )


def names() -> list[str]:
    """Every workload name, sorted (one module each in this package)."""
    pkg = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(pkg)]) if not m.name.startswith("_"))


_loaded: dict[str, Workload] = {}
loaded: Mapping[str, Workload] = MappingProxyType(_loaded)


def get(name: str) -> Workload:
    """Import the workload ``name``; an unknown name lists the known ones."""
    if name not in _loaded:
        if name not in names():
            raise KeyError(f"unknown workload {name!r}; known: {', '.join(names())}")
        module = importlib.import_module(f"{__name__}.{name}")
        workload = getattr(module, "WORKLOAD", None)
        if not isinstance(workload, Workload) or workload.name != name:
            raise TypeError(
                f"benchmarks/workloads/{name}.py must define WORKLOAD = Workload(name={name!r}, ...)"
            )
        _loaded[name] = workload
    return _loaded[name]
