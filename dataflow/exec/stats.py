"""Execution statistics, built by observing executor events.

``ExecutorObserver`` is the event interface (progress bars, traces and stall
warnings subscribe the same way); ``StatsCollector`` is the observer behind
``OutputStream.stats()``. Scheduling never reads any of it.

>>> print(stream.stats())  # doctest: +SKIP
operator               tasks  rows in  rows out ...
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dataflow.exec.metering import StepInfo, StepStats, is_step_counter, step_stats

if TYPE_CHECKING:
    from dataflow.exec.interfaces import PhysicalOperator
    from dataflow.exec.stall import StallReport
    from dataflow.exec.trace import Timeline
    from runtime.backends.base import StoreStats, TaskFuture, TaskResult


class ExecutorObserver:
    """Hooks the executor calls from its thread; every default does nothing.
    Observers must be quick: they run inside the scheduling loop."""

    def on_start(self, ops: list[PhysicalOperator]) -> None: ...

    def on_task_start(self, op: PhysicalOperator, future: TaskFuture, now: float) -> None: ...

    def on_task_done(self, op: PhysicalOperator, result: TaskResult) -> None: ...

    def on_task_failed(self, op: PhysicalOperator, error: BaseException) -> None:
        """A task failed for good (after its retries); the run stops unless the
        block is skipped (then ``on_block_error`` follows)."""

    def on_block_error(self, op: PhysicalOperator, error: BaseException) -> None:
        """A failing block was skipped (``DataContext.max_errored_blocks``)."""

    def on_tick(self, now: float, held_back: list[PhysicalOperator], rss_bytes: int) -> None:
        """Once per loop turn; ``held_back`` operators were vetoed by backpressure."""

    def on_finish(self, store: StoreStats | None) -> None: ...


@dataclass
class OperatorStats:
    """What one operator did."""

    name: str
    tasks: int = 0
    rows_in: int = 0
    bytes_in: int = 0
    rows_out: int = 0
    bytes_out: int = 0
    cpu_s: float = 0.0
    task_wall_s: float = 0.0
    first_start: float = math.inf
    last_end: float = 0.0
    block_bytes_min: int = 0
    block_bytes_max: int = 0
    blocks_out: int = 0
    backpressure_s: float = 0.0
    errored_blocks: int = 0
    failed_tasks: int = 0
    retries: int = 0
    """Task attempts repeated after a worker died (the task then succeeded)."""
    counters: dict[str, float] = field(default_factory=dict)
    task_spans: list[tuple[float, float]] = field(default_factory=list)
    """(start_ts, end_ts) of every task, wall-clock seconds, for overlap analysis."""
    actor_spans: list[tuple[float, float]] = field(default_factory=list)
    """(start_ts, stop_ts) of every actor of an actor pool, wall-clock seconds."""
    step_infos: tuple[StepInfo, ...] = ()
    """The logical steps the operator's tasks run (``PhysicalOperator.steps``)."""
    placement: str = ""
    """Where its tasks ran: driver threads or worker processes, and why."""

    @property
    def steps(self) -> list[StepStats]:
        """One ``StepStats`` per logical step (read, each UDF, write) of this
        operator, from its tasks' counters; [] for single-step operators."""
        return step_stats(self.step_infos, self.counters, self.rows_in)

    @property
    def reads(self) -> bool:
        return bool(self.step_infos) and self.step_infos[0].kind == "read"

    @property
    def writes(self) -> bool:
        return bool(self.step_infos) and self.step_infos[-1].kind == "write"

    @property
    def wall_s(self) -> float:
        """From the first task's start to the last task's end."""
        return max(0.0, self.last_end - self.first_start) if self.tasks else 0.0

    @property
    def actor_utilisation(self) -> float | None:
        """Busy time over lifetime of an actor pool's actors (None for task pools);
        the lifetime counts from the start request, so slow constructors lower it."""
        alive = sum(stop - start for start, stop in self.actor_spans)
        return min(1.0, self.task_wall_s / alive) if alive > 0 else None

    @property
    def block_bytes_mean(self) -> float:
        return self.bytes_out / self.blocks_out if self.blocks_out else 0.0


@dataclass
class DatasetStats:
    """Per-operator stats of one execution, plus store and memory peaks.

    ``str(stats)`` is a readable table.
    """

    operators: list[OperatorStats] = field(default_factory=list)
    wall_s: float = 0.0
    store_peak_bytes: int = 0
    store_spilled_bytes: int = 0
    """Bytes this run's blocks spilled to disk (they did not fit in the store)."""
    store_restored_bytes: int = 0
    """Bytes of spilled blocks read back from disk during this run."""
    spill_write_s: float = 0.0
    """Seconds spent writing spill files during this run."""
    spill_dir: str = ""
    """Where spilled blocks went (the session's directory under ``DataContext.spill_path``)."""
    peak_rss_bytes: int = 0
    timeline: Timeline | None = None
    """Sampled rows out, store and RSS over time (``exec/trace.py``; ``plot_stats`` draws it)."""
    stalls: list[StallReport] = field(default_factory=list)
    """Stalls seen during the run (``exec/stall.py``), also printed when they happen."""
    iterator_wait_s: float = 0.0
    """Time the consumer's batch iterator waited for the next batch."""
    iterator_user_s: float = 0.0
    """Time the consumer spent in its own code between two batches."""
    share: str = ""
    """The share of a distributed epoch this run fed ("rank 0 of 2: 500 rows"), if any."""
    dropped_rows: int = 0
    """Rows of the epoch that no rank got, so that every rank has as many
    (``ddp_remainder="drop"``; ``dataflow.distributed``)."""
    padded_rows: int = 0
    """Rows given twice, so that every rank has as many (``ddp_remainder="pad"``)."""

    @property
    def spill_write_bytes_per_s(self) -> float:
        """The disk's write bandwidth while spilling (bytes spilled over seconds writing)."""
        return self.store_spilled_bytes / self.spill_write_s if self.spill_write_s > 0 else 0.0

    @property
    def spill_bytes_per_s(self) -> float:
        """Disk bandwidth the run used for spill on average: bytes spilled plus
        restored over the run's wall time."""
        moved = self.store_spilled_bytes + self.store_restored_bytes
        return moved / self.wall_s if self.wall_s > 0 else 0.0

    def spill_line(self) -> str:
        """One line on spill: bytes, bandwidth and directory ("" when nothing spilled)."""
        if not (self.store_spilled_bytes or self.store_restored_bytes):
            return ""
        mib = 1024 * 1024
        return (
            f"spill: wrote {self.store_spilled_bytes / mib:.1f} MiB "
            f"({self.spill_write_bytes_per_s / mib:.0f} MiB/s while writing), restored "
            f"{self.store_restored_bytes / mib:.1f} MiB; "
            f"{self.spill_bytes_per_s / mib:.1f} MiB/s of disk over the run; in {self.spill_dir}"
        )

    def operator(self, name: str) -> OperatorStats:
        """The stats of the operator called ``name`` (KeyError lists the names)."""
        for op in self.operators:
            if op.name == name:
                return op
        known = ", ".join(o.name for o in self.operators)
        raise KeyError(f"no operator {name!r} in these stats; operators: {known}")

    def step(self, name: str) -> StepStats:
        """The stats of the step called ``name`` inside any operator, e.g.
        ``stats.step("map_batches(normalize)")`` of a fused read->map->write."""
        for op in self.operators:
            for step in op.steps:
                if step.name == name:
                    return step
        known = ", ".join(s.name for o in self.operators for s in o.steps)
        raise KeyError(f"no step {name!r} in these stats; steps: {known or '(none)'}")

    def __str__(self) -> str:
        # Fused stage names (read->map->filter->write) are shown whole.
        width = max([40] + [len(o.name) for o in self.operators])
        head = (
            f"{'operator':<{width}} {'tasks':>6} {'rows in':>10} {'rows out':>10} {'MiB out':>9} "
            f"{'wall s':>8} {'cpu s':>8} {'block MiB min/mean/max':>24} {'backpr s':>8}"
        )
        mib = 1024 * 1024
        lines = [head, "-" * len(head)]
        has_steps = False
        for o in self.operators:
            blocks = (
                f"{o.block_bytes_min / mib:.2f}/{o.block_bytes_mean / mib:.2f}/"
                f"{o.block_bytes_max / mib:.2f}"
            )
            # A read has no rows in; a write's rows out are its files' records.
            rows_in = "-" if o.reads and not o.rows_in else o.rows_in
            rows_out = "-" if o.writes else o.rows_out
            mib_out = "-" if o.writes else f"{o.bytes_out / mib:.1f}"
            lines.append(
                f"{o.name:<{width}} {o.tasks:>6} {rows_in:>10} {rows_out:>10} "
                f"{mib_out:>9} {o.wall_s:>8.3f} {o.cpu_s:>8.3f} {blocks:>24} "
                f"{o.backpressure_s:>8.3f}"
            )
            steps = o.steps
            if len(steps) > 1 or o.reads or o.writes:
                has_steps = True
                lines.extend(_step_line(s, width) for s in steps)
            extra = {k: v for k, v in o.counters.items() if v and not is_step_counter(k)}
            if o.actor_spans:
                extra["actors"] = len(o.actor_spans)
                extra["actor_utilisation"] = round(o.actor_utilisation or 0.0, 3)
            if o.errored_blocks:
                extra["errored_blocks"] = o.errored_blocks
            if o.failed_tasks:
                extra["failed_tasks"] = o.failed_tasks
            if o.retries:
                extra["retries"] = o.retries
            if extra:
                lines.append("    " + ", ".join(f"{k}={v:g}" for k, v in sorted(extra.items())))
            if o.placement:
                lines.append(f"    ran on {o.placement}")
        if has_steps:
            lines.append(
                "(indented: the steps inside an operator; their wall s and cpu s are "
                "the time inside the step, summed over its tasks)"
            )
        lines.append(
            f"total wall {self.wall_s:.3f} s; store peak {self.store_peak_bytes / mib:.1f} MiB, "
            f"spilled {self.store_spilled_bytes / mib:.1f} MiB; peak RSS "
            f"{self.peak_rss_bytes / mib:.1f} MiB"
        )
        if self.spill_line():
            lines.append(self.spill_line())
        if self.iterator_wait_s or self.iterator_user_s:
            lines.append(
                f"iterator: waited {self.iterator_wait_s:.3f} s for batches, "
                f"{self.iterator_user_s:.3f} s in user code"
            )
        if self.share:
            lines.append(
                f"share: {self.share}; {self.dropped_rows} rows of the epoch dropped, "
                f"{self.padded_rows} padded"
            )
        lines.extend(f"stall: {report}" for report in self.stalls)
        return "\n".join(lines)


def _step_line(s: StepStats, width: int) -> str:
    """One indented row of a step, in its own units: rows and files read, rows
    and bytes written."""
    mib = 1024 * 1024
    name = f"  {s.name}"
    if s.kind == "read":
        rows_in, what = "-", f"read {s.rows_out:,} rows, {s.files:,} files"
    elif s.kind == "write":
        rows_in = s.rows_in
        what = f"wrote {s.rows_written:,} rows, {s.files:,} files, {s.bytes_written / mib:.1f} MiB"
    else:
        rows_in, what = s.rows_in, ""
    rows_out, mib_out = (
        ("-", "-") if s.kind == "write" else (s.rows_out, f"{s.bytes_out / mib:.1f}")
    )
    line = (
        f"{name:<{width}} {'':>6} {rows_in:>10} {rows_out:>10} {mib_out:>9} "
        f"{s.wall_s:>8.3f} {s.cpu_s:>8.3f}"
    )
    return f"{line}   {what}" if what else line


class StatsCollector(ExecutorObserver):
    """Builds a ``DatasetStats`` from executor events."""

    def __init__(self) -> None:
        self._ops: list[PhysicalOperator] = []
        self._by_op: dict[int, OperatorStats] = {}
        self._last_tick: float | None = None
        self._start = 0.0
        self.stats = DatasetStats()
        self.store_at_start: StoreStats | None = None
        """The store's counters when the run started (its spill counters are the session's)."""

    def on_start(self, ops: list[PhysicalOperator]) -> None:
        self._ops = list(ops)
        self._by_op = {id(op): OperatorStats(op.name, step_infos=op.steps()) for op in ops}
        self.stats.operators = [self._by_op[id(op)] for op in ops]
        # Total wall spans on_start..on_finish: tasks launched in the first loop
        # turn and collected in the last one fall inside it.
        self._start = time.monotonic()

    def on_task_done(self, op: PhysicalOperator, result: TaskResult) -> None:
        s = self._by_op[id(op)]
        s.tasks += 1
        s.cpu_s += result.cpu_s
        s.task_wall_s += result.wall_s
        s.first_start = min(s.first_start, result.start_ts)
        s.last_end = max(s.last_end, result.end_ts)
        s.task_spans.append((result.start_ts, result.end_ts))
        if result.attempts > 1:
            s.retries += result.attempts - 1
        for ref in result.refs:
            s.block_bytes_min = (
                ref.nbytes if not s.blocks_out else min(s.block_bytes_min, ref.nbytes)
            )
            s.block_bytes_max = max(s.block_bytes_max, ref.nbytes)
            s.blocks_out += 1
        for k, v in result.counters.items():
            s.counters[k] = s.counters.get(k, 0.0) + v

    def on_task_failed(self, op: PhysicalOperator, error: BaseException) -> None:
        self._by_op[id(op)].failed_tasks += 1

    def on_block_error(self, op: PhysicalOperator, error: BaseException) -> None:
        self._by_op[id(op)].errored_blocks += 1

    def on_tick(self, now: float, held_back: list[PhysicalOperator], rss_bytes: int) -> None:
        if self._last_tick is not None:
            dt = now - self._last_tick
            for op in held_back:
                self._by_op[id(op)].backpressure_s += dt
        self._last_tick = now
        self.stats.peak_rss_bytes = max(self.stats.peak_rss_bytes, rss_bytes)

    def on_finish(self, store: StoreStats | None) -> None:
        for op in self._ops:
            s, m = self._by_op[id(op)], op.metrics
            s.rows_in, s.bytes_in = m.rows_in, m.bytes_in
            s.rows_out, s.bytes_out = m.rows_out, m.bytes_out
            s.actor_spans = list(m.actor_spans)
            s.placement = m.placement
            if not s.blocks_out and m.bundles_out:
                s.blocks_out = m.bundles_out
        self.stats.wall_s = max(0.0, time.monotonic() - self._start)
        if store is not None:
            before = self.store_at_start
            self.stats.store_peak_bytes = store.peak_bytes
            self.stats.store_spilled_bytes = store.spilled_bytes - (
                before.spilled_bytes if before else 0
            )
            self.stats.store_restored_bytes = store.restored_bytes - (
                before.restored_bytes if before else 0
            )
            self.stats.spill_write_s = store.spill_write_s - (
                before.spill_write_s if before else 0.0
            )
            self.stats.spill_dir = store.spill_dir
