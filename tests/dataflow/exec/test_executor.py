"""The streaming executor end to end, on the inline and the local backend.

Plans are built from ``plan.logical`` nodes and run with ``planner.execute``.
"""

from __future__ import annotations

import os
import threading
import time
import traceback

import numpy as np
import pyarrow as pa
import pytest

import dataflow as df
from dataflow.context import DataContext
from dataflow.errors import SourceError, UserCodeError
from dataflow.exec.executor import OutputQueue
from dataflow.exec.interfaces import RefBundle
from dataflow.exec.operators.map import MAX_READS_PER_TASK
from dataflow.expressions import col
from dataflow.plan.logical import (
    Filter,
    FusedMap,
    InputData,
    Limit,
    MapBatches,
    MapRows,
    Project,
    Read,
    Union,
    Zip,
)
from dataflow.plan.planner import execute
from dataflow.sources.datasource import BlockMetadata, Datasource, ReadTask
from runtime.refs import ObjectRef


def blocks(n_blocks=4, rows=25, start=0):
    return tuple(
        pa.table({"x": np.arange(start + i * rows, start + (i + 1) * rows)})
        for i in range(n_blocks)
    )


def ctx(**changes):
    return DataContext().replace(enable_progress_bars=False, **changes)


def collect(plan, context=None, column="x"):
    with execute(plan, context or ctx()) as stream:
        tables = list(stream.iter_blocks())
        return [v for t in tables for v in t.column(column).to_pylist()], stream


def double(b):
    return {"x": b["x"] * 2}


def no_objects_left(backend):
    """Nothing in the store, no object file in the session's shm dir, no worker busy.

    Waits up to 5 s: a cancelled task on a driver thread cannot be stopped, only
    abandoned, and frees its outputs when it finishes; cancelled worker tasks give
    their resources back once the worker is reaped."""
    from pathlib import Path

    def clean() -> bool:
        if backend.store_stats().num_objects:
            return False
        if backend.name != "local":
            return True
        if list(Path(backend.store.location.shm_dir).glob("**/*.arrow")):
            return False
        return backend.available_resources() == backend.total_resources()

    deadline = time.monotonic() + 5
    while not clean():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_fused_and_unfused_chains_give_the_same_rows(backend):
    src = InputData(blocks=blocks())
    mb = MapBatches(fn=double, batch_size=10)
    filt = Filter(expr=col("x") % 3 == 0)
    unfused = Filter(
        expr=col("x") % 3 == 0, inputs=(MapBatches(fn=double, batch_size=10, inputs=(src,)),)
    )
    fused = FusedMap(stages=(mb, filt), inputs=(src,))
    expected = [2 * v for v in range(100) if (2 * v) % 3 == 0]
    for plan in (unfused, fused):
        got, stream = collect(plan)
        assert sorted(got) == expected
    assert no_objects_left(backend)


def test_stats_count_rows_tasks_and_blocks(backend):
    plan = MapBatches(fn=double, batch_size=None, inputs=(InputData(blocks=blocks()),))
    got, stream = collect(plan)
    stats = stream.stats()
    op = stats.operator("map_batches(double)")
    assert (op.tasks, op.rows_in, op.rows_out, op.blocks_out) == (4, 100, 100, 4)
    assert op.block_bytes_min == op.block_bytes_max > 0
    assert op.bytes_out == 4 * op.block_bytes_max
    assert len(op.task_spans) == 4 and op.wall_s >= 0
    text = str(stats)
    assert "map_batches(double)" in text and "from_blocks" in text
    with pytest.raises(KeyError, match="operators: from_blocks, map_batches"):
        stats.operator("nope")


def slow_in_reverse(b):
    time.sleep(0.02 * (4 - int(b["x"][0]) // 25))
    return b


def test_preserve_order_gives_input_order_and_the_same_multiset(backend):
    plan = MapBatches(fn=slow_in_reverse, batch_size=None, inputs=(InputData(blocks=blocks()),))
    ordered, _ = collect(plan, ctx(preserve_order=True))
    unordered, _ = collect(plan, ctx(preserve_order=False))
    assert ordered == list(range(100))
    assert sorted(unordered) == ordered


def test_union_keeps_every_row_and_orders_inputs_when_asked(backend):
    plan = Union(inputs=(InputData(blocks=blocks(2)), InputData(blocks=blocks(2, start=1000))))
    got, _ = collect(plan, ctx(preserve_order=True))
    assert got == list(range(50)) + list(range(1000, 1050))


def test_zip_aligns_rows_across_different_block_sizes_and_suffixes_clashes(backend):
    left = InputData(blocks=blocks(4, rows=25))
    right = Project(
        with_columns=(("y", col("x") * 10),),
        inputs=(InputData(blocks=blocks(3, rows=33) + blocks(1, rows=1, start=99)),),
    )
    with execute(Zip(inputs=(left, right)), ctx(preserve_order=True)) as stream:
        table = pa.concat_tables(list(stream.iter_blocks()))
    assert table.column_names == ["x", "x_1", "y"]
    assert table.column("x").to_pylist() == list(range(100))
    assert table.column("x_1").to_pylist() == list(range(100))
    assert table.column("y").to_pylist() == [10 * v for v in range(100)]


def test_zip_of_unequal_lengths_is_a_clear_error(backend):
    plan = Zip(inputs=(InputData(blocks=blocks(1)), InputData(blocks=blocks(2))))
    with pytest.raises(
        df.PlanError, match=r"zip: the datasets have different numbers of rows \(25 and 50\)"
    ):
        collect(plan)
    assert no_objects_left(backend)


def test_limit_slices_exactly_and_frees_the_rest(backend):
    got, stream = collect(
        Limit(inputs=(InputData(blocks=blocks()),), n=37), ctx(preserve_order=True)
    )
    assert got == list(range(37))
    assert no_objects_left(backend)


def test_take_from_a_huge_range_is_fast_and_launches_few_tasks(backend):
    start = time.perf_counter()
    rows = df.range(10**10).take(5)
    elapsed = time.perf_counter() - start
    assert rows == [{"id": i} for i in range(5)]
    assert elapsed < 0.5


class CountingSource(Datasource):
    """``n_tasks`` read tasks of ``rows`` rows; records which pushdowns it got."""

    def __init__(
        self, n_tasks, rows, projection=False, predicate=False, fail_file=None, delay_first=0
    ):
        self.n_tasks, self.rows, self.fail_file = n_tasks, rows, fail_file
        self.delay_first = delay_first
        self.supports_projection_pushdown = projection
        self.supports_predicate_pushdown = predicate
        self.calls = []

    def get_name(self):
        return "counting"

    def iter_read_tasks(self, parallelism, **pushdown):
        self.calls.append(sorted(pushdown))
        for i in range(self.n_tasks):
            path = f"/data/part-{i}.bin"
            yield ReadTask(
                _reader(i, self.rows, path == self.fail_file, self.delay_first if i == 0 else 0),
                BlockMetadata(num_rows=self.rows, size_bytes=16 * self.rows, input_files=(path,)),
            )


def _reader(i, rows, fail, delay=0):
    def read():
        time.sleep(delay)
        if fail:
            raise OSError("checksum mismatch")
        yield pa.table({"x": np.arange(i * rows, (i + 1) * rows), "y": np.zeros(rows)})

    return read


@pytest.mark.parametrize("straggler_s", [0, 0.5])
def test_limit_over_many_read_tasks_stops_launching(backend, straggler_s):
    # Two tasks of 10 known rows cover the limit, so no third starts, even while
    # a slow first task holds the second's output back for order.
    source = CountingSource(n_tasks=10_000, rows=10, delay_first=straggler_s)
    plan = Limit(inputs=(Read(source),), n=15)
    got, stream = collect(plan)
    assert sorted(got) == list(range(15))
    assert stream.stats().operator("read_counting").tasks == 2
    assert no_objects_left(backend)


def test_pushdowns_are_passed_only_when_supported_and_applied_otherwise(backend):
    for supported in (True, False):
        source = CountingSource(3, 10, projection=supported, predicate=supported)
        read = Read(source, columns=("x",), predicate=col("x") >= 25)
        got, _ = collect(read)
        assert source.calls == [["columns", "filter"] if supported else []]
        if not supported:  # the read task itself filtered and projected
            assert sorted(got) == list(range(25, 30))
    with execute(Read(CountingSource(3, 10), columns=("x",)), ctx()) as stream:
        assert {t.column_names[0] for t in stream.iter_blocks()} == {"x"}


def test_unreadable_file_raises_source_error_naming_it(backend):
    plan = Read(CountingSource(3, 10, fail_file="/data/part-1.bin"))
    with pytest.raises(SourceError, match="/data/part-1.bin") as info:
        collect(plan)
    assert info.value.path == "/data/part-1.bin"
    assert no_objects_left(backend)


def test_short_reads_share_tasks_but_keep_their_blocks_order_and_errors(backend, monkeypatch):
    """200 tiny reads: after the first few measure short, several run per task;
    every read still makes its own block, in order, and a failing file inside a
    group is the one named."""
    # Every task counts as short, however loaded the machine running the test.
    monkeypatch.setattr("dataflow.exec.operators.map.SHORT_TASK_S", 60.0)
    plan = Read(CountingSource(200, 5, predicate=True), columns=("x",))
    got, stream = collect(plan, ctx(preserve_order=True))
    assert got == list(range(1000))
    op = stream.stats().operators[0]
    assert op.blocks_out == 200 and op.rows_out == 1000
    assert 200 // MAX_READS_PER_TASK <= op.tasks < 120  # grouped once measured short
    # A group never exceeds target_min_block_size planned bytes: 1 byte, no grouping.
    got, stream = collect(Read(CountingSource(40, 5)), ctx(target_min_block_size=1))
    assert sorted(got) == list(range(200)) and stream.stats().operators[0].tasks == 40
    plan = Read(CountingSource(200, 5, fail_file="/data/part-150.bin"))
    with pytest.raises(SourceError, match="/data/part-150.bin") as info:
        collect(plan)
    assert info.value.path == "/data/part-150.bin"
    assert no_objects_left(backend)


def normalize(b):
    if 50 in b["x"]:
        raise ValueError("cannot normalize 50")
    return b


def test_user_error_names_operator_block_and_has_the_remote_traceback(backend):
    plan = MapBatches(fn=normalize, batch_size=None, inputs=(InputData(blocks=blocks()),))
    with pytest.raises(UserCodeError) as info:
        collect(plan, ctx(preserve_order=True))
    e = info.value
    assert str(e).startswith(
        "map_batches(normalize) failed on block 2 of the in-memory data: ValueError: cannot normalize 50"
    )
    assert 'raise ValueError("cannot normalize 50")' in e.remote_traceback
    assert e.operator == "map_batches(normalize)" and e.block == "block 2 of the in-memory data"
    assert isinstance(e.__cause__, ValueError)
    # One clean traceback: consumer frames only, none from the executor thread.
    frames = [f.name for f in traceback.extract_tb(e.__traceback__)]
    assert frames[-2:] == ["__next__", "get"]
    assert not {"_loop", "_collect", "on_task_done"} & set(frames)
    assert no_objects_left(backend)


def test_max_errored_blocks_skips_and_counts(backend):
    plan = MapBatches(fn=normalize, batch_size=None, inputs=(InputData(blocks=blocks()),))
    got, stream = collect(plan, ctx(max_errored_blocks=1))
    assert sorted(got) == list(range(50)) + list(range(75, 100))
    assert stream.stats().operator("map_batches(normalize)").errored_blocks == 1


def test_row_skip_policy_reports_skipped_rows(backend):
    plan = MapRows(
        fn=lambda r: {"x": 100 // (r["x"] % 10)},
        on_error="skip",
        inputs=(InputData(blocks=blocks()),),
    )
    got, stream = collect(plan)
    assert len(got) == 90
    assert stream.stats().operator("map(<lambda>)").counters["rows_skipped"] == 10


def test_output_queue_holds_its_block_count_or_more_small_blocks():
    """The queue has room below its block count, and beyond it while the
    blocks are small (under 64 KiB a slot): a consumer that wakes late does not
    stop a pipeline of tiny blocks."""

    def bundle(nbytes):
        return RefBundle(refs=(ObjectRef("x", nbytes, 1, "mem", "s"),), schema=None, seq=(0,))

    big = OutputQueue(max_blocks=2)
    big.put(bundle(100_000))
    assert big.has_room()
    big.put(bundle(100_000))
    assert not big.has_room()  # two blocks, 200 kB: over 2 x 64 KiB
    small = OutputQueue(max_blocks=2)
    for _ in range(15):
        small.put(bundle(8192))
    assert small.has_room()  # 15 blocks of 8 KiB
    small.put(bundle(8192))
    assert not small.has_room()  # 16 x 8 KiB = 2 x 64 KiB
    small.get()
    assert small.has_room()


def test_break_and_close_free_every_object_and_stop_the_executor(backend):
    plan = MapBatches(fn=double, batch_size=5, inputs=(InputData(blocks=blocks(20)),))
    stream = execute(plan, ctx(output_queue_max_blocks=2))
    for table in stream.iter_blocks():
        assert table.num_rows == 5
        break
    stream.close()
    stream.close()  # idempotent
    assert not stream._executor._thread.is_alive()
    assert no_objects_left(backend)
    # An exception in the consumer's loop does the same once the iterator is dropped.

    def consume():
        for _ in execute(plan, ctx(output_queue_max_blocks=2)).iter_blocks():
            raise RuntimeError("consumer failed")

    with pytest.raises(RuntimeError, match="consumer failed"):
        consume()
    assert not [t for t in threading.enumerate() if t.name == "dataflow-executor"]
    assert no_objects_left(backend)

    def interrupted():
        for _ in execute(plan, ctx(output_queue_max_blocks=2)).iter_blocks():
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert not [t for t in threading.enumerate() if t.name == "dataflow-executor"]
    assert no_objects_left(backend)


def test_plans_without_python_udfs_run_in_the_driver():
    df.init("local", num_cpus=2)
    try:
        from dataflow.session import get_backend

        backend = get_backend()
        plan = Project(select=("x",), inputs=(InputData(blocks=blocks()),))
        got, _ = collect(plan)
        assert sorted(got) == list(range(100))
        assert df.range(10).take(1) == [{"id": 0}]
        assert backend.worker_rss_bytes() == 0  # no worker process was started
        # A batch UDF starts on driver threads (placement "auto", measured there).
        got, stream = collect(MapBatches(fn=double, inputs=(InputData(blocks=blocks(1)),)))
        assert sorted(got) == list(range(0, 50, 2)) and backend.worker_rss_bytes() == 0
        assert stream.stats().operators[-1].placement == "threads (measuring)"
        # Per-row Python runs in workers: the plan prestarted one per CPU.
        got, stream = collect(MapRows(fn=add_one_row, inputs=(InputData(blocks=blocks(1)),)))
        assert sorted(got) == list(range(1, 26))
        assert backend.worker_rss_bytes() > 0 and len(backend.worker_pids()) == 2
        assert stream.stats().operators[-1].placement == "processes"
    finally:
        df.shutdown()


def add_one_row(row):
    return {"x": row["x"] + 1}


def crash_once(b, marker):
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    return {"x": b["x"] + 1}


def always_crash(b):
    os._exit(9)


def test_worker_crash_is_retried_with_an_identical_result(tmp_path):
    # Worker processes (a batch UDF on driver threads would take the driver with it).
    df.init("local", num_cpus=2)
    try:
        plan = MapBatches(
            fn=crash_once,
            fn_args=(str(tmp_path / "crashed"),),
            batch_size=None,
            inputs=(InputData(blocks=blocks()),),
        )
        got, _ = collect(plan, ctx(task_placement="processes"))
        assert sorted(got) == list(range(1, 101))
        plan = MapBatches(fn=always_crash, inputs=(InputData(blocks=blocks(1)),))
        with pytest.raises(
            df.WorkerCrashedError, match=r"map_batches\(always_crash\).*after 1 retries"
        ):
            collect(plan, ctx(max_task_retries=1, task_placement="processes"))
    finally:
        df.shutdown()
