"""``dataflow top``: the table it renders from a metrics page, and one refresh
against the live port of a running pipeline (``python -m dataflow top --once``)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import dataflow as df
from dataflow import metrics, session
from dataflow.top import parse, render

ROOT = str(Path(__file__).resolve().parents[2])

PAGE = """\
# TYPE dataflow_workers gauge
dataflow_workers 2.0
# TYPE dataflow_store_used_bytes gauge
dataflow_store_used_bytes 2097152.0
# TYPE dataflow_store_capacity_bytes gauge
dataflow_store_capacity_bytes 1073741824.0
# TYPE dataflow_run_running gauge
dataflow_run_running{run="3"} 1.0
dataflow_run_running{run="2"} 0.0
# TYPE dataflow_operator_rows_out counter
dataflow_operator_rows_out_total{run="3",operator="read_parquet->map(f)"} 5000.0
dataflow_operator_rows_out_total{run="2",operator="read_range"} 10.0
# TYPE dataflow_operator_tasks_running gauge
dataflow_operator_tasks_running{run="3",operator="read_parquet->map(f)"} 2.0
# TYPE dataflow_operator_tasks_finished counter
dataflow_operator_tasks_finished_total{run="3",operator="read_parquet->map(f)"} 7.0
# TYPE dataflow_step_rows_out counter
dataflow_step_rows_out_total{run="3",operator="read_parquet->map(f)",step="read_parquet",kind="read"} 6000.0
dataflow_step_rows_out_total{run="3",operator="read_parquet->map(f)",step="map(f)",kind="udf"} 5000.0
# TYPE dataflow_step_seconds counter
dataflow_step_seconds_total{run="3",operator="read_parquet->map(f)",step="map(f)",kind="udf"} 12.5
"""


def test_render_shows_runs_operators_steps_and_rates():
    before = parse(PAGE.replace("} 5000.0\n", "} 3000.0\n", 1), at=10.0)
    now = parse(PAGE, at=12.0)
    lines = render(now, before).splitlines()
    assert lines[0].startswith("dataflow top  workers 2") and "store 2.0/1,024 MiB" in lines[0]
    running = lines.index(next(line for line in lines if line.startswith("run 3 (running)")))
    done = lines.index(next(line for line in lines if line.startswith("run 2 (done)")))
    assert running < done  # running runs first
    op = next(line for line in lines if line.startswith("read_parquet->map(f)"))
    assert op.split()[1:5] == ["3", "2/7/0", "0", "5,000"]
    assert op.split()[5] == "1,000"  # (5,000 - 3,000) rows in 2 s
    udf = next(line for line in lines if line.startswith("  map(f)"))
    assert udf.split()[1:4] == ["udf", "0", "5,000"] and udf.split()[-1] == "12.50"
    read = next(line for line in lines if line.startswith("  read_parquet"))
    assert read.split()[1:4] == ["read", "0", "6,000"]


def test_an_address_with_no_metrics_says_what_to_do(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    out = subprocess.run(
        [sys.executable, "-m", "dataflow", "top", "--address", f"127.0.0.1:{port}", "--once"],
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert f"no metrics at http://127.0.0.1:{port}/metrics" in out.stderr
    assert "metrics_port" in out.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "dataflow", "top", "--address", "nowhere", "--once"],
        env={**os.environ, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "--address must be HOST:PORT" in bad.stderr


def _held(batch, gate: str):
    Path(f"{gate}.started.{os.getpid()}.{int(batch['id'][0])}").touch()
    while not Path(gate).exists():
        time.sleep(0.01)
    return batch


@pytest.fixture
def served():
    session.init("local", num_cpus=2, metrics_port=0)
    ctx = df.DataContext.get_current()
    ctx.task_placement = "processes"  # the test reads worker counts
    yield metrics.metrics_address()
    session.shutdown()
    ctx.metrics_port = None
    ctx.task_placement = "auto"


def test_top_attaches_to_a_running_pipeline(served, tmp_path):
    gate = str(tmp_path / "go")
    ds = df.range(2000, override_num_blocks=4).map_batches(_held, fn_kwargs={"gate": gate})
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(ds.iter_batches(batch_size=None)))
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("go.started.*"))) < 2:
            assert time.monotonic() < deadline, "the UDF never started"
            time.sleep(0.05)
        host, port = served
        out = subprocess.run(
            [sys.executable, "-m", "dataflow", "top", "--address", f"{host}:{port}"]
            + ["--once", "--interval", "0.2"],
            env={**os.environ, "PYTHONPATH": ROOT},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        Path(gate).touch()
        reader.join(timeout=120)
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout  # --once: no screen codes
    lines = out.stdout.splitlines()
    assert lines[0].startswith("dataflow top  workers 2")
    assert any(line.startswith("run ") and "(running)" in line for line in lines)
    op = next(line for line in lines if line.startswith("read_range->map_batches(_held)"))
    running, finished, failed = (int(x) for x in op.split()[2].split("/"))
    assert running >= 2 and failed == 0 and op.split()[4] == "0"  # nothing out yet
    assert any(line.startswith("  map_batches(_held)") for line in lines)
    assert sum(len(b["id"]) for b in got) == 2000
