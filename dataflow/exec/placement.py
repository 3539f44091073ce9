"""Where a map operator's tasks run: driver threads or worker processes.

DESIGN.md point 7: Arrow compute, Parquet decoding and encoding and numpy
ufuncs release the GIL, so such work runs best on threads of the driver (no
process to boot, no block serialized between processes); per-row Python holds
the GIL and needs processes. The planner gives each map operator a mode:

* ``threads``: no user code (reads by Arrow's readers, projections,
  expression filters, writes by built-in sinks), or ``task_placement="threads"``;
* ``processes``: per-row user code (``map``, ``flat_map``, ``filter(fn)``),
  Python datasources, or ``task_placement="processes"``;
* ``auto``: batch UDFs (``map_batches`` functions), which may be either. The
  operator starts on threads and measures, while all the driver's task
  threads are busy with it, how many cores the process keeps busy (its CPU
  time over wall time) and how many the machine leaves idle: GIL-free work
  fills the cores, a UDF that holds the GIL fills one while the others idle.
  After ``PROBE_S`` of such busy time it moves its remaining tasks to worker
  processes when the process used less than ``MIN_BUSY`` of the cores while
  at least ``MIN_IDLE`` of them stood idle, and stays on threads otherwise (a
  machine busy with other work gives processes no more CPU than threads).
  With one core there is nothing to gain from processes: it stays.
  The move waits for the workers: until they have booted (a cold worker
  imports for ~0.5 s on an idle core) tasks keep starting on threads, so an
  operator whose work ends sooner never waits for a boot (2,000 small files:
  1.3 s on threads, 1.3–1.9 s when they moved at once). When no worker
  exists yet, the boot itself waits ``BOOT_RENT_S`` more busy seconds on
  threads (ski rental: pay the slower threads about as long as a boot costs
  before buying one), since booting competes with the threads for the cores
  and a short operator is done before it pays (the same files: 1.16–1.21 s
  on threads, 1.45–1.61 s when the boot started after the probe). Workers
  already up (prestarted, or booted by an earlier operator) take the tasks
  as soon as the probe decides.

>>> p = Placement("auto", cores=2)
>>> p.in_driver
True
>>> p.observe(running=2, wall=0.0, cpu=0.0, idle=0.0)
>>> p.observe(running=2, wall=1.0, cpu=1.0, idle=0.9)
>>> p.in_driver, p.moving, p.boot_due
(True, True, False)
>>> p.observe(running=2, wall=2.0, cpu=2.0, idle=1.8)
>>> p.boot_due
True
>>> p.moved()
>>> p.in_driver, p.note
(False, 'processes (measured on threads: 1.00 of 2 cores busy, 0.90 idle)')
"""

from __future__ import annotations

PROBE_S = 0.5
"""Busy seconds (every task thread running this operator) measured before deciding."""
BOOT_RENT_S = 1.0
"""Busy seconds a GIL-bound operator runs on threads, after the probe, before it
boots workers that do not exist yet (booting two takes ~1 CPU-s on 2 cores)."""
MIN_BUSY = 0.75
"""Share of the cores the process must keep busy for an ``auto`` operator to stay on threads."""
MIN_IDLE = 0.25
"""Share of the cores that must stand idle meanwhile for it to move to processes."""

MODES = ("threads", "processes", "auto")


def idle_cpu_s() -> float:
    """Idle CPU seconds of the whole machine so far (all cores; iowait counts as idle)."""
    import psutil

    times = psutil.cpu_times()
    return times.idle + getattr(times, "iowait", 0.0)


class Placement:
    """The placement of one map operator, and its measurement while undecided."""

    def __init__(self, mode: str, cores: int) -> None:
        if mode not in MODES:
            raise ValueError(f"task placement must be one of {MODES}, got {mode!r}")
        self.cores = max(1, cores)
        self.in_driver = mode != "processes"
        self.deciding = mode == "auto" and self.cores > 1
        self.moving = False
        """Measured GIL-bound: tasks move to processes once the workers are up."""
        self.boot_due = False
        """Moving, and run on threads ``BOOT_RENT_S`` past the probe: worth a boot."""
        self.note = "threads (measuring)" if self.deciding else mode
        if mode == "auto" and not self.deciding:
            self.note = "threads (one core: processes would not help)"
        self._wall = self._cpu = self._idle = 0.0
        self._measured = ""
        self._last: tuple[float, float, float] | None = None

    def observe(self, running: int, wall: float, cpu: float, idle: float) -> None:
        """One reading: ``running`` tasks of the operator in flight, the wall
        clock, the process's CPU time and the machine's idle CPU time (all
        cores). Time between two readings taken while every core had a task
        counts towards the probe."""
        if not self.measuring:
            return
        if running < self.cores:
            self._last = None
            return
        if self._last is not None:
            last_wall, last_cpu, last_idle = self._last
            self._wall += wall - last_wall
            self._cpu += cpu - last_cpu
            self._idle += idle - last_idle
        self._last = (wall, cpu, idle)
        if self.deciding and self._wall >= PROBE_S:
            self._decide()
        elif self.moving and self._wall >= PROBE_S + BOOT_RENT_S:
            self.boot_due = True

    @property
    def measuring(self) -> bool:
        """Deciding, or renting threads until a boot is due: readings count."""
        return self.deciding or (self.moving and not self.boot_due)

    def _decide(self) -> None:
        self.deciding = False
        busy, idle = self._cpu / self._wall, self._idle / self._wall
        gil_bound = busy < MIN_BUSY * self.cores and idle >= MIN_IDLE * self.cores
        self.moving = gil_bound
        self._measured = (
            f"measured on threads: {busy:.2f} of {self.cores} cores busy, {idle:.2f} idle"
        )
        where = "threads until the workers are up, then processes" if gil_bound else "threads"
        self.note = f"{where} ({self._measured})"

    def moved(self) -> None:
        """The workers are up: the remaining tasks run there."""
        self.moving = self.in_driver = self.boot_due = False
        self.note = f"processes ({self._measured})"


__all__ = ["BOOT_RENT_S", "MIN_BUSY", "MIN_IDLE", "MODES", "PROBE_S", "Placement", "idle_cpu_s"]
