"""The timeline of a run: sampled time series and the Chrome trace.

``TimelineRecorder`` samples, a few times a second, each operator's rows out,
running tasks and queued bytes plus the store's and the process tree's memory
into ``DatasetStats.timeline`` (what ``dataflow.plot_stats`` draws).
``ChromeTrace`` writes ``DataContext.trace_path``: one complete event per task
on its worker's track, block errors and stalls as instant events, and the
sampled series as counter tracks, in the Trace Event Format that Perfetto
(ui.perfetto.dev) and chrome://tracing load.

>>> ctx = df.DataContext.get_current()  # doctest: +SKIP
>>> ctx.trace_path = "run.trace.json"   # then run any pipeline; open the file in Perfetto
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dataflow.exec.stats import ExecutorObserver

if TYPE_CHECKING:
    from dataflow.exec.interfaces import PhysicalOperator
    from dataflow.exec.stats import DatasetStats
    from runtime.backends.base import Backend, StoreStats, TaskResult

log = logging.getLogger(__name__)

SAMPLE_EVERY_S = 0.2
"""Sampling period of the timeline: fine enough for a per-second rate plot,
coarse enough that sampling costs nothing next to a loop turn."""
_DRIVER_PID = 0
_WORKERS_PID = 1


@dataclass
class Timeline:
    """Time series of one run, one sample per row; ``t`` is seconds since the
    executor started and ``start_wall`` that start in ``time.time()`` terms (task
    spans in ``OperatorStats.task_spans`` use the same clock).

    ``rows_out[i][k]`` is operator ``ops[i]``'s cumulative rows out at ``t[k]``.
    """

    ops: list[str] = field(default_factory=list)
    start_wall: float = 0.0
    t: list[float] = field(default_factory=list)
    rows_out: list[list[int]] = field(default_factory=list)
    running_tasks: list[list[int]] = field(default_factory=list)
    queued_bytes: list[list[int]] = field(default_factory=list)
    store_bytes: list[int] = field(default_factory=list)
    rss_bytes: list[int] = field(default_factory=list)

    def rows_per_s(self, i: int, window_s: float = 1.0) -> list[float]:
        """Operator ``i``'s output rate at each sample, over the last ``window_s``
        seconds (rows arrive a block at a time: a window smooths the steps).

        >>> Timeline(["op"], 0.0, [0.0, 1.0, 2.0], [[0, 10, 30]]).rows_per_s(0)
        [0.0, 10.0, 20.0]
        """
        rows, t = self.rows_out[i], self.t
        rates, j = [0.0] * len(t), 0
        for k in range(1, len(t)):
            while j < k - 1 and t[k] - t[j + 1] >= window_s:
                j += 1
            dt = t[k] - t[j]
            rates[k] = (rows[k] - rows[j]) / dt if dt > 0 else 0.0
        return rates


class TimelineRecorder(ExecutorObserver):
    """Fills ``stats.timeline`` with a sample every ``every_s`` seconds and a last
    one when the run ends (``backend`` gives the store's usage)."""

    def __init__(self, stats: DatasetStats, backend: Backend, every_s: float = SAMPLE_EVERY_S):
        self._stats = stats
        self._backend = backend
        self._every_s = every_s
        self._ops: list[PhysicalOperator] = []
        self._mono0 = 0.0
        self._next = 0.0
        self._rss = 0
        self.timeline = Timeline()

    def on_start(self, ops: list[PhysicalOperator]) -> None:
        self._ops = list(ops)
        self._mono0 = time.monotonic()
        self.timeline = Timeline(
            ops=[op.name for op in ops],
            start_wall=time.time(),
            rows_out=[[] for _ in ops],
            running_tasks=[[] for _ in ops],
            queued_bytes=[[] for _ in ops],
        )
        self._stats.timeline = self.timeline
        self._next = self._mono0  # the first loop turn samples (it has the first RSS)

    def on_tick(self, now: float, held_back: list[PhysicalOperator], rss_bytes: int) -> None:
        self._rss = rss_bytes
        if now >= self._next:
            self._sample(now, self._store_used())

    def on_finish(self, store: StoreStats | None) -> None:
        self._sample(time.monotonic(), store.used_bytes if store is not None else 0)

    def _store_used(self) -> int:
        try:
            return self._backend.store_stats().used_bytes
        except Exception:  # a backend shutting down under us: the series just ends
            return 0

    def _sample(self, now: float, store_used: int) -> None:
        tl = self.timeline
        tl.t.append(max(0.0, now - self._mono0))
        for i, op in enumerate(self._ops):
            tl.rows_out[i].append(op.metrics.rows_out)
            tl.running_tasks[i].append(op.num_active_tasks())
            tl.queued_bytes[i].append(op.metrics.queued_bytes)
        tl.store_bytes.append(store_used)
        tl.rss_bytes.append(self._rss)
        self._next = now + self._every_s


class ChromeTrace(ExecutorObserver):
    """Writes a Chrome trace of the run to ``path`` when it ends.

    Tasks appear on one track per worker (process "workers"); the driver's
    process carries block errors, stalls (``stats.stalls``) and counter tracks
    from ``stats.timeline``. The file is written atomically; a write failure is
    logged, never raised into the pipeline.
    """

    def __init__(self, path: str | os.PathLike[str], stats: DatasetStats) -> None:
        self.path = Path(path)
        parent = self.path.parent
        if not parent.is_dir():
            raise ValueError(
                f"DataContext.trace_path={str(path)!r}: directory {str(parent)!r} does not "
                "exist; create it or choose another trace_path"
            )
        self._stats = stats
        self._events: list[dict[str, Any]] = []
        self._tids: dict[str, int] = {}
        self._wall0 = 0.0

    def on_start(self, ops: list[PhysicalOperator]) -> None:
        self._wall0 = time.time()

    def _us(self, wall_ts: float) -> float:
        return round((wall_ts - self._wall0) * 1e6, 1)

    def on_task_done(self, op: PhysicalOperator, result: TaskResult) -> None:
        tid = self._tids.setdefault(result.worker_id, len(self._tids) + 1)
        args: dict[str, Any] = {
            "rows": sum(r.num_rows for r in result.refs),
            "bytes": sum(r.nbytes for r in result.refs),
            "blocks": len(result.refs),
            "cpu_ms": round(result.cpu_s * 1e3, 3),
            "worker": result.worker_id,
        }
        if result.attempts > 1:
            args["attempts"] = result.attempts
        args.update(result.counters)
        self._events.append(
            {
                "name": op.name,
                "cat": "task",
                "ph": "X",
                "ts": self._us(result.start_ts),
                "dur": round(max(0.0, result.wall_s) * 1e6, 1),
                "pid": _WORKERS_PID,
                "tid": tid,
                "args": args,
            }
        )

    def on_block_error(self, op: PhysicalOperator, error: BaseException) -> None:
        self._instant(f"skipped block: {op.name}", time.time(), {"error": str(error)[:2000]})

    def _instant(self, name: str, wall_ts: float, args: dict[str, Any]) -> None:
        self._events.append(
            {
                "name": name,
                "ph": "i",
                "s": "p",
                "ts": self._us(wall_ts),
                "pid": _DRIVER_PID,
                "tid": 0,
                "args": args,
            }
        )

    def on_finish(self, store: StoreStats | None) -> None:
        try:
            self._write()
        except OSError as e:
            log.error("could not write the Chrome trace to %s: %s", self.path, e)

    def trace(self) -> dict[str, Any]:
        """The trace as a JSON-ready dict (``traceEvents`` plus metadata)."""
        events = self._metadata() + self._events + self._counters() + self._stall_events()
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def _metadata(self) -> list[dict[str, Any]]:
        meta: list[dict[str, Any]] = [
            _meta("process_name", _DRIVER_PID, 0, "dataflow driver"),
            _meta("process_name", _WORKERS_PID, 0, "dataflow workers"),
            _meta("thread_name", _DRIVER_PID, 0, "executor"),
        ]
        for worker, tid in self._tids.items():
            meta.append(_meta("thread_name", _WORKERS_PID, tid, f"worker {worker}"))
        return meta

    def _counters(self) -> list[dict[str, Any]]:
        tl = self._stats.timeline
        if tl is None:
            return []
        offset = tl.start_wall - self._wall0
        events: list[dict[str, Any]] = []
        mib = 1024 * 1024
        for k, t in enumerate(tl.t):
            ts = round((t + offset) * 1e6, 1)
            memory = {"store MiB": tl.store_bytes[k] / mib, "RSS MiB": tl.rss_bytes[k] / mib}
            rows = {name: tl.rows_out[i][k] for i, name in enumerate(tl.ops)}
            running = {name: tl.running_tasks[i][k] for i, name in enumerate(tl.ops)}
            for name, args in (("memory", memory), ("rows out", rows), ("running tasks", running)):
                events.append({"name": name, "ph": "C", "ts": ts, "pid": _DRIVER_PID, "args": args})
        return events

    def _stall_events(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for report in self._stats.stalls:
            out.append(
                {
                    "name": "stall",
                    "ph": "i",
                    "s": "g",
                    "ts": self._us(report.wall_ts),
                    "pid": _DRIVER_PID,
                    "tid": 0,
                    "args": {"report": str(report)},
                }
            )
        return out

    def _write(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(self.trace(), f)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)


def _meta(kind: str, pid: int, tid: int, name: str) -> dict[str, Any]:
    return {"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
