"""Prometheus metrics of the pipelines running in this process.

With ``DataContext.metrics_port`` set (or ``dataflow.init(metrics_port=...)``,
or ``DATAFLOW_METRICS_PORT``), the driver serves ``/metrics`` in the Prometheus
text format on ``metrics_host`` (127.0.0.1 unless told otherwise), through
``prometheus_client`` (``pip install 'dataflow[metrics]'``). What it exports,
all prefixed ``dataflow_`` (``METRICS`` lists every name):

* per operator (labels ``run``, ``operator``): rows and bytes in and out, tasks
  running / finished / failed / retried, task and CPU seconds, seconds held
  back by backpressure, bytes queued at its input and waiting at its output;
* per step of an operator (labels ``run``, ``operator``, ``step``, ``kind``):
  seconds and CPU seconds inside the step (time in UDF), rows in and out,
  bytes out; files, rows and bytes read and written by reads and writes;
* per run (label ``run``): running (1) or finished (0), blocks waiting for the
  consumer, the consumer's time waiting for batches vs in its own code;
* the session: store bytes used, capacity, spilled (cumulative) and objects;
  worker processes and their resident memory, the driver's resident memory.

A run is one execution of a Dataset (``run`` = "1", "2"... in this process);
the last ``RECENT_RUNS`` finished runs stay exported with their final values.
Executors publish themselves with ``register_run`` (``dataflow/exec/exporter.py``
builds the samples); ``collector()`` is the ``prometheus_client`` collector, for
an application that serves its own registry.

>>> import dataflow as df
>>> df.init(metrics_port=0)  # doctest: +SKIP
>>> dataflow.metrics.metrics_address()  # doctest: +SKIP
('127.0.0.1', 40213)
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

RECENT_RUNS = 8
"""Finished runs still exported (their final values)."""

INSTALL_HINT = "pip install 'dataflow[metrics]' (prometheus_client)"


@dataclass
class StepSample:
    """One step inside an operator (``dataflow.exec.metering.StepStats``)."""

    name: str
    kind: str
    rows_in: int = 0
    rows_out: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    files: int = 0
    rows_written: int = 0
    bytes_written: int = 0


@dataclass
class OperatorSample:
    name: str
    rows_in: int = 0
    rows_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    tasks_running: int = 0
    tasks_finished: int = 0
    tasks_failed: int = 0
    tasks_retried: int = 0
    task_seconds: float = 0.0
    cpu_seconds: float = 0.0
    backpressure_seconds: float = 0.0
    queued_bytes: int = 0
    output_bytes: int = 0
    steps: list[StepSample] = field(default_factory=list)


@dataclass
class RunSample:
    """A point-in-time view of one run."""

    run: str
    running: bool
    operators: list[OperatorSample] = field(default_factory=list)
    output_queue_blocks: int = 0
    iterator_wait_seconds: float = 0.0
    iterator_user_seconds: float = 0.0


@dataclass
class SessionSample:
    store_used_bytes: int = 0
    store_capacity_bytes: int = 0
    store_spilled_bytes: int = 0
    store_objects: int = 0
    workers: int = 0
    worker_rss_bytes: int = 0
    driver_rss_bytes: int = 0


# -- the registry of runs ---------------------------------------------------------------

_lock = threading.Lock()
_runs: OrderedDict[int, Callable[[], RunSample]] = OrderedDict()
_finished: OrderedDict[int, RunSample] = OrderedDict()
_ids = itertools.count(1)


def register_run(sample: Callable[[], RunSample]) -> int:
    """Publish a running run; ``sample()`` is called at each scrape (from the
    server's thread: it must only read). Returns the run's key."""
    with _lock:
        key = next(_ids)
        _runs[key] = sample
        return key


def new_run_name() -> str:
    """``"<n>"``: the runs of this process, numbered from 1."""
    return str(next(_names))


_names = itertools.count(1)


def finish_run(key: int) -> None:
    """The run ended: keep its last sample among the recent finished runs."""
    with _lock:
        sample = _runs.pop(key, None)
    if sample is None:
        return
    try:
        final = sample()
    except Exception:  # a half torn-down run: nothing worth keeping
        return
    final.running = False
    with _lock:
        _finished[key] = final
        while len(_finished) > RECENT_RUNS:
            _finished.popitem(last=False)


def samples() -> list[RunSample]:
    """The finished runs still kept, then the running ones."""
    with _lock:
        live = list(_runs.values())
        done = list(_finished.values())
    out = list(done)
    for sample in live:
        try:
            out.append(sample())
        except Exception:  # it is finishing right now; the next scrape has it
            continue
    return out


def _no_backend() -> Any:
    return None


_running_backend: Callable[[], Any] = _no_backend


def watch_backend(running_backend: Callable[[], Any]) -> None:
    """Where ``session_sample`` finds the running backend: ``dataflow.session``
    passes its ``running_backend`` (the session starts and stops this server;
    metrics only observes it, so it does not import it)."""
    global _running_backend
    _running_backend = running_backend


def session_sample() -> SessionSample:
    """Store and worker figures of the running backend (zeros when none runs)."""
    s = SessionSample()
    try:
        import psutil

        s.driver_rss_bytes = psutil.Process(os.getpid()).memory_info().rss
    except Exception:
        pass
    backend = _running_backend()
    if backend is None:
        return s
    try:
        store = backend.store_stats()
        s.store_used_bytes, s.store_capacity_bytes = store.used_bytes, store.capacity_bytes
        s.store_spilled_bytes, s.store_objects = store.spilled_bytes, store.num_objects
        s.worker_rss_bytes = backend.worker_rss_bytes()
        s.workers = len(backend.worker_pids())
    except Exception:  # shutting down
        pass
    return s


# -- Prometheus -----------------------------------------------------------------------

_OP = ("run", "operator")
_STEP = ("run", "operator", "step", "kind")

METRICS: dict[str, tuple[str, str]] = {
    # name: (type, help)
    "dataflow_operator_rows_in_total": ("counter", "Rows into the operator"),
    "dataflow_operator_rows_out_total": ("counter", "Rows out of the operator"),
    "dataflow_operator_bytes_in_total": ("counter", "Bytes into the operator"),
    "dataflow_operator_bytes_out_total": ("counter", "Bytes out of the operator"),
    "dataflow_operator_tasks_running": ("gauge", "Tasks of the operator running now"),
    "dataflow_operator_tasks_finished_total": ("counter", "Tasks finished"),
    "dataflow_operator_tasks_failed_total": ("counter", "Tasks failed for good"),
    "dataflow_operator_tasks_retried_total": ("counter", "Task attempts repeated (worker died)"),
    "dataflow_operator_task_seconds_total": ("counter", "Wall seconds of finished tasks"),
    "dataflow_operator_cpu_seconds_total": ("counter", "CPU seconds of finished tasks"),
    "dataflow_operator_backpressure_seconds_total": ("counter", "Seconds held back"),
    "dataflow_operator_queued_bytes": ("gauge", "Bytes waiting at the operator's input"),
    "dataflow_operator_output_bytes": ("gauge", "Finished output bytes not yet taken"),
    "dataflow_step_seconds_total": ("counter", "Wall seconds inside the step (time in UDF)"),
    "dataflow_step_cpu_seconds_total": ("counter", "CPU seconds inside the step"),
    "dataflow_step_rows_in_total": ("counter", "Rows into the step"),
    "dataflow_step_rows_out_total": ("counter", "Rows out of the step"),
    "dataflow_step_bytes_out_total": ("counter", "Bytes out of the step"),
    "dataflow_read_files_total": ("counter", "Files read"),
    "dataflow_write_files_total": ("counter", "Files written"),
    "dataflow_write_rows_total": ("counter", "Rows written"),
    "dataflow_write_bytes_total": ("counter", "Bytes written (files on disk)"),
    "dataflow_run_running": ("gauge", "1 while the run executes, 0 once it ended"),
    "dataflow_run_output_queue_blocks": ("gauge", "Blocks waiting for the consumer"),
    "dataflow_iterator_wait_seconds_total": ("counter", "Consumer seconds waiting for batches"),
    "dataflow_iterator_user_seconds_total": ("counter", "Consumer seconds in its own code"),
    "dataflow_store_used_bytes": ("gauge", "Object store bytes in shared memory"),
    "dataflow_store_capacity_bytes": ("gauge", "Object store capacity"),
    "dataflow_store_spilled_bytes_total": ("counter", "Bytes spilled to disk"),
    "dataflow_store_objects": ("gauge", "Objects in the store"),
    "dataflow_workers": ("gauge", "Worker processes"),
    "dataflow_worker_rss_bytes": ("gauge", "Resident memory of all workers"),
    "dataflow_driver_rss_bytes": ("gauge", "Resident memory of the driver"),
}


def _op_values(op: OperatorSample) -> dict[str, float]:
    return {
        "dataflow_operator_rows_in_total": op.rows_in,
        "dataflow_operator_rows_out_total": op.rows_out,
        "dataflow_operator_bytes_in_total": op.bytes_in,
        "dataflow_operator_bytes_out_total": op.bytes_out,
        "dataflow_operator_tasks_running": op.tasks_running,
        "dataflow_operator_tasks_finished_total": op.tasks_finished,
        "dataflow_operator_tasks_failed_total": op.tasks_failed,
        "dataflow_operator_tasks_retried_total": op.tasks_retried,
        "dataflow_operator_task_seconds_total": op.task_seconds,
        "dataflow_operator_cpu_seconds_total": op.cpu_seconds,
        "dataflow_operator_backpressure_seconds_total": op.backpressure_seconds,
        "dataflow_operator_queued_bytes": op.queued_bytes,
        "dataflow_operator_output_bytes": op.output_bytes,
    }


def _step_values(step: StepSample) -> dict[str, float]:
    return {
        "dataflow_step_seconds_total": step.seconds,
        "dataflow_step_cpu_seconds_total": step.cpu_seconds,
        "dataflow_step_rows_in_total": step.rows_in,
        "dataflow_step_rows_out_total": step.rows_out,
        "dataflow_step_bytes_out_total": step.bytes_out,
    }


def _families() -> Iterator[Any]:
    """Every metric of every run, as prometheus_client metric families."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def family(name: str, labels: tuple[str, ...]) -> Any:
        kind, doc = METRICS[name]
        if kind == "counter":  # the client appends _total itself
            return CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)
        return GaugeMetricFamily(name, doc, labels=labels)

    per_op = {n: family(n, _OP) for n in METRICS if n.startswith("dataflow_operator_")}
    per_step = {n: family(n, _STEP) for n in METRICS if n.startswith("dataflow_step_")}
    io = {n: family(n, _OP) for n in METRICS if n.startswith(("dataflow_read_", "dataflow_write_"))}
    per_run = {
        n: family(n, ("run",))
        for n in METRICS
        if n.startswith(("dataflow_run_", "dataflow_iterator_"))
    }
    for run in samples():
        per_run["dataflow_run_running"].add_metric([run.run], 1.0 if run.running else 0.0)
        per_run["dataflow_run_output_queue_blocks"].add_metric([run.run], run.output_queue_blocks)
        per_run["dataflow_iterator_wait_seconds_total"].add_metric(
            [run.run], run.iterator_wait_seconds
        )
        per_run["dataflow_iterator_user_seconds_total"].add_metric(
            [run.run], run.iterator_user_seconds
        )
        for op in run.operators:
            labels = [run.run, op.name]
            for name, value in _op_values(op).items():
                per_op[name].add_metric(labels, value)
            for step in op.steps:
                for name, value in _step_values(step).items():
                    per_step[name].add_metric([*labels, step.name, step.kind], value)
                if step.kind == "read":
                    io["dataflow_read_files_total"].add_metric(labels, step.files)
                elif step.kind == "write":
                    io["dataflow_write_files_total"].add_metric(labels, step.files)
                    io["dataflow_write_rows_total"].add_metric(labels, step.rows_written)
                    io["dataflow_write_bytes_total"].add_metric(labels, step.bytes_written)
    s = session_sample()
    session = {
        "dataflow_store_used_bytes": s.store_used_bytes,
        "dataflow_store_capacity_bytes": s.store_capacity_bytes,
        "dataflow_store_spilled_bytes_total": s.store_spilled_bytes,
        "dataflow_store_objects": s.store_objects,
        "dataflow_workers": s.workers,
        "dataflow_worker_rss_bytes": s.worker_rss_bytes,
        "dataflow_driver_rss_bytes": s.driver_rss_bytes,
    }
    for name, value in session.items():
        f = family(name, ())
        f.add_metric([], value)
        yield f
    yield from per_run.values()
    yield from per_op.values()
    yield from per_step.values()
    yield from io.values()


class _Collector:
    """The ``prometheus_client`` collector of dataflow's metrics."""

    def collect(self) -> Iterator[Any]:
        return _families()


def collector() -> Any:
    """A ``prometheus_client`` collector of every dataflow metric, for an
    application's own registry: ``REGISTRY.register(dataflow.metrics.collector())``."""
    return _Collector()


# -- the server ------------------------------------------------------------------------

_server: tuple[str, int, Any, threading.Thread] | None = None


def start_metrics_server(port: int, host: str = "127.0.0.1") -> tuple[str, int]:
    """Serve ``/metrics`` on ``host:port`` (0 = any free port); idempotent for
    the same address, a different one replaces the running server. Returns the
    bound (host, port)."""
    global _server
    with _lock:
        if _server is not None and _server[0] == host and port in (0, _server[1]):
            return _server[0], _server[1]
    stop_metrics_server()
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise ImportError(
            f"DataContext.metrics_port is set but prometheus_client is missing: {INSTALL_HINT}"
        ) from None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    try:
        httpd, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise OSError(
            f"dataflow metrics: cannot serve on {host}:{port} ({e}); set another "
            "DataContext.metrics_port (0 picks a free port)"
        ) from None
    bound = httpd.server_address[1]
    with _lock:
        _server = (host, bound, httpd, thread)
    return host, bound


def metrics_address() -> tuple[str, int] | None:
    """(host, port) of the running metrics server, None when none runs."""
    with _lock:
        return (_server[0], _server[1]) if _server is not None else None


def stop_metrics_server() -> None:
    """Stop the metrics server (``dataflow.shutdown()`` does; idempotent)."""
    global _server
    with _lock:
        server, _server = _server, None
    if server is not None:
        server[2].shutdown()
        server[2].server_close()
        server[3].join(timeout=5)
