"""Per-step stats inside fused map tasks: the meter's attribution of time, rows
and bytes (unit), and the steps of real fused pipelines in ``stats()`` (end to end)."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataflow as df
from dataflow.exec import metering
from dataflow.exec.metering import ChainMeter, ChainState, StepInfo, step_stats


def _sleepy(blocks, seconds: float, busy: bool = False):
    for t in blocks:
        if busy:  # spin for ``seconds`` of this thread's CPU, however loaded the machine
            end = time.thread_time() + seconds
            while time.thread_time() < end:
                pass
        else:
            time.sleep(seconds)
        yield t


def _run(meter: ChainMeter, chain) -> dict[str, float]:
    for _ in chain:
        pass
    counters: dict[str, float] = {}
    meter.report(counters)
    return counters


def test_each_step_gets_its_own_time_not_its_upstreams():
    tables = [pa.table({"x": np.arange(100)}) for _ in range(4)]
    meter = ChainMeter(ChainState(3))
    s0 = meter.wrap(0, _sleepy(iter(tables), 0.01))  # a read that sleeps: wall, no CPU
    s1 = meter.wrap(1, _sleepy(s0, 0.03, busy=True))  # a UDF that computes
    s2 = meter.wrap(2, (t.slice(0, 10) for t in s1))  # a cheap one
    start = time.perf_counter()
    c = _run(meter, s2)
    elapsed = time.perf_counter() - start
    assert c["step.0.wall_s"] >= 0.04 and c["step.1.wall_s"] >= 0.12
    # Exclusive times: were the read's 0.04 s in the UDF's too, they would add up
    # to more than the time the whole chain took.
    assert sum(c[f"step.{k}.wall_s"] for k in range(3)) <= elapsed
    assert c["step.2.wall_s"] < 0.02
    assert c["step.0.cpu_s"] < 0.02  # sleeping is not CPU
    assert c["step.1.cpu_s"] >= 0.12 - 0.01  # spinning is
    assert [c[f"step.{k}.rows"] for k in range(3)] == [400, 400, 40]
    assert c["step.0.bytes"] == 4 * tables[0].nbytes
    assert c["step.2.bytes"] == 4 * tables[0].slice(0, 10).nbytes


def test_bytes_are_exact_when_measured_and_extrapolated_by_rows_in_between(monkeypatch):
    monkeypatch.setattr(metering, "BYTES_EVERY_S", 3600.0)  # measure only the first batch
    state = ChainState(1)
    short = pa.table({"s": ["a" * 10] * 10})
    meter = ChainMeter(state)
    c = _run(meter, meter.wrap(0, iter([short, short, short])))
    assert c["step.0.bytes"] == 3 * short.nbytes
    assert state.bytes_per_row[0] == short.nbytes / 10
    # The next task of this process extrapolates from that measurement.
    longer = pa.table({"s": ["a" * 100] * 20})
    meter = ChainMeter(state)
    c = _run(meter, meter.wrap(0, iter([longer])))
    assert c["step.0.bytes"] == round(20 * short.nbytes / 10)
    monkeypatch.setattr(metering, "BYTES_EVERY_S", 0.0)  # measure every batch
    meter = ChainMeter(state)
    c = _run(meter, meter.wrap(0, iter([longer])))
    assert c["step.0.bytes"] == longer.nbytes


def test_an_error_in_a_step_leaves_the_meter_consistent():
    meter = ChainMeter(ChainState(2))

    def boom(blocks):
        for _ in blocks:
            raise ValueError("bad")
        yield  # pragma: no cover

    chain = meter.wrap(1, boom(meter.wrap(0, iter([pa.table({"x": [1]})]))))
    with pytest.raises(ValueError, match="bad"):
        next(chain)
    assert meter.rows == [1, 0]


def test_step_stats_chain_rows_and_units():
    steps = [
        StepInfo("read_parquet", "read"),
        StepInfo("map_batches(f)", "udf"),
        StepInfo("write_parquet", "write"),
    ]
    counters = {
        "step.0.rows": 10.0,
        "step.1.rows": 8.0,
        "step.1.wall_s": 2.0,
        "step.2.rows": 1.0,
        "read.files": 3.0,
        "write.files": 1.0,
        "write.rows": 8.0,
        "write.bytes": 500.0,
    }
    read, udf, write = step_stats(steps, counters, rows_in=0)
    assert (read.rows_in, read.rows_out, read.files) == (0, 10, 3)
    assert (udf.rows_in, udf.rows_out, udf.wall_s) == (10, 8, 2.0)
    assert (write.rows_in, write.rows_written, write.files, write.bytes_written) == (8, 8, 1, 500)


# -- end to end ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def local():
    from dataflow import session

    started = session.init("local", num_cpus=2)
    yield started
    session.shutdown()


def _slow_udf(batch: dict) -> dict:
    time.sleep(0.02)
    return batch


def _double(row: dict) -> dict:
    return {"id": row["id"] * 2, "v": row["v"]}


def test_a_fused_pipeline_has_a_stats_row_per_step(local, tmp_path):
    n, files = 4000, 4
    for i in range(files):
        ids = np.arange(i * n // files, (i + 1) * n // files)
        part = pa.table({"id": ids, "v": np.full(len(ids), 1.5)})
        pq.write_table(part, tmp_path / f"in-{i}.parquet")
    ds = (
        df.read_parquet(str(tmp_path), override_num_blocks=files)
        .map_batches(_slow_udf, batch_size=500)
        .filter(expr="id % 2 == 0")
        .map(_double)
    )
    ds.write_parquet(str(tmp_path / "out"))
    stats = ds._last_stream.stats()
    (op,) = stats.operators
    assert [(s.name, s.kind) for s in op.steps] == [
        ("read_parquet", "read"),
        ("map_batches(_slow_udf)", "udf"),
        ("filter(id % 2 == 0)", "builtin"),
        ("map(_double)", "udf"),
        ("write_parquet", "write"),
    ]
    read, slow, filt, double, write = op.steps
    assert (read.rows_out, read.files) == (n, files)
    assert (slow.rows_in, slow.rows_out) == (n, n)
    assert (filt.rows_in, filt.rows_out) == (n, n // 2)
    assert (double.rows_in, double.rows_out) == (n // 2, n // 2)
    written = pq.read_table(tmp_path / "out")
    out_files = list((tmp_path / "out").glob("*.parquet"))
    assert (write.rows_in, write.rows_written, write.files) == (n // 2, n // 2, len(out_files))
    assert write.bytes_written == sum(p.stat().st_size for p in out_files)
    assert sorted(written.column("id").to_pylist()) == list(range(0, 2 * n, 4))
    # The slow UDF's 8 batches of 20 ms are its own; sleeping costs no CPU.
    assert 0.16 <= slow.wall_s < 0.16 + 0.5 * op.task_wall_s
    assert slow.cpu_s < 0.5 * slow.wall_s
    assert stats.step("map_batches(_slow_udf)") is not None
    assert read.bytes_out > 0 and slow.bytes_out > 0
    text = str(stats)
    assert f"read {n:,} rows, {files} files" in text
    assert f"wrote {n // 2:,} rows, {len(out_files)} files" in text
    header, rule, op_line, *step_lines = text.splitlines()[:8]
    # A read has no rows in, a write no rows out (its output is one record per file).
    assert op_line.startswith(op.name) and op_line[len(op.name) :].split()[1:4] == ["-", "-", "-"]
    assert step_lines[1].split()[:3] == ["map_batches(_slow_udf)", str(n), str(n)]
    with pytest.raises(KeyError, match="steps: read_parquet, map_batches"):
        stats.step("nope")


def test_after_short_tasks_the_clock_is_read_only_once_a_task_runs_long():
    """A process whose tasks are short skips the CPU clock at task start (a system
    call per task); its first long task then counts that first window's wall time
    as CPU, and the task after it is measured from its start again."""
    state = ChainState(1)
    state.long = False
    t = pa.table({"x": [1]})
    meter = ChainMeter(state)
    first = _run(meter, meter.wrap(0, _sleepy(iter([t]), 0.02)))
    assert first["step.0.cpu_s"] == pytest.approx(first["step.0.wall_s"])
    assert state.long
    meter = ChainMeter(state)
    second = _run(meter, meter.wrap(0, _sleepy(iter([t]), 0.02)))
    assert second["step.0.wall_s"] >= 0.02 and second["step.0.cpu_s"] < 0.01


def test_cpu_read_in_the_middle_of_a_chain_goes_to_the_step_that_spent_it(monkeypatch):
    """The CPU clock may be read at any step's exit, while outer steps are still
    in flight: each step still gets its own CPU, none a negative share."""
    monkeypatch.setattr(metering, "SAMPLE_EVERY_S", 0.0)  # read it at every exit

    def pairs(blocks):  # a step that pulls two blocks per output, and sleeps in between
        for a in blocks:
            time.sleep(0.01)
            b = next(blocks, None)
            yield a if b is None else pa.concat_tables([a, b])

    tables = [pa.table({"x": np.arange(10)}) for _ in range(6)]
    meter = ChainMeter(ChainState(3))
    s0 = meter.wrap(0, _sleepy(iter(tables), 0.01, busy=True))
    s1 = meter.wrap(1, pairs(s0))
    c = _run(meter, meter.wrap(2, _sleepy(s1, 0.01)))
    cpu = [c[f"step.{k}.cpu_s"] for k in range(3)]
    assert min(cpu) >= 0
    assert cpu[0] >= 0.06 - 0.005  # six busy blocks of 10 ms
    assert cpu[1] < 0.01 and cpu[2] < 0.01  # sleeping
    assert [c[f"step.{k}.rows"] for k in range(3)] == [60, 60, 60]
