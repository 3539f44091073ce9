"""Hang diagnosis: say which operator is stuck, and why, when nothing moves.

``StallDetector`` watches a progress token (rows and bundles in and out,
tasks launched and finished, per operator). When it has not changed for
``DataContext.stall_warning_s`` seconds, the detector diagnoses the run once
per stall, logs the report as a warning on the ``dataflow`` logger (printed
to stderr when logging is not configured) and appends it to
``DatasetStats.stalls`` (shown by ``ds.stats()``). The diagnosis, first match
wins:

1. user code running long: a task has been running the whole stall; the report
   names the operator, the task's ordinal (its block) and, where the backend can
   (``task_stack``), the worker's Python stack dumped by ``faulthandler``;
2. backpressured by a consumer that is not reading: nothing runs and work is
   held back (backpressure policies veto only while the consumer has output
   to take, see backpressure.py) or the last operator holds output the
   consumer's queue has no room for; the report lists what each operator holds;
3. resources it can never get: the next task needs more than the backend has
   (or waits for resources other operators hold);
4. otherwise, every operator's state (queued, running, done).

>>> ctx = df.DataContext.get_current()  # doctest: +SKIP
>>> ctx.stall_warning_s = 10            # warn after 10 s without progress
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dataflow.exec.stats import ExecutorObserver

if TYPE_CHECKING:
    from dataflow.exec.interfaces import PhysicalOperator
    from dataflow.exec.stats import DatasetStats
    from runtime.backends.base import Backend, TaskFuture, TaskResult

log = logging.getLogger("dataflow")

MiB = 1024 * 1024
_STACK_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class StallReport:
    """One stall: which operator, why (``reason`` is one of ``user_code``,
    ``consumer``, ``resources``, ``unknown``), and worker stacks."""

    after_s: float
    wall_ts: float
    operator: str
    reason: str
    detail: str
    stacks: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"no progress for {self.after_s:.0f} s: {self.operator}: {self.detail}"
        for worker, stack in self.stacks.items():
            body = "\n".join("    " + line for line in stack.strip().splitlines())
            text += f"\n  stack of the worker or thread {worker}:\n{body}"
        return text


class StallDetector(ExecutorObserver):
    """Reports a stall after ``stall_s`` seconds without progress (0 disables it).

    ``backend`` answers resource questions and dumps the stack of whatever
    runs a task (``Backend.task_stack``; None where it cannot).
    """

    def __init__(self, stall_s: float, stats: DatasetStats, backend: Backend) -> None:
        if stall_s < 0:
            raise ValueError(
                f"DataContext.stall_warning_s must be >= 0 (0 disables stall warnings), got {stall_s}"
            )
        self.stall_s = stall_s
        self._stats = stats
        self._backend = backend
        self._ops: list[PhysicalOperator] = []
        self._started: dict[int, tuple[PhysicalOperator, int, float]] = {}
        """id(future) -> (operator, task ordinal, dispatch time) of tasks in flight."""
        self._launched: dict[int, int] = {}
        self._done = 0
        self._token: tuple[int, ...] = ()
        self._last_progress = 0.0
        self._next_check = 0.0
        self._reported = False

    def on_start(self, ops: list[PhysicalOperator]) -> None:
        self._ops = list(ops)
        self._launched = {id(op): 0 for op in ops}
        self._last_progress = time.monotonic()

    def on_task_start(self, op: PhysicalOperator, future: TaskFuture, now: float) -> None:
        ordinal = self._launched[id(op)]
        self._launched[id(op)] = ordinal + 1
        self._started[id(future)] = (op, ordinal, now)

    def on_task_done(self, op: PhysicalOperator, result: TaskResult) -> None:
        self._done += 1

    def on_tick(self, now: float, held_back: list[PhysicalOperator], rss_bytes: int) -> None:
        if not self.stall_s or now < self._next_check:
            return
        self._next_check = now + min(1.0, self.stall_s / 4)
        token = self._progress_token()
        if token != self._token:
            self._token, self._last_progress, self._reported = token, now, False
            self._forget_finished()
            return
        if self._reported or now - self._last_progress < self.stall_s:
            return
        self._reported = True
        report = self.diagnose(now, held_back)
        self._stats.stalls.append(report)
        log.warning("dataflow: %s", report)

    def _progress_token(self) -> tuple[int, ...]:
        token = [self._done]
        for op in self._ops:
            m = op.metrics
            token += [m.rows_in, m.bundles_out, m.tasks_launched, self._launched[id(op)]]
        return tuple(token)

    def _forget_finished(self) -> None:
        live = {id(f) for op in self._ops for f in op.active_tasks()}
        for key in [k for k in self._started if k not in live]:
            del self._started[key]

    # -- diagnosis ---------------------------------------------------------------
    def diagnose(self, now: float, held_back: list[PhysicalOperator]) -> StallReport:
        """The report for a stall seen at ``now`` (monotonic), first cause first."""
        after = now - self._last_progress
        return (
            self._long_task(after)
            or self._consumer(after, held_back)
            or self._resources(after)
            or self._report(after, "(every operator)", "unknown", self._states())
        )

    def _report(
        self, after: float, op: str, reason: str, detail: str, stacks: dict[str, str] | None = None
    ) -> StallReport:
        return StallReport(after, time.time(), op, reason, detail, stacks or {})

    def _long_task(self, after: float) -> StallReport | None:
        running = [
            (self._started[id(f)], f)
            for op in self._ops
            for f in op.active_tasks()
            if id(f) in self._started and not f.done()
        ]
        if not running:
            return None
        (op, ordinal, since), fut = min(running, key=lambda item: item[0][2])
        now = time.monotonic()
        stacks: dict[str, str] = {}
        stack = self._stack(fut)
        if stack:
            stacks[f"running {op.name} task #{ordinal}"] = stack
        others = len(running) - 1
        detail = (
            f"user code running long: task #{ordinal} (its input block) has been running for "
            f"{now - since:.0f} s"
            + (f"; {others} more task(s) running" if others else "")
            + ("" if stack else "; this backend cannot dump worker stacks")
        )
        return self._report(after, op.name, "user_code", detail, stacks)

    def _stack(self, fut: TaskFuture) -> str | None:
        try:
            return self._backend.task_stack(fut, _STACK_TIMEOUT_S)
        except Exception as e:  # diagnosis must never break the pipeline
            return f"(could not dump the stack: {e})"

    def _consumer(self, after: float, held_back: list[PhysicalOperator]) -> StallReport | None:
        sink = self._ops[-1] if self._ops else None
        if sink is None or not (held_back or sink.has_next()):
            return None
        holding = ", ".join(
            f"{o.name}: {o.memory_usage() / MiB:.1f} MiB" for o in self._ops if o.memory_usage()
        )
        detail = (
            "backpressured by a consumer that is not reading: finished output waits for the "
            f"iterator (store bytes held: {holding or 'none in operators'}); keep iterating, "
            "or close/break out of the iterator to stop the pipeline"
        )
        return self._report(after, (held_back or [sink])[-1].name, "consumer", detail)

    def _resources(self, after: float) -> StallReport | None:
        total = self._backend.total_resources()
        for op in self._ops:
            cost = op.dispatch_cost()
            if cost is None:
                continue
            if not cost.fits_in(total):
                detail = (
                    f"waiting on resources it can never get: its next task needs {cost!r}, "
                    f"the backend has {total!r} in all; lower num_cpus/num_gpus/resources of "
                    "this operator or start the backend with more"
                )
                return self._report(after, op.name, "resources", detail)
            holders = ", ".join(
                f"{o.name}: {o.resources_in_use()!r}"
                for o in self._ops
                if o is not op and o.num_active_tasks()
            )
            detail = (
                f"waiting for {cost!r} that other operators hold ({holders or 'none running'}); "
                f"available now: {self._backend.available_resources()!r}"
            )
            return self._report(after, op.name, "resources", detail)
        return None

    def _states(self) -> str:
        parts = []
        for op in self._ops:
            m = op.metrics
            state = "done" if op.completed() else f"{op.num_active_tasks()} running"
            parts.append(
                f"{op.name} [{state}, {m.queued_bytes / MiB:.1f} MiB queued, {m.rows_out} rows out]"
            )
        return "no operator can run; states: " + "; ".join(parts)
