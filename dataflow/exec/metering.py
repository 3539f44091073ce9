"""Per-step stats inside a fused map task: each logical step of the chain
(read, every UDF, filters and projections, the write) gets its own wall and CPU
time, rows and bytes, although the steps run as one task with no boundary
between them.

Worker side: ``ChainMeter.wrap(k, it)`` sits on the output of step ``k``. A
chain is nested generators, so control moves between steps only through these
wrappers: each entry and each exit reads the wall clock once and charges the
time since the previous reading (anywhere in the chain) to the step that ran
in between. That is exclusive time, not time including the steps upstream,
and two ``perf_counter`` reads per batch per step (~0.1 us each).

Reading a thread's CPU clock is a system call (~1-3 us) and ``pa.Table.nbytes``
gives the GIL away (a few us alone, up to the 5 ms switch interval on a thread
that contends for it), both too dear for every batch of a task that takes
100 us. So the CPU clock is read at an entry or exit once ``SAMPLE_EVERY_S`` passed since
the last reading, and the CPU of each window is shared among the steps by their
wall time in it: exact for any stretch of one step longer than the window (a
batch of a slow UDF, a slow read), an estimate for short ones; a last window
shorter than that counts its wall time as CPU. A step's bytes are measured exactly once
it ran ``BYTES_EVERY_S`` since its last measurement (and on its first batch in
this process); other batches count their rows times the last measured bytes
per row.

At the end of the task the meter reports through the task's counters channel
(``runtime.task.current_task().add``) under ``step.<k>.<field>``; the driver's
``StatsCollector`` sums them per operator and ``step_stats`` turns the sums
back into one ``StepStats`` per step.

>>> meter = ChainMeter(ChainState(2))
>>> out = list(meter.wrap(1, meter.wrap(0, iter([pa.table({"x": [1, 2]})]))))
>>> counters = {}
>>> meter.report(counters)
>>> counters["step.1.rows"]
2
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

SAMPLE_EVERY_S = 0.001
"""Task time between two reads of the CPU clock."""

BYTES_EVERY_S = 0.05
"""A step's time between two exact byte counts of its output. Each count gives
the GIL away: at one per millisecond they took 5 % of the busy samples of the
``overhead`` benchmark (py-spy), at this rate under 0.3 %."""

STEP_PREFIX = "step."
FIELDS = ("wall_s", "cpu_s", "rows", "bytes")
READ_FILES = "read.files"
WRITE_FILES = "write.files"
WRITE_ROWS = "write.rows"
WRITE_BYTES = "write.bytes"


@dataclass(frozen=True)
class StepInfo:
    """One logical step of an operator: its name and what it is (``read``,
    ``write``, ``udf`` for user code, ``builtin`` for expressions)."""

    name: str
    kind: str


@dataclass
class StepStats:
    """What one step of a (fused) operator did, summed over its tasks.

    ``wall_s`` and ``cpu_s`` are inside the step only (not the steps upstream of
    it, nor the framework's own work: store writes, batching between steps).
    """

    name: str
    kind: str
    rows_in: int = 0
    rows_out: int = 0
    bytes_out: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    files: int = 0
    """Files read (read step) or written (write step)."""
    rows_written: int = 0
    bytes_written: int = 0
    """Bytes of the written files (on disk, after encoding and compression)."""


class ChainState:
    """What a chain's meters keep between the tasks of one process: per step, the
    last measured output bytes per row and the step's time since that measurement;
    whether the last task was long (then the next one reads the CPU clock at its
    start); the counter names, built once."""

    __slots__ = ("bytes_per_row", "since", "long", "keys")

    def __init__(self, steps: int) -> None:
        self.bytes_per_row: list[float | None] = [None] * steps
        self.since = [0.0] * steps
        self.long = True
        self.keys = [tuple(f"{STEP_PREFIX}{i}.{name}" for name in FIELDS) for i in range(steps)]


class ChainMeter:
    """Times the steps of one task's chain; see the module docstring."""

    __slots__ = ("_n", "wall", "cpu", "rows", "nbytes", "_start", "_cpu_due", "_cpu_last")
    __slots__ += ("_snap", "_state", "_cur", "_last")

    def __init__(self, state: ChainState) -> None:
        steps = self._n = len(state.since)
        # Slot ``steps`` is the framework around the chain (merging, store writes).
        self.wall = [0.0] * (steps + 1)
        self.cpu = [0.0] * (steps + 1)
        self.rows = [0] * steps
        self.nbytes = [0] * steps
        self._state = state
        self._snap = [0.0] * (steps + 1)  # ``wall`` at the last CPU read
        self._cur = steps  # who runs now
        self._start = self._last = time.perf_counter()
        self._cpu_due = self._start + SAMPLE_EVERY_S
        # A process whose tasks are short reads the CPU clock only once a task
        # has run for SAMPLE_EVERY_S (its time until then counts as CPU).
        self._cpu_last = time.thread_time() if state.long else None

    def wrap(self, k: int, it: Iterator[pa.Table]) -> Iterator[pa.Table]:
        """``it`` (the output of step ``k``) with step ``k``'s time and output counted.

        On entry (the caller asks for the next table) the time since the last
        reading is the caller's; on exit it is step k's: inner wrappers gave
        control back to k when they returned."""
        clock, wall, state, every = time.perf_counter, self.wall, self._state, BYTES_EVERY_S
        rows = unmeasured = measured = 0
        # The next exact byte count once step k's time passes ``due`` (at once
        # when this process has none yet).
        due = every - state.since[k] if state.bytes_per_row[k] is not None else -1.0
        caller = self._cur
        now = clock()
        wall[caller] += now - self._last
        self._last, self._cur = now, k
        if now >= self._cpu_due:
            self._sample_cpu(now)
        try:
            for table in it:
                now = clock()
                wall[k] += now - self._last
                self._last, self._cur = now, caller
                if now >= self._cpu_due:
                    self._sample_cpu(now)
                n = table.num_rows
                rows += n
                if wall[k] >= due:
                    nbytes = table.nbytes
                    measured += nbytes
                    due = wall[k] + every
                    if n:
                        state.bytes_per_row[k] = nbytes / n
                else:
                    unmeasured += n
                yield table
                caller = self._cur
                now = clock()
                wall[caller] += now - self._last
                self._last, self._cur = now, k
                if now >= self._cpu_due:
                    self._sample_cpu(now)
            now = clock()
            wall[k] += now - self._last
            self._last, self._cur = now, caller
            if now >= self._cpu_due:
                self._sample_cpu(now)
        finally:
            self.rows[k] = rows
            self.nbytes[k] = measured + round(unmeasured * (state.bytes_per_row[k] or 0.0))
            state.since[k] = max(0.0, every - (due - wall[k]))

    def _sample_cpu(self, now: float) -> None:
        cpu = time.thread_time()
        pending = [w - s for w, s in zip(self.wall, self._snap)]
        if self._cpu_last is not None:
            # The window's CPU, shared by wall time among the steps and the framework.
            total = sum(pending)
            if total > 0:
                share = (cpu - self._cpu_last) / total
                for i, t in enumerate(pending):
                    self.cpu[i] += t * share
        else:  # no reading at the start (short tasks so far): the window counts as CPU
            for i, t in enumerate(pending):
                self.cpu[i] += t
        self._cpu_last, self._cpu_due = cpu, now + SAMPLE_EVERY_S
        self._snap = list(self.wall)

    def report(self, counters: dict[str, float]) -> None:
        """Add each step's counters to ``counters`` (the task's channel:
        ``runtime.task.current_task().counters``)."""
        state = self._state
        state.long = time.perf_counter() - self._start >= SAMPLE_EVERY_S
        get, wall, snap, cpu = counters.get, self.wall, self._snap, self.cpu
        for i, (k_wall, k_cpu, k_rows, k_bytes) in enumerate(state.keys):
            counters[k_wall] = get(k_wall, 0.0) + wall[i]
            # The window since the last CPU read is under SAMPLE_EVERY_S: too short
            # to be worth a read; its wall time counts as CPU.
            counters[k_cpu] = get(k_cpu, 0.0) + cpu[i] + wall[i] - snap[i]
            counters[k_rows] = get(k_rows, 0) + self.rows[i]
            counters[k_bytes] = get(k_bytes, 0) + self.nbytes[i]


def step_stats(
    steps: Sequence[StepInfo], counters: Mapping[str, float], rows_in: int
) -> list[StepStats]:
    """The per-step stats of an operator from its summed task ``counters``;
    ``rows_in`` is the operator's input rows (the first non-read step's input).

    >>> step_stats([StepInfo("read_x", "read")], {"step.0.rows": 5.0, "read.files": 2.0}, 0)[0].files
    2
    """
    out: list[StepStats] = []
    upstream_rows = rows_in
    for i, info in enumerate(steps):
        prefix = f"{STEP_PREFIX}{i}."
        s = StepStats(
            info.name,
            info.kind,
            rows_in=0 if info.kind == "read" else upstream_rows,
            rows_out=int(counters.get(prefix + "rows", 0)),
            bytes_out=int(counters.get(prefix + "bytes", 0)),
            wall_s=counters.get(prefix + "wall_s", 0.0),
            cpu_s=counters.get(prefix + "cpu_s", 0.0),
        )
        if info.kind == "read":
            s.files = int(counters.get(READ_FILES, 0))
        elif info.kind == "write":
            s.files = int(counters.get(WRITE_FILES, 0))
            s.rows_written = int(counters.get(WRITE_ROWS, 0))
            s.bytes_written = int(counters.get(WRITE_BYTES, 0))
            # A write takes every row it gets: also the first step of an operator
            # whose own rows in are not the write's (a groupby or join with the
            # write joined to it).
            s.rows_in = s.rows_written
        upstream_rows = s.rows_out
        out.append(s)
    return out


def is_step_counter(name: str) -> bool:
    """Counters that ``step_stats`` reads (shown in the step rows, not as extras)."""
    return name.startswith(STEP_PREFIX) or name in (
        READ_FILES,
        WRITE_FILES,
        WRITE_ROWS,
        WRITE_BYTES,
    )
