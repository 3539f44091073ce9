"""``dataflow top``: a live per-operator view of a running pipeline, read from
its driver's metrics port (``DataContext.metrics_port``; ``dataflow.metrics``).

    dataflow top --address 127.0.0.1:9090            # refresh every second, Ctrl-C ends
    dataflow top --address 127.0.0.1:9090 --once     # one table (two scrapes for rates)

Plain text with ANSI cursor codes (no curses, no extra dependency: it parses
the endpoint with ``prometheus_client``, the ``metrics`` extra the driver needs
anyway). Per run: each operator's tasks running / finished / failed, rows in
and out, rows per second out, MiB out, seconds held back and bytes queued;
under it each step of a fused operator with its rows and the time inside it.

>>> table = render(parse(SAMPLE), None, 1.0)  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TextIO

MiB = 1024 * 1024
CLEAR = "\x1b[H\x1b[2J"


@dataclass
class _Op:
    values: dict[str, float] = field(default_factory=dict)
    steps: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)


@dataclass
class Snapshot:
    """One scrape: per run, per operator, the metric values (``_total`` dropped)."""

    at: float
    session: dict[str, float] = field(default_factory=dict)
    runs: dict[str, dict[str, float]] = field(default_factory=dict)
    ops: dict[tuple[str, str], _Op] = field(default_factory=dict)


def fetch(address: str, timeout: float = 5.0) -> str:
    """The text of ``http://address/metrics``; a clear ``ConnectionError`` when
    nothing answers there."""
    url = f"http://{address}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConnectionError(
            f"dataflow top: no metrics at {url} ({reason}); is a pipeline running with "
            "DataContext.metrics_port (or dataflow.init(metrics_port=...)) set to that port?"
        ) from None


def parse(text: str, at: float | None = None) -> Snapshot:
    """Group the samples of a ``/metrics`` page by run and operator."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise ImportError(
            "dataflow top reads Prometheus metrics: pip install 'dataflow[metrics]'"
        ) from None
    snap = Snapshot(time.monotonic() if at is None else at)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = s.name.removeprefix("dataflow_").removesuffix("_total")
            labels = s.labels
            if "operator" in labels:
                op = snap.ops.setdefault((labels["run"], labels["operator"]), _Op())
                if "step" in labels:
                    key = (labels["step"], labels.get("kind", ""))
                    op.steps.setdefault(key, {})[name] = s.value
                else:
                    op.values[name] = s.value
            elif "run" in labels:
                snap.runs.setdefault(labels["run"], {})[name] = s.value
            else:
                snap.session[name] = s.value
    return snap


def render(now: Snapshot, before: Snapshot | None, width: int = 120) -> str:
    """The table for ``now``; rows per second from ``before`` (same run and operator)."""
    s = now.session
    lines = [
        f"dataflow top  workers {s.get('workers', 0):.0f}  "
        f"worker RSS {s.get('worker_rss_bytes', 0) / MiB:,.0f} MiB  "
        f"driver RSS {s.get('driver_rss_bytes', 0) / MiB:,.0f} MiB  "
        f"store {s.get('store_used_bytes', 0) / MiB:,.1f}/"
        f"{s.get('store_capacity_bytes', 0) / MiB:,.0f} MiB  "
        f"spilled {s.get('store_spilled_bytes', 0) / MiB:,.1f} MiB"
    ]
    name_w = max(
        [24]
        + [len(op) for _, op in now.ops]
        + [len(st) + 2 for o in now.ops.values() for st, _ in o.steps]
    )
    name_w = min(name_w, max(24, width - 78))
    head = (
        f"{'operator / step':<{name_w}} {'run':>4} {'tasks':>11} {'rows in':>11} "
        f"{'rows out':>11} {'rows/s':>9} {'MiB out':>8} {'time s':>8} {'backpr s':>8}"
    )
    by_run: dict[str, list[tuple[str, _Op]]] = defaultdict(list)
    for (run, op_name), op in now.ops.items():
        by_run[run].append((op_name, op))
    order = sorted(by_run, key=lambda r: (now.runs.get(r, {}).get("run_running", 0) == 0, -_num(r)))
    for run in order:
        info = now.runs.get(run, {})
        state = "running" if info.get("run_running") else "done"
        lines += [
            "",
            f"run {run} ({state})  waiting for batches {info.get('iterator_wait_seconds', 0):.1f} s, "
            f"in user code {info.get('iterator_user_seconds', 0):.1f} s, "
            f"{info.get('run_output_queue_blocks', 0):.0f} blocks for the consumer",
            head,
        ]
        for op_name, op in by_run[run]:
            v = op.values
            prev = before.ops.get((run, op_name)) if before is not None else None
            rate = "-"
            if prev is not None and now.at > before.at:
                delta = v.get("operator_rows_out", 0) - prev.values.get("operator_rows_out", 0)
                rate = f"{delta / (now.at - before.at):,.0f}"
            tasks = (
                f"{v.get('operator_tasks_running', 0):.0f}/{v.get('operator_tasks_finished', 0):.0f}"
                f"/{v.get('operator_tasks_failed', 0):.0f}"
            )
            lines.append(
                f"{_cut(op_name, name_w):<{name_w}} {run:>4} {tasks:>11} "
                f"{v.get('operator_rows_in', 0):>11,.0f} {v.get('operator_rows_out', 0):>11,.0f} "
                f"{rate:>9} {v.get('operator_bytes_out', 0) / MiB:>8.1f} "
                f"{v.get('operator_task_seconds', 0):>8.2f} "
                f"{v.get('operator_backpressure_seconds', 0):>8.2f}"
            )
            for (step, kind), sv in op.steps.items():
                label = _cut(f"  {step}", name_w)
                lines.append(
                    f"{label:<{name_w}} {'':>4} {kind:>11} {sv.get('step_rows_in', 0):>11,.0f} "
                    f"{sv.get('step_rows_out', 0):>11,.0f} {'':>9} "
                    f"{sv.get('step_bytes_out', 0) / MiB:>8.1f} {sv.get('step_seconds', 0):>8.2f}"
                )
    if not now.ops:
        lines += ["", "no pipeline has run in that process yet"]
    lines += ["", "tasks: running/finished/failed; time s: task seconds (steps: inside the step)"]
    return "\n".join(lines)


def _num(run: str) -> int:
    return int(run) if run.isdigit() else 0


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def run_top(
    address: str, interval: float = 1.0, once: bool = False, out: TextIO | None = None
) -> int:
    """Show the table every ``interval`` seconds until Ctrl-C (``once``: one
    table, from two scrapes ``interval`` apart, without screen codes). Returns
    the exit status."""
    out = out if out is not None else sys.stdout
    before: Snapshot | None = None
    try:
        while True:
            now = parse(fetch(address))
            if once and before is None:
                before = now
                time.sleep(interval)
                continue
            table = render(now, before)
            out.write(table + "\n" if once else CLEAR + table + "\n")
            out.flush()
            if once:
                return 0
            before = now
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    except (ConnectionError, ImportError) as e:
        print(e, file=sys.stderr)
        return 1
