"""The Chrome trace and the sampled timeline of a real run on the local backend."""

from __future__ import annotations

import json
import time

import pytest

import dataflow as df
from dataflow import session
from dataflow.exec.trace import Timeline


@pytest.fixture(scope="module")
def local():
    started = session.init("local", num_cpus=2)
    yield started
    session.shutdown()


@pytest.fixture
def ctx(monkeypatch):
    current = df.DataContext.get_current()
    monkeypatch.setattr(current, "enable_progress_bars", False)
    return current


def slow_double(batch):
    time.sleep(0.05)
    return {"id": batch["id"] * 2}


def test_trace_has_every_task_on_its_worker_and_counters(local, ctx, tmp_path, monkeypatch):
    path = tmp_path / "run.trace.json"
    monkeypatch.setattr(ctx, "trace_path", str(path))
    ds = df.range(12_000, override_num_blocks=12).map_batches(slow_double, batch_size=None)
    ds = ds.filter(expr="id % 3 == 0")
    total = sum(r["id"] for r in ds.take_all())
    assert total == sum(2 * i for i in range(12_000) if (2 * i) % 3 == 0)

    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    stats = ds._last_stream.stats()
    [op] = stats.operators
    tasks = [e for e in events if e["ph"] == "X"]
    assert len(tasks) == op.tasks == 12
    assert {e["name"] for e in tasks} == {op.name}
    assert sum(e["args"]["rows"] for e in tasks) == op.rows_out == 4000
    assert all(isinstance(e["tid"], int) and e["dur"] >= 50_000 for e in tasks)  # each slept 50 ms
    # one named track per worker, and tasks on one worker never overlap
    names = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    workers = {e["tid"] for e in tasks}
    assert workers <= set(names) and 1 <= len(workers) <= 2 * 2
    for tid in workers:
        spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in tasks if e["tid"] == tid)
        assert all(a_end <= b_start + 1 for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
        assert names[tid] == f"worker {next(e['args']['worker'] for e in tasks if e['tid'] == tid)}"
    counters = [e for e in events if e["ph"] == "C"]
    rows_out = [e["args"][op.name] for e in counters if e["name"] == "rows out"]
    assert rows_out == sorted(rows_out) and rows_out[-1] == 4000
    assert {"store MiB", "RSS MiB"} <= set(
        next(e for e in counters if e["name"] == "memory")["args"]
    )


def test_timeline_ends_at_the_final_counts(local, ctx):
    ds = df.range(6_000, override_num_blocks=6).map_batches(slow_double)
    assert len(ds.take_all()) == 6_000
    stats = ds._last_stream.stats()
    tl = stats.timeline
    assert tl.ops == [o.name for o in stats.operators]
    assert tl.t == sorted(tl.t) and len(tl.t) >= 2
    assert [rows[-1] for rows in tl.rows_out] == [o.rows_out for o in stats.operators]
    assert all(len(series) == len(tl.t) for series in tl.rows_out + tl.running_tasks)
    assert max(max(r) for r in tl.running_tasks) >= 1
    assert tl.running_tasks[0][-1] == 0 and max(tl.rss_bytes) > 0


def test_rows_per_s_over_a_window():
    tl = Timeline(["op"], 0.0, [0.0, 0.5, 1.0, 1.5, 2.0], [[0, 0, 100, 100, 300]])
    assert tl.rows_per_s(0) == [0.0, 0.0, 100.0, 100.0, 200.0]
    assert tl.rows_per_s(0, window_s=0.5) == [0.0, 0.0, 200.0, 0.0, 400.0]


def test_a_trace_path_in_a_missing_directory_is_refused_before_running(
    local, ctx, tmp_path, monkeypatch
):
    bad = tmp_path / "no-such-dir" / "t.json"
    monkeypatch.setattr(ctx, "trace_path", str(bad))
    with pytest.raises(ValueError, match="trace_path=.*no-such-dir.*does not exist"):
        df.range(10).map_batches(lambda b: b).take_all()
    assert not bad.parent.exists()


def test_stats_add_up_from_stage_to_stage(local, ctx):
    ds = df.range(8_000, override_num_blocks=8).map_batches(slow_double).limit(5_000)
    assert len(ds.take_all()) == 5_000
    stats = ds._last_stream.stats()
    ops = stats.operators
    assert [o.name for o in ops] == ["read_range->map_batches(slow_double)", "limit(5000)"]
    for up, down in zip(ops, ops[1:]):
        assert up.rows_out == down.rows_in and up.bytes_out == down.bytes_in
    assert ops[-1].rows_out == 5_000
    slots = 2
    assert 0 < ops[0].cpu_s <= ops[0].wall_s * slots
    assert ops[0].task_wall_s >= 0.05 * ops[0].tasks  # every task slept 50 ms per batch
    assert ops[0].block_bytes_min <= ops[0].block_bytes_mean <= ops[0].block_bytes_max
    assert stats.wall_s >= ops[0].wall_s and stats.peak_rss_bytes > 0
