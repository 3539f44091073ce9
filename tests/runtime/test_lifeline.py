"""Nothing outlives a killed driver: workers leave by themselves and the janitor
removes the session's directories (runtime/lifeline.py, runtime/janitor.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from runtime.lifeline import driver_gone, start_janitor, stop_janitor
from runtime.store import ObjectStore

ROOT = str(Path(__file__).resolve().parents[2])


def _wait_until(check, timeout: float) -> float | None:
    """Seconds until ``check()`` held, or None if it did not within ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def test_a_lifeline_ends_when_its_write_end_closes():
    read_fd, write_fd = os.pipe()
    try:
        assert not driver_gone(read_fd, os.getppid(), 0.05)
        os.close(write_fd)
        assert driver_gone(read_fd, os.getppid(), 1.0)
    finally:
        os.close(read_fd)


def test_a_changed_parent_means_the_driver_is_gone():
    assert not driver_gone(None, os.getppid(), 0.0)
    assert driver_gone(None, os.getppid() + 1, 0.0)  # re-parented: the driver died


def test_the_janitor_keeps_the_dirs_while_the_driver_lives_and_ignores_ctrl_c(tmp_path):
    target = tmp_path / "session"
    target.mkdir()
    (target / "block.arrow").write_bytes(b"x")
    janitor = start_janitor([target])
    try:
        time.sleep(0.3)
        janitor.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert janitor.poll() is None and target.is_dir()
    finally:
        stop_janitor(janitor)
    assert janitor.returncode == 0 and not target.exists()


def test_a_store_shutdown_reaps_its_janitor(tmp_path):
    store = ObjectStore(1 << 20, shm_root=tmp_path, spill_root=tmp_path)
    janitor = psutil.Process(store._janitor.pid)
    deadline = time.monotonic() + 10
    while "janitor.py" not in " ".join(janitor.cmdline()):  # empty until its exec
        assert time.monotonic() < deadline
        time.sleep(0.01)
    store.shutdown()
    assert store._janitor.returncode == 0
    assert not janitor.is_running()
    assert os.listdir(tmp_path) == []


DRIVER = """
    import json, os, sys, time
    import dataflow as df
    from runtime.lifeline import EXIT_CODE

    backend = df.init("local", num_cpus=2)
    df.DataContext.get_current().enable_progress_bars = False
    df.DataContext.get_current().task_placement = "processes"  # the UDF runs in workers
    marker = sys.argv[1]

    def slow(batch):
        open(f"{marker}.{os.getpid()}", "w").close()
        time.sleep(120)
        return batch

    print(json.dumps([str(d) for d in backend.store.session_dirs]), flush=True)
    df.range(4000, override_num_blocks=8).map_batches(slow).take_all()
"""


@pytest.mark.timeout(120)
def test_kill_9_of_a_driver_mid_pipeline_leaves_no_process_and_no_shm(tmp_path):
    marker = tmp_path / "running"
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(DRIVER), str(marker)],
        env={**os.environ, "PYTHONPATH": ROOT},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        dirs = [Path(d) for d in json.loads(driver.stdout.readline())]
        driver.stdout.close()
        assert all(d.is_dir() for d in dirs) and str(dirs[0]).startswith(("/dev/shm", "/tmp"))
        # Both workers are inside the UDF, mid-task.
        started = _wait_until(lambda: len(list(tmp_path.glob("running.*"))) >= 2, 60)
        assert started is not None, "the workers never started the UDF"
        tree = psutil.Process(driver.pid).children(recursive=True)
        workers = [p for p in tree if "runtime.worker" in " ".join(p.cmdline())]
        janitor = [p for p in tree if "janitor.py" in " ".join(p.cmdline())]
        assert len(workers) == 2 and len(janitor) == 1
        assert {int(p.name.split(".")[-1]) for p in tmp_path.glob("running.*")} <= {
            w.pid for w in workers
        }
    except BaseException:
        driver.kill()
        raise
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=10)

    removed = _wait_until(lambda: not any(d.exists() for d in dirs), 10)
    gone = _wait_until(lambda: not any(p.is_running() for p in workers + janitor), 10)
    for p in workers + janitor:  # leave nothing behind even when the test fails
        if p.is_running():
            p.kill()
    assert removed is not None and removed < 5, f"session dirs still there: {dirs}"
    assert gone is not None, "processes outlived their driver"
