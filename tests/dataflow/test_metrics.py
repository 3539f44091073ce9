"""Prometheus metrics: a scrape during a run and after it (parsed with
prometheus_client's own parser), the server's address and errors, and the
Grafana dashboard in examples/ naming only exported metrics."""

from __future__ import annotations

import json
import re
import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import dataflow as df
from dataflow import metrics, session

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana-dashboard.json"


@pytest.fixture(scope="module")
def served():
    session.init("local", num_cpus=2, metrics_port=0)
    yield metrics.metrics_address()
    session.shutdown()
    df.DataContext.get_current().metrics_port = None


def scrape(address) -> dict[str, list]:
    """Every sample of the endpoint, by metric name (``_total`` kept)."""
    host, port = address
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(samples: dict, name: str, **labels) -> float:
    found = [s.value for s in samples.get(name, []) if labels.items() <= s.labels.items()]
    assert len(found) == 1, f"{name}{labels}: {found}"
    return found[0]


def _wait_for(path_glob, n: int, timeout: float = 60) -> None:
    directory, pattern = path_glob
    deadline = time.monotonic() + timeout
    while len(list(directory.glob(pattern))) < n:
        assert time.monotonic() < deadline, "the UDF never started"
        time.sleep(0.05)


def _gated(batch, gate: str):
    """Marks that it runs, then waits for the test's go (a file)."""
    import os

    Path(f"{gate}.started.{os.getpid()}.{int(batch['id'][0])}").touch()
    while not Path(gate).exists():
        time.sleep(0.01)
    return batch


def test_a_scrape_during_and_after_a_run(served, tmp_path, monkeypatch):
    assert served[0] == "127.0.0.1"  # loopback unless metrics_host says otherwise
    # Worker processes run the UDF, so the worker gauges have something to show.
    monkeypatch.setattr(df.DataContext.get_current(), "task_placement", "processes")
    gate = str(tmp_path / "go")
    ds = (
        df.range(4000, override_num_blocks=8)
        .map_batches(_gated, fn_kwargs={"gate": gate}, batch_size=None)
        .filter(expr="id % 4 == 0")
    )
    batches = ds.iter_batches(batch_size=None)
    consumer = iter(batches)
    import threading

    got: list = []
    reader = threading.Thread(target=lambda: got.extend(consumer))
    reader.start()
    try:
        _wait_for((tmp_path, "go.started.*"), 2)
        live = scrape(served)
    finally:
        Path(gate).touch()
        reader.join(timeout=120)
    runs = {s.labels["run"]: s.value for s in live["dataflow_run_running"]}
    (run,) = [r for r, v in runs.items() if v == 1.0]
    op = "read_range->map_batches(_gated)->filter(id % 4 == 0)"
    # Both workers are inside the UDF; tasks queued behind them count as running too.
    assert 2 <= value(live, "dataflow_operator_tasks_running", run=run, operator=op) <= 8
    assert value(live, "dataflow_operator_rows_out_total", run=run, operator=op) == 0
    assert value(live, "dataflow_workers") == 2
    assert value(live, "dataflow_worker_rss_bytes") > 0
    assert value(live, "dataflow_store_capacity_bytes") > 0

    assert sum(len(b["id"]) for b in got) == 1000
    done = scrape(served)
    assert value(done, "dataflow_run_running", run=run) == 0.0  # kept with final values
    assert value(done, "dataflow_operator_rows_out_total", run=run, operator=op) == 1000
    assert value(done, "dataflow_operator_tasks_finished_total", run=run, operator=op) == 8
    assert value(done, "dataflow_operator_tasks_failed_total", run=run, operator=op) == 0
    assert value(done, "dataflow_operator_tasks_running", run=run, operator=op) == 0
    step = {"run": run, "operator": op}
    assert value(done, "dataflow_step_rows_out_total", step="read_range", **step) == 4000
    assert value(done, "dataflow_step_rows_in_total", step="filter(id % 4 == 0)", **step) == 4000
    assert value(done, "dataflow_step_rows_out_total", step="filter(id % 4 == 0)", **step) == 1000
    assert value(done, "dataflow_step_seconds_total", step="map_batches(_gated)", **step) > 0
    assert value(done, "dataflow_iterator_wait_seconds_total", run=run) > 0
    assert value(done, "dataflow_read_files_total", **step) == 0  # range reads no file
    exported = {n.removesuffix("_total") for n in done}
    expected = {n.removesuffix("_total") for n in metrics.METRICS if "_write_" not in n}
    assert expected <= exported  # all but the writes' (this run writes nothing)


def test_writes_export_files_rows_and_bytes(served, tmp_path):
    df.range(3000, override_num_blocks=3).write_parquet(str(tmp_path / "out"))
    samples = scrape(served)
    files = list((tmp_path / "out").glob("*.parquet"))
    op = "read_range->write_parquet"
    runs = [s.labels["run"] for s in samples["dataflow_write_files_total"]]
    run = max(runs, key=int)
    assert value(samples, "dataflow_write_files_total", run=run, operator=op) == len(files)
    assert value(samples, "dataflow_write_rows_total", run=run, operator=op) == 3000
    written = sum(p.stat().st_size for p in files)
    assert value(samples, "dataflow_write_bytes_total", run=run, operator=op) == written


def test_a_failed_task_is_counted(served):
    def boom(batch):
        raise ValueError("no")

    with pytest.raises(df.UserCodeError):
        df.range(10, override_num_blocks=1).map_batches(boom).take_all()
    samples = scrape(served)
    failed = [s for s in samples["dataflow_operator_tasks_failed_total"] if s.value]
    assert [s.labels["operator"] for s in failed][-1:] == ["read_range->map_batches(boom)"]


def test_the_server_reports_a_busy_port_and_a_missing_client(monkeypatch):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=rf"cannot serve on 127.0.0.1:{port}.*metrics_port"):
            metrics.start_metrics_server(port)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'dataflow\[metrics\]'"):
        metrics.start_metrics_server(0, "127.0.0.2")
    assert metrics.metrics_address() is None


def test_the_grafana_dashboard_queries_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(dashboard["panels"]) >= 8 and all(exprs)
    named = {n for e in exprs for n in re.findall(r"\bdataflow_[a-z_]+\b", e)}
    assert named and named <= set(metrics.METRICS), named - set(metrics.METRICS)
    for panel in dashboard["panels"]:  # every panel shows at least one dataflow metric
        assert any(re.search(r"\bdataflow_", t["expr"]) for t in panel["targets"]), panel["title"]
    # Operators' totals and the UDF time are on the board.
    assert {"dataflow_operator_rows_out_total", "dataflow_step_seconds_total"} <= named
    variable = dashboard["templating"]["list"][1]["query"]["query"]
    assert re.findall(r"dataflow_[a-z_]+", variable) == ["dataflow_run_running"]
