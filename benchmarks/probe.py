"""Run a command and sample its whole process tree: summed RSS, /dev/shm growth, leftovers.

A process belongs to the run when it descends from the command or carries
the run's marker in its environment (that catches daemons re-parented to
init, such as a Ray raylet outliving its driver). Processes of the run still
alive once the command exits get ``grace_s`` to go, then are killed and
counted as leaked. A tree whose RSS passes ``max_rss_bytes`` is killed at once
(a peer that would take a shared machine's memory: the cap is the measured
reason it did not finish).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass

import psutil

MARKER_ENV = "DATAFLOW_BENCH_RUN"
SHM_DIR = "/dev/shm"


@dataclass(frozen=True)
class Sample:
    """What one sampled command did."""

    returncode: int | None  # None: killed at the timeout
    process_s: float
    peak_rss_bytes: int
    peak_shm_bytes: int
    leaked_processes: int
    stderr_tail: str
    over_rss: bool = False  # killed when its RSS passed max_rss_bytes


def _shm_used() -> int:
    try:
        return shutil.disk_usage(SHM_DIR).used
    except OSError:  # no /dev/shm (macOS): report 0 rather than fail the run
        return 0


class _Tree:
    def __init__(self, root: psutil.Process, marker: str, before: set[int]) -> None:
        self.marker = marker
        self.known: dict[int, psutil.Process] = {root.pid: root}
        self.checked = before  # processes that existed before the run are not ours

    def refresh(self, scan_env: bool) -> None:
        for proc in list(self.known.values()):
            try:
                for child in proc.children(recursive=True):
                    self.known.setdefault(child.pid, child)
            except psutil.Error:
                continue
        if scan_env:
            for pid in set(psutil.pids()) - self.checked - self.known.keys():
                self.checked.add(pid)
                try:
                    proc = psutil.Process(pid)
                    if proc.environ().get(MARKER_ENV) == self.marker:
                        self.known[pid] = proc
                except psutil.Error:
                    continue

    def alive(self) -> list[psutil.Process]:
        out = []
        for proc in self.known.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
            except psutil.Error:
                continue
        return out

    def rss(self) -> int:
        total = 0
        for proc in self.alive():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total


def run_sampled(
    cmd: list[str],
    *,
    env: dict[str, str],
    timeout_s: float,
    interval_s: float = 0.1,
    grace_s: float = 5.0,
    max_rss_bytes: float | None = None,
) -> Sample:
    """Run ``cmd`` to completion (or ``timeout_s``, or until its tree's RSS passes
    ``max_rss_bytes``) while sampling its process tree."""
    marker = uuid.uuid4().hex
    shm_base = _shm_used()
    peak_rss = peak_shm = 0
    stderr_path = f"/tmp/dataflow-bench-stderr-{marker}"
    with open(stderr_path, "w+b") as stderr:
        before = set(psutil.pids())
        t0 = time.perf_counter()
        popen = subprocess.Popen(
            cmd, env={**env, MARKER_ENV: marker}, stdout=subprocess.DEVNULL, stderr=stderr
        )
        tree = _Tree(psutil.Process(popen.pid), marker, before)
        ticks = 0
        returncode: int | None = None
        over_rss = False
        while True:
            tree.refresh(scan_env=ticks % 10 == 0)
            peak_rss = max(peak_rss, tree.rss())
            peak_shm = max(peak_shm, _shm_used() - shm_base)
            if max_rss_bytes is not None and peak_rss > max_rss_bytes:
                over_rss, grace_s = True, 0.0
                break
            try:
                returncode = popen.wait(interval_s)
                break
            except subprocess.TimeoutExpired:
                ticks += 1
                if time.perf_counter() - t0 > timeout_s:
                    break
        process_s = time.perf_counter() - t0
        leaked = _reap(tree, grace_s)
        if returncode is None:
            popen.wait()
        stderr.seek(0)
        tail = stderr.read()[-4000:].decode(errors="replace")
    os.unlink(stderr_path)
    return Sample(returncode, process_s, peak_rss, peak_shm, leaked, tail, over_rss)


def _reap(tree: _Tree, grace_s: float) -> int:
    """Wait for the run's processes to exit; kill and count those that do not."""
    tree.refresh(scan_env=True)
    deadline = time.monotonic() + grace_s
    while (alive := tree.alive()) and time.monotonic() < deadline:
        time.sleep(0.1)
    root_pid = next(iter(tree.known))
    leaked = [p for p in alive if p.pid != root_pid]
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=5)
    return len(leaked)
