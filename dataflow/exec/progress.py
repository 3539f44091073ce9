"""Live progress of a running pipeline, and the set of built-in observers.

``ProgressBars`` shows one line per physical operator (rows and blocks out,
rows/s, running tasks, queued bytes) under an overall line (rows delivered,
tasks running, store usage). In a terminal the lines are tqdm bars on stderr
(the ``progress`` extra); in a Jupyter notebook they are tqdm's widget bars
(``tqdm.auto``, with ipywidgets: the ``notebook`` extra), plus a final text
summary that stays readable in a saved notebook; without ipywidgets, one text
block updated in place. Bars are off when
``DataContext.enable_progress_bars`` is False (or the environment variable
``DATAFLOW_DISABLE_PROGRESS_BARS`` is set) and when stderr is neither a
terminal nor a notebook. They refresh at most every ``REFRESH_S`` seconds, so
a loop turn costs one clock comparison.

``builtin_observers`` is what every executor gets: the timeline recorder, the
stall detector, progress bars, the Chrome trace and the metrics exporter, each
as the context asks.

>>> df.DataContext.get_current().enable_progress_bars = False  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sized
from typing import TYPE_CHECKING, Any, TextIO

from dataflow.exec.exporter import MetricsExporter
from dataflow.exec.metering import READ_FILES, WRITE_FILES, WRITE_ROWS
from dataflow.exec.stall import StallDetector
from dataflow.exec.stats import ExecutorObserver
from dataflow.exec.trace import ChromeTrace, TimelineRecorder

if TYPE_CHECKING:
    from dataflow.context import DataContext
    from dataflow.exec.interfaces import PhysicalOperator
    from dataflow.exec.stats import DatasetStats
    from runtime.backends.base import Backend, StoreStats, TaskResult

log = logging.getLogger("dataflow")

REFRESH_S = 0.5
MiB = 1024 * 1024
_hinted_tqdm = False


def builtin_observers(
    ctx: DataContext, backend: Backend, stats: DatasetStats, output: Sized | None = None
) -> list[ExecutorObserver]:
    """The observers an executor registers next to its ``StatsCollector``;
    ``output`` is its queue to the consumer (exported as a metric).

    Order matters at the end of a run: the recorder and the stall detector fill
    ``stats`` before the Chrome trace reads it.
    """
    observers: list[ExecutorObserver] = [TimelineRecorder(stats, backend)]
    if ctx.metrics_port is not None:
        from dataflow.metrics import start_metrics_server

        start_metrics_server(ctx.metrics_port, ctx.metrics_host)
        observers.append(MetricsExporter(stats, output))
    if ctx.stall_warning_s:
        observers.append(StallDetector(ctx.stall_warning_s, stats, backend))
    mode = display_mode(ctx)
    if mode is not None:
        observers.append(ProgressBars(backend, mode))
    if ctx.trace_path:
        observers.append(ChromeTrace(ctx.trace_path, stats))
    return observers


def display_mode(ctx: DataContext, stream: TextIO | None = None) -> str | None:
    """``"notebook"``, ``"terminal"`` or None (no bars) for this context and
    ``stream`` (default stderr)."""
    global _hinted_tqdm
    if not ctx.enable_progress_bars:
        return None
    if _in_notebook():
        return "notebook"
    stream = stream if stream is not None else sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        return None
    try:
        import tqdm  # noqa: F401
    except ImportError:
        if not _hinted_tqdm:
            _hinted_tqdm = True
            log.warning(
                "dataflow: progress bars need tqdm: pip install 'dataflow[progress]' "
                "(or set DataContext.enable_progress_bars = False)"
            )
        return None
    return "terminal"


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython already imported by the kernel)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


class _OpLine:
    """What one operator's line shows, from its metrics and its rate. Rows are
    the operator's output rows, or for a write the rows written (its output is
    one record per task); reads and writes also count their files."""

    __slots__ = ("op", "rows", "rate", "_last_rows", "_last_t", "reads", "writes")
    __slots__ += ("files", "rows_written")

    def __init__(self, op: PhysicalOperator, now: float) -> None:
        self.op = op
        self.rows = 0
        self.rate = 0.0
        self._last_rows = 0
        self._last_t = now
        steps = op.steps()
        self.reads = bool(steps) and steps[0].kind == "read"
        self.writes = bool(steps) and steps[-1].kind == "write"
        self.files = 0
        self.rows_written = 0

    @property
    def unit(self) -> str:
        return " rows written" if self.writes else " rows"

    def task_done(self, counters: dict[str, float]) -> None:
        if self.reads:
            self.files += int(counters.get(READ_FILES, 0))
        if self.writes:
            self.files += int(counters.get(WRITE_FILES, 0))
            self.rows_written += int(counters.get(WRITE_ROWS, 0))

    def update(self, now: float) -> int:
        """Refresh from the operator; return the rows added since the last call."""
        rows = self.rows_written if self.writes else self.op.metrics.rows_out
        dt = now - self._last_t
        if dt > 0:
            self.rate = (rows - self._last_rows) / dt
        added, self.rows, self._last_rows, self._last_t = rows - self.rows, rows, rows, now
        return added

    def postfix(self) -> str:
        m = self.op.metrics
        files = ""
        if self.reads or self.writes:
            files = f"{self.files:,} files {'written' if self.writes else 'read'}, "
        blocks = "" if self.writes else f"{m.bundles_out} blocks, "
        return (
            f"{files}{blocks}{self.op.num_active_tasks()} running, "
            f"{m.queued_bytes / MiB:.1f} MiB queued"
        )

    def text(self) -> str:
        return (
            f"{self.op.name}: {self.rows:,}{self.unit}, {self.rate:,.0f} rows/s, {self.postfix()}"
        )


class ProgressBars(ExecutorObserver):
    """Per-operator progress lines plus an overall line; ``mode`` is
    ``"terminal"`` (tqdm on ``file``, default stderr) or ``"notebook"``."""

    def __init__(
        self, backend: Backend, mode: str = "terminal", file: TextIO | None = None
    ) -> None:
        if mode not in ("terminal", "notebook"):
            raise ValueError(f"ProgressBars mode must be 'terminal' or 'notebook', got {mode!r}")
        self._backend = backend
        self._mode = mode
        self._file = file
        self._lines: list[_OpLine] = []
        self._bars: list[Any] = []
        self._handle: Any = None
        self._t0 = 0.0
        self._next = 0.0
        self._closed = False

    def on_start(self, ops: list[PhysicalOperator]) -> None:
        now = time.monotonic()
        self._t0, self._next = now, now + REFRESH_S
        self._lines = [_OpLine(op, now) for op in ops]
        widgets = _widget_tqdm() if self._mode == "notebook" else None
        if self._mode == "terminal" or widgets is not None:
            if widgets is None:
                from tqdm.std import tqdm

                file = self._file if self._file is not None else sys.stderr
                opts: dict[str, Any] = {"dynamic_ncols": True, "file": file}
            else:
                tqdm, opts = widgets, {}
            opts["unit_scale"] = True
            sink_unit = self._lines[-1].unit if self._lines else " rows"
            self._bars = [tqdm(desc="dataflow", position=0, unit=sink_unit, **opts)]
            self._bars += [
                tqdm(desc=f"  {_short(line.op.name)}", position=i + 1, unit=line.unit, **opts)
                for i, line in enumerate(self._lines)
            ]
        else:
            from IPython.display import Pretty, display

            self._handle = display(Pretty(self._text(now)), display_id=True)

    def on_task_done(self, op: PhysicalOperator, result: TaskResult) -> None:
        if result.counters:
            for line in self._lines:
                if line.op is op:
                    line.task_done(result.counters)
                    return

    def on_tick(self, now: float, held_back: list[PhysicalOperator], rss_bytes: int) -> None:
        if now >= self._next:
            self._next = now + REFRESH_S
            self._refresh(now)

    def on_finish(self, store: StoreStats | None) -> None:
        if self._closed:
            return
        self._closed = True
        now = time.monotonic()
        self._refresh(now)
        for bar in self._bars:
            bar.close()
        if self._mode == "notebook" and self._bars:
            # A saved notebook keeps a widget's first rendering only: the final
            # counts go into the output as text too.
            from IPython.display import Pretty, display

            display(Pretty(self._text(now)))

    def _overall(self) -> str:
        running = sum(line.op.num_active_tasks() for line in self._lines)
        try:
            store = f"store {self._backend.store_stats().used_bytes / MiB:,.0f} MiB"
        except Exception:  # the backend is shutting down: leave the figure out
            store = "store -"
        return f"{running} tasks running, {store}"

    def _text(self, now: float) -> str:
        sink = self._lines[-1] if self._lines else None
        rows = sink.rows if sink is not None else 0
        what = "rows written" if sink is not None and sink.writes else "rows out"
        head = f"dataflow: {rows:,} {what} in {now - self._t0:.1f} s, {self._overall()}"
        return "\n".join([head] + ["  " + line.text() for line in self._lines])

    def _refresh(self, now: float) -> None:
        added = [line.update(now) for line in self._lines]
        if self._handle is not None:
            from IPython.display import Pretty

            self._handle.update(Pretty(self._text(now)))
            return
        overall, *bars = self._bars
        for bar, line, n in zip(bars, self._lines, added):
            bar.set_postfix_str(line.postfix(), refresh=False)
            bar.update(n)
        overall.set_postfix_str(self._overall(), refresh=False)
        overall.update(added[-1] if added else 0)


def _widget_tqdm() -> Any:
    """tqdm's bar class for this kernel (``tqdm.auto``: Jupyter widgets) when tqdm
    and ipywidgets are installed, else None (then the text block is used)."""
    try:
        import ipywidgets  # noqa: F401  (tqdm.auto falls back to text bars without it)
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def _short(name: str, width: int = 40) -> str:
    """Operator names of fused stages get long; a bar's label must fit a line."""
    return name if len(name) <= width else name[: width - 3] + "..."
