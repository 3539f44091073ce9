"""Threads or processes per map operator (dataflow/exec/placement.py)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import dataflow as df
import dataflow.exec.operators.map as map_module
from dataflow.context import DataContext
from dataflow.errors import PlanError
from dataflow.exec.placement import BOOT_RENT_S, PROBE_S, Placement


def _probe(p: Placement, busy_cores: float, idle_cores: float, running: int = 2) -> None:
    """Feed ``p`` one second of readings at these rates."""
    for i in range(11):
        t = i / 10
        p.observe(running=running, wall=t, cpu=busy_cores * t, idle=idle_cores * t)


def test_gil_bound_with_idle_cores_moves_to_processes():
    p = Placement("auto", cores=2)
    _probe(p, busy_cores=1.05, idle_cores=0.9)
    # Decided, but tasks stay on threads until the workers are up.
    assert not p.deciding and p.in_driver and p.moving
    assert p.note == (
        "threads until the workers are up, then processes "
        "(measured on threads: 1.05 of 2 cores busy, 0.90 idle)"
    )
    p.moved()
    assert not p.in_driver and not p.moving
    assert p.note == "processes (measured on threads: 1.05 of 2 cores busy, 0.90 idle)"


def test_the_boot_is_due_after_renting_threads_for_boot_rent_s():
    """Measured GIL-bound with no workers up: the operator keeps its threads
    for BOOT_RENT_S more busy seconds before a boot is worth its cost."""
    p = Placement("auto", cores=2)
    p.observe(2, 0.0, 0.0, 0.0)
    p.observe(2, PROBE_S, PROBE_S, PROBE_S)
    assert p.moving and not p.boot_due
    p.observe(1, PROBE_S + 5.0, 0.0, 0.0)  # idle stretches do not count as rent
    p.observe(2, 10.0, 0.0, 0.0)
    p.observe(2, 10.0 + BOOT_RENT_S * 0.9, 0.0, 0.0)
    assert not p.boot_due
    p.observe(2, 10.0 + BOOT_RENT_S * 1.01, 0.0, 0.0)
    assert p.boot_due and p.in_driver
    p.moved()
    assert not p.boot_due and not p.moving and not p.in_driver


def test_busy_cores_or_a_loaded_machine_stay_on_threads():
    full = Placement("auto", cores=2)
    _probe(full, busy_cores=1.8, idle_cores=0.1)
    assert full.in_driver and full.note.startswith("threads (measured on threads: 1.80")
    # Little CPU for us, but none idle either: other work has the cores, and
    # processes would get no more of them than threads.
    loaded = Placement("auto", cores=2)
    _probe(loaded, busy_cores=0.5, idle_cores=0.0)
    assert loaded.in_driver and not loaded.deciding and not loaded.moving


def test_only_time_with_every_core_busy_counts():
    p = Placement("auto", cores=2)
    _probe(p, busy_cores=1.0, idle_cores=1.0, running=1)  # a slow consumer, a lone task
    assert p.deciding and p.in_driver
    for i in range(3):  # busy stretches, each a quarter of the probe, interrupted
        t0 = 10.0 * (i + 1)
        p.observe(2, t0, 0.0, 0.0)
        p.observe(2, t0 + PROBE_S / 4, PROBE_S / 4, PROBE_S / 4)
        p.observe(1, t0 + 1.0, 5.0, 5.0)  # the time until here is not busy: ignored
    assert p.deciding
    p.observe(2, 100.0, 0.0, 0.0)
    p.observe(2, 100.0 + PROBE_S / 2, PROBE_S / 2, PROBE_S / 2)
    assert not p.deciding and p.moving
    p.moved()
    assert p.note == "processes (measured on threads: 1.00 of 2 cores busy, 1.00 idle)"


def test_fixed_modes_and_one_core():
    assert Placement("threads", 2).in_driver and not Placement("threads", 2).deciding
    assert not Placement("processes", 2).in_driver
    one = Placement("auto", cores=1)
    assert one.in_driver and not one.deciding and "one core" in one.note
    with pytest.raises(ValueError, match="task placement must be one of"):
        Placement("gpu", 2)


def _pid_batch(batch: dict) -> dict:
    time.sleep(0.02)  # holds no CPU: on threads the process keeps no core busy
    return {"id": batch["id"], "pid": np.full(len(batch["id"]), os.getpid())}


@pytest.fixture
def local():
    started = df.init("local", num_cpus=2)
    yield started
    df.shutdown()


def _run(monkeypatch, idle_cores: float) -> tuple[list[dict], str]:
    # The machine's idle CPU as this test wants it (the real one depends on the
    # machine's other work): idle_cores cores idle per second.
    monkeypatch.setattr(map_module, "idle_cpu_s", lambda: idle_cores * time.monotonic())
    ds = df.range(6_000, override_num_blocks=120).map_batches(_pid_batch)
    rows = ds.take_all()
    [op] = ds._last_stream.stats().operators
    return rows, op.placement


def test_a_batch_udf_that_keeps_no_core_busy_moves_to_processes(local, monkeypatch):
    assert local.prestart(wait=60)  # booted: the move happens at the decision
    rows, placement = _run(monkeypatch, idle_cores=2.0)
    assert [r["id"] for r in rows] == list(range(6_000))
    assert placement.startswith("processes (measured on threads:")
    pids = {r["pid"] for r in rows}
    # It began on the driver's threads and finished in worker processes.
    assert os.getpid() in pids and pids - {os.getpid()} <= set(local.worker_pids())
    assert len(pids) > 1


def test_the_move_waits_for_the_workers_to_boot(local, monkeypatch):
    """Measured GIL-bound, but workers that never come up never get a task:
    every batch runs on the driver's threads and the stats say why."""
    monkeypatch.setattr(type(local), "prestart", lambda self, wait=None: False)
    rows, placement = _run(monkeypatch, idle_cores=2.0)
    assert [r["id"] for r in rows] == list(range(6_000))
    assert {r["pid"] for r in rows} == {os.getpid()}
    assert placement.startswith("threads until the workers are up, then processes (measured")


def test_a_short_gil_bound_operator_never_boots_workers(local, monkeypatch):
    """No workers up and the operator ends before its boot is due: it runs
    entirely on threads and starts no process (BOOT_RENT_S made long so that
    a slow machine cannot reach it)."""
    monkeypatch.setattr("dataflow.exec.placement.BOOT_RENT_S", 60.0)
    rows, placement = _run(monkeypatch, idle_cores=2.0)
    assert [r["id"] for r in rows] == list(range(6_000))
    assert {r["pid"] for r in rows} == {os.getpid()} and local.worker_pids() == []
    assert placement.startswith("threads until the workers are up, then processes (measured")


def test_a_boot_that_is_due_starts_the_workers(local, monkeypatch):
    monkeypatch.setattr("dataflow.exec.placement.BOOT_RENT_S", 0.0)
    rows, _ = _run(monkeypatch, idle_cores=2.0)
    assert [r["id"] for r in rows] == list(range(6_000))
    assert len(local.worker_pids()) == 2  # booted once due (whether or not in time to help)


def test_a_batch_udf_on_a_busy_machine_stays_on_threads(local, monkeypatch):
    rows, placement = _run(monkeypatch, idle_cores=0.0)
    assert [r["id"] for r in rows] == list(range(6_000))
    assert placement.startswith("threads (measured on threads:")
    assert {r["pid"] for r in rows} == {os.getpid()} and local.worker_pids() == []


def test_forced_placements_and_bad_value(local, monkeypatch):
    ctx = DataContext.get_current()
    monkeypatch.setattr(ctx, "task_placement", "processes")
    ds = df.range(200, override_num_blocks=4).map_batches(_pid_batch)
    assert os.getpid() not in {r["pid"] for r in ds.take_all()}
    assert ds._last_stream.stats().operators[0].placement == "processes"
    monkeypatch.setattr(ctx, "task_placement", "threads")
    ds = df.range(200, override_num_blocks=4).map(lambda r: {**r, "pid": os.getpid()})
    assert {r["pid"] for r in ds.take_all()} == {os.getpid()}
    monkeypatch.setattr(ctx, "task_placement", "gpu")
    with pytest.raises(PlanError, match="task_placement must be one of"):
        df.range(10).map_batches(_pid_batch).take_all()


def test_per_row_udfs_and_reserved_resources_use_processes(local):
    rows = df.range(100, override_num_blocks=2).map(lambda r: {**r, "pid": os.getpid()})
    assert os.getpid() not in {r["pid"] for r in rows.take_all()}
    ds = df.range(100, override_num_blocks=2).map_batches(_pid_batch, num_cpus=2)
    assert os.getpid() not in {r["pid"] for r in ds.take_all()}
    read, udf = ds._last_stream.stats().operators  # not fused: other resources
    assert (read.placement, udf.placement) == ("threads", "processes")
