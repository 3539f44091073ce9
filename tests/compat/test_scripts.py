"""Runs the Ray Data quick-start scripts of tests/compat (their only change from
a Ray Data script is the import): each must finish and print its "ok" line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRIPTS = ["loading_data.py", "transforming_data.py", "working_with_pytorch.py"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_quick_start_script_runs_unchanged(script):
    if script == "working_with_pytorch.py":
        pytest.importorskip("torch")
    text = (HERE / script).read_text()
    assert "from dataflow.compat import ray" in text and "import dataflow\n" not in text
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(HERE / script)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith(f"{script.removesuffix('.py')}: ok")
