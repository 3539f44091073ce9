"""Stall diagnosis: a long-running UDF (with its worker's stack), a consumer
that stops reading, impossible resources, and the knob's validation."""

from __future__ import annotations

import logging
import time

import pytest

import dataflow as df
from dataflow import session
from dataflow.exec.stall import StallDetector, StallReport
from dataflow.exec.stats import DatasetStats


@pytest.fixture(scope="module")
def local():
    started = session.init("local", num_cpus=2)
    yield started
    session.shutdown()


@pytest.fixture
def ctx(monkeypatch):
    current = df.DataContext.get_current()
    monkeypatch.setattr(current, "enable_progress_bars", False)
    monkeypatch.setattr(current, "stall_warning_s", 0.5)
    return current


def sleepy_udf(batch):
    if batch["id"][0] == 0:
        time.sleep(2.5)
    return {"id": batch["id"] * 2}


def test_long_user_code_is_reported_with_the_worker_stack(local, ctx, caplog):
    ds = df.range(100, override_num_blocks=2).map_batches(sleepy_udf)
    with caplog.at_level(logging.WARNING, logger="dataflow"):
        rows = sorted(r["id"] for r in ds.take_all())
    assert rows == [2 * i for i in range(100)]
    stalls = ds._last_stream.stats().stalls
    # A slow worker start can be a first stall of its own; the sleeping block is the last.
    assert stalls and all(r.reason == "user_code" for r in stalls)
    report = stalls[-1]
    assert report.operator == "read_range->map_batches(sleepy_udf)"
    assert "task #0" in report.detail and "user code running long" in report.detail
    [stack] = report.stacks.values()
    assert "in sleepy_udf" in stack  # faulthandler's frame line for the UDF
    assert "user code running long" in caplog.text and "in sleepy_udf" in caplog.text
    assert "stall: no progress for" in ds.stats()


def test_a_consumer_that_stops_reading_is_named(local, ctx, monkeypatch):
    monkeypatch.setattr(ctx, "output_queue_max_blocks", 1)
    ds = df.range(64_000, override_num_blocks=32).map_batches(lambda b: b)
    it = iter(ds.iter_batches(batch_size=1000, prefetch_batches=0))
    first = next(it)
    assert len(first["id"]) == 1000  # (the first of 64 blocks, in order)
    stats = ds._last_stream.stats()
    deadline = time.monotonic() + 10
    while not stats.stalls and time.monotonic() < deadline:
        time.sleep(0.1)
    it.close()
    [report] = stats.stalls
    assert report.reason == "consumer"
    assert "consumer that is not reading" in report.detail
    assert report.operator == "read_range->map_batches(<lambda>)"


class _Op:
    """The corner of a physical operator the detector reads."""

    def __init__(self, name, cost=None):
        from dataflow.exec.interfaces import OpMetrics

        self.name, self._cost, self.metrics = name, cost, OpMetrics()

    def active_tasks(self):
        return []

    def num_active_tasks(self):
        return 0

    def dispatch_cost(self):
        return self._cost

    def has_next(self):
        return False

    def memory_usage(self):
        return 0

    def resources_in_use(self):
        from runtime.resources import Resources

        return Resources()

    def completed(self):
        return False


class _Backend:
    def total_resources(self):
        from runtime.resources import Resources

        return Resources(cpu=2)

    def available_resources(self):
        return self.total_resources()


def test_resources_the_backend_never_has_are_named():
    from runtime.resources import Resources

    stats = DatasetStats()
    det = StallDetector(1.0, stats, _Backend())
    op = _Op("map_batches(embed)", cost=Resources(cpu=1, gpu=1))
    det.on_start([op])
    t0 = time.monotonic()
    det.on_tick(t0, [], 0)
    det.on_tick(t0 + 0.5, [], 0)
    assert stats.stalls == []
    det.on_tick(t0 + 2.0, [], 0)
    [report] = stats.stalls
    assert report.reason == "resources" and report.operator == "map_batches(embed)"
    assert "can never get" in report.detail and "gpu" in report.detail.lower()
    det.on_tick(t0 + 4.0, [], 0)
    assert len(stats.stalls) == 1  # one report per stall


def test_progress_resets_the_clock_and_nothing_runnable_says_so():
    stats = DatasetStats()
    det = StallDetector(1.0, stats, _Backend())
    op = _Op("read_csv")
    det.on_start([op])
    t0 = time.monotonic()
    for k in range(1, 8):  # rows keep flowing: never a stall
        op.metrics.rows_in += 10
        det.on_tick(t0 + k, [], 0)
    assert stats.stalls == []
    det.on_tick(t0 + 9.5, [], 0)
    [report] = stats.stalls
    assert isinstance(report, StallReport) and report.reason == "unknown"
    assert "read_csv [0 running, 0.0 MiB queued, 0 rows out]" in report.detail


def test_negative_stall_warning_is_rejected():
    with pytest.raises(ValueError, match="stall_warning_s must be >= 0"):
        StallDetector(-1, DatasetStats(), _Backend())
