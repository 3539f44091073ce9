from __future__ import annotations

import json
import subprocess
import sys

import pytest

import dataflow
from dataflow.cli import main
from runtime.resources import detect_num_cpus


def test_version_in_a_fresh_process():
    out = subprocess.run(
        [sys.executable, "-m", "dataflow.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip() == f"dataflow {dataflow.__version__}"


def test_info_json_reports_this_machine(capsys, monkeypatch):
    monkeypatch.setenv("DATAFLOW_BACKEND", "inline")
    monkeypatch.setattr(dataflow.DataContext.get_current(), "object_store_memory", 123 * 2**20)
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backend"] == "inline" and info["cpus"] == detect_num_cpus()
    assert info["store_capacity_bytes"] == 123 * 2**20 and info["gpus"] >= 0
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "store capacity: 123 MiB" in text and f"store location: {info['store_location']}" in text


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "info" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2


def test_info_into_a_closed_pipe_stops_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataflow.cli", "info"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before the CLI prints (as with `| head -0`)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert b"Traceback" not in err and b"BrokenPipeError" not in err
