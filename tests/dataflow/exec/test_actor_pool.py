"""Actor pools (callable classes) and stages with different resources running side by side."""

from __future__ import annotations

import collections
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataflow as df
from dataflow.compat import ActorPoolStrategy
from dataflow.context import DataContext
from dataflow.errors import PlanError, ResourceError, UserCodeError
from dataflow.exec.operators.actor_pool import ActorPoolMapOperator
from dataflow.plan.logical import Compute, InputData, MapBatches
from dataflow.plan.planner import execute, plan_physical
from runtime.resources import Resources


def blocks(n_blocks=8, rows=10):
    return tuple(pa.table({"x": np.arange(i * rows, (i + 1) * rows)}) for i in range(n_blocks))


def ctx(**changes):
    return DataContext().replace(enable_progress_bars=False, **changes)


class Tag:
    """Adds the constructing actor's identity and how many times it was built."""

    built = 0

    def __init__(self, offset):
        Tag.built += 1
        self.offset = offset
        self.ident = f"{os.getpid()}-{id(self)}"
        self.builds_seen = Tag.built

    def __call__(self, b):
        time.sleep(0.01)
        n = len(b["x"])
        return {
            "x": b["x"] + self.offset,
            "actor": np.array([self.ident] * n),
            "builds": np.full(n, self.builds_seen),
            "device": np.array([os.environ.get("CUDA_VISIBLE_DEVICES", "")] * n),
        }


def run(plan, context=None):
    with execute(plan, context or ctx()) as stream:
        table = pa.concat_tables(list(stream.iter_blocks()))
        return table, stream


def test_callable_class_runs_on_a_pool_built_once_per_actor(backend):
    plan = MapBatches(
        fn=Tag,
        fn_constructor_args=(1000,),
        compute=Compute("actors", 1, 2),
        batch_size=None,
        inputs=(InputData(blocks=blocks()),),
    )
    table, stream = run(plan)
    assert sorted(table.column("x").to_pylist()) == list(range(1000, 1080))
    actors = set(table.column("actor").to_pylist())
    assert 1 <= len(actors) <= 2
    # Within one process each actor was built once: it saw a build count of at most the pool size.
    assert set(table.column("builds").to_pylist()) <= {1, 2}
    assert stream.stats().operator("map_batches(Tag)").tasks == 8
    assert backend.store_stats().num_objects == 0


class FailsToStart:
    def __init__(self):
        raise RuntimeError("model file missing")

    def __call__(self, b):
        return b


def test_constructor_error_names_the_stage(backend):
    plan = MapBatches(
        fn=FailsToStart, compute=Compute("actors", 1, 1), inputs=(InputData(blocks=blocks(2)),)
    )
    with pytest.raises(
        UserCodeError,
        match=r"map_batches\(FailsToStart\) constructor failed on actor start: RuntimeError: model file missing",
    ):
        run(plan)


def gated_cpu(b, gate):
    """The CPU stage; its last blocks wait until the model has returned a batch, so
    reads are still running when the model and the writes are (however slow the
    model's first call is on a loaded machine)."""
    deadline = time.monotonic() + 20
    while b["x"][0] >= 140 and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    return b


class Model:
    """A fake GPU model: records its actor (pid, CUDA_VISIBLE_DEVICES) in ``record_dir``
    when built, tags every row with the device it ran on, and touches ``gate`` (if
    given) once it has returned a batch."""

    def __init__(self, record_dir, gate=None):
        self.device = os.environ.get("CUDA_VISIBLE_DEVICES", "none")
        self.gate = gate
        open(os.path.join(record_dir, f"{os.getpid()}-device-{self.device}"), "w").close()

    def __call__(self, b):
        time.sleep(0.03)
        if self.gate is not None:
            open(self.gate, "w").close()
        return {"x": b["x"] + 1, "device": np.array([self.device] * len(b["x"]))}


def post(b):
    time.sleep(0.03)
    return {"x": b["x"] * 10, "device": b["device"]}


def slow_post(b):
    time.sleep(0.1)
    return b


def devices_built(record_dir):
    """Sorted devices of the actors built (one record file each)."""
    return sorted(p.name.split("-device-")[1] for p in record_dir.iterdir())


def op_stats(stats, prefix):
    (op,) = [o for o in stats.operators if o.name.startswith(prefix)]
    return op


def all_overlap(*span_lists):
    """True when some instant lies inside one span of every list."""
    for start, _ in (s for spans in span_lists for s in spans):
        if all(any(a <= start < b for a, b in spans) for spans in span_lists):
            return True
    return False


@pytest.fixture
def small_blocks(monkeypatch):
    """Each small Parquet file is its own read task (no coalescing to 1 MiB)."""
    monkeypatch.setattr(DataContext.get_current(), "target_min_block_size", 1)
    monkeypatch.setattr(DataContext.get_current(), "enable_progress_bars", False)


@pytest.fixture
def fake_gpus():
    """A local backend declaring 6 CPUs and 2 GPUs on this GPU-less machine: with
    one CPU per GPU actor, four task slots for the CPU stages."""
    yield df.init("local", num_cpus=6, num_gpus=2)
    df.shutdown()


def test_read_cpu_gpu_cpu_write_runs_as_three_pools_at_once(tmp_path, small_blocks, fake_gpus):
    src, records = tmp_path / "in", tmp_path / "records"
    src.mkdir(), records.mkdir()
    for i in range(16):
        pq.write_table(pa.table({"x": np.arange(i * 10, i * 10 + 10)}), src / f"{i:02d}.parquet")
    ds = (
        df.read_parquet(str(src), override_num_blocks=16)
        .map_batches(gated_cpu, fn_kwargs={"gate": str(tmp_path / "gate")}, batch_size=None)
        .map_batches(
            Model,
            fn_constructor_args=(str(records), str(tmp_path / "gate")),
            concurrency=(1, 2),
            num_gpus=1,
            batch_size=None,
        )
        .map_batches(post, batch_size=None)
    )
    ds.write_parquet(str(tmp_path / "out"))

    out = pq.read_table(tmp_path / "out")
    assert sorted(out.column("x").to_pylist()) == [(x + 1) * 10 for x in range(160)]
    # The GPU pool started at the size the free devices allow (not 1, ramping): an
    # actor per GPU, each with its own CUDA_VISIBLE_DEVICES (an actor idle for
    # IDLE_ACTOR_S on a loaded machine may go and come back: hence a set).
    assert set(devices_built(records)) == {"0", "1"}
    assert set(out.column("device").to_pylist()) <= {"0", "1"}
    stats = ds._last_stream.stats()
    assert [o.name for o in stats.operators] == [
        "read_parquet->map_batches(gated_cpu)",
        "map_batches(Model)",
        "map_batches(post)->write_parquet",
    ]
    read, model, write = (o.task_spans for o in stats.operators)
    assert len(read) >= 8 and len(model) == len(write) == len(read)  # ~1 file per read task
    assert all_overlap(read, model, write), "no instant where all three pools ran"
    assert len(stats.operators[1].actor_spans) == len(devices_built(records))
    assert 0 < stats.operators[1].actor_utilisation <= 1


def test_pool_is_released_as_soon_as_upstream_is_exhausted(tmp_path, fake_gpus):
    # min=max=2: only exhaustion (not idleness) may stop these actors, and the slow
    # stage downstream (one task at a time) is still running when it does.
    ds = (
        df.from_arrow(list(blocks(8)))
        .map_batches(
            Model, fn_constructor_args=(str(tmp_path),), concurrency=2, num_gpus=1, batch_size=None
        )
        .map_batches(slow_post, batch_size=None, concurrency=1)
    )
    rows = ds.take_all()
    assert sorted(r["x"] for r in rows) == list(range(1, 81))
    assert {r["device"] for r in rows} <= {"0", "1"}
    stats = ds._last_stream.stats()
    model, after = op_stats(stats, "map_batches(Model)"), op_stats(stats, "map_batches(slow_post)")
    assert len(model.actor_spans) == 2 and len(after.task_spans) == 8
    last_stop = max(stop for _, stop in model.actor_spans)
    assert last_stop < max(start for start, _ in after.task_spans)


def test_fractional_gpus_share_one_device(tmp_path):
    df.init("local", num_cpus=2, num_gpus=1)
    try:
        ds = df.from_arrow(list(blocks(8))).map_batches(
            Model,
            fn_constructor_args=(str(tmp_path),),
            concurrency=2,
            num_gpus=0.5,
            num_cpus=0.5,
            batch_size=None,
        )
        rows = ds.take_all()
        assert sorted(r["x"] for r in rows) == list(range(1, 81))
        assert {r["device"] for r in rows} == {"0"}
        # Two actors on device 0, alive at the same time.
        assert devices_built(tmp_path) == ["0", "0"]
        (a, b) = op_stats(ds._last_stream.stats(), "map_batches(Model)").actor_spans
        assert a[0] < b[1] and b[0] < a[1]
    finally:
        df.shutdown()


class SlowFirst:
    """The first actor to see a batch sleeps on it; every row names its actor."""

    def __init__(self, marker):
        self.marker = marker

    def __call__(self, b):
        try:
            os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            time.sleep(1.5)
        except FileExistsError:
            pass
        return {"x": b["x"], "actor": np.full(len(b["x"]), os.getpid())}


def test_in_flight_limit_keeps_a_slow_actor_from_hoarding_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(DataContext.get_current(), "actor_max_tasks_in_flight", 1)
    df.init("local", num_cpus=2)
    try:
        ds = df.from_arrow(list(blocks(16))).map_batches(
            SlowFirst, fn_constructor_args=(str(tmp_path / "slow"),), concurrency=2, batch_size=None
        )
        rows = ds.take_all()
    finally:
        df.shutdown()
    assert sorted(r["x"] for r in rows) == list(range(160))
    per_actor = sorted(collections.Counter(r["actor"] for r in rows).values())
    # While the slow actor sleeps on its one block, the other serves the rest; with
    # a limit of 2 or more it would hold a second block behind the slow one.
    assert per_actor == [10, 150]


def _pool(ds):
    op = plan_physical(ds._plan, ctx())
    while not isinstance(op, ActorPoolMapOperator):
        (op,) = op.input_dependencies
    return op.min_size, op.initial_size, op.max_size


def test_pool_sizes_from_concurrency_and_resources():
    df.init("inline", num_cpus=4, num_gpus=2)
    try:
        ds = df.from_arrow(list(blocks(4)))
        # A class without concurrency: from one actor up to what its resources allow.
        assert _pool(ds.map_batches(Tag, fn_constructor_args=(0,))) == (1, 1, 4)
        assert _pool(ds.map_batches(Tag, fn_constructor_args=(0,), num_gpus=0.5)) == (1, 4, 4)
        # min 0: no actor until input arrives; a GPU pool starts as wide as the devices allow.
        assert _pool(ds.map_batches(Tag, fn_constructor_args=(0,), concurrency=(0, 3))) == (0, 0, 3)
        gpu = ds.map_batches(Tag, fn_constructor_args=(0,), concurrency=(0, 3), num_gpus=1)
        assert _pool(gpu) == (0, 2, 3)
        for bad in [(0, 0), (-1, 2), (False, 2)]:
            with pytest.raises(PlanError, match=r"<= initial <= max and max >= 1, got \("):
                ds.map_batches(Tag, concurrency=bad)
        with pytest.raises(PlanError, match=r"needs min <= initial <= max, got \(1, 3, 4\)"):
            ds.map_batches(Tag, concurrency=(1, 3, 4))
        # Ray's (min, max, initial) and compute=ActorPoolStrategy(...) mean the same pools.
        assert _pool(ds.map_batches(Tag, fn_constructor_args=(0,), concurrency=(1, 4, 3))) == (
            1,
            3,
            4,
        )
        strategy = ActorPoolStrategy(min_size=1, max_size=3, initial_size=2)
        assert _pool(ds.map_batches(Tag, fn_constructor_args=(0,), compute=strategy)) == (1, 2, 3)
        assert _pool(
            ds.map_batches(Tag, fn_constructor_args=(0,), compute=ActorPoolStrategy(size=2))
        ) == (2, 2, 2)
        with pytest.raises(PlanError, match="give compute= or concurrency=, not both"):
            ds.map_batches(Tag, compute=ActorPoolStrategy(size=2), concurrency=2)
        with pytest.raises(PlanError, match="ActorPoolStrategy needs a callable class"):
            ds.map_batches(lambda b: b, compute=ActorPoolStrategy(size=2))
        out = ds.map_batches(Tag, fn_constructor_args=(5,), concurrency=(0, 2), batch_size=None)
        assert sorted(r["x"] for r in out.take_all()) == list(range(5, 45))
    finally:
        df.shutdown()


def test_more_gpus_than_the_machine_has_fails_at_plan_time():
    df.init("inline", num_cpus=2, num_gpus=1)
    try:
        plan = MapBatches(
            fn=Tag,
            compute=Compute("actors", 1, 1),
            resources=Resources(cpu=1, gpu=2),
            inputs=(InputData(blocks=blocks(1)),),
        )
        with pytest.raises(
            ResourceError,
            match=r"map_batches\(Tag\) needs 2 GPUs, this machine has 1: lower num_gpus or add a GPU",
        ):
            execute(plan, ctx())
        ds = df.from_arrow(list(blocks(2))).map_batches(Tag, fn_constructor_args=(0,), num_gpus=1.5)
        df.shutdown()
        df.init("inline", num_cpus=2, num_gpus=2)
        with pytest.raises(
            ResourceError, match=r"asks for 1.5 GPUs: requests above one GPU must be"
        ):
            ds.take_all()
    finally:
        df.shutdown()


def _pool_op(backend, min_size, max_size, initial, n_inputs, batch_size=1024):
    from dataflow.exec.interfaces import ExecEnv, RefBundle
    from dataflow.exec.operators.actor_pool import ActorPoolMapOperator
    from dataflow.exec.operators.map import MapOptions
    from dataflow.exec.transforms import MapBatchesStage, MapTaskFn

    fn = MapTaskFn(
        (
            MapBatchesStage(
                "mb", fn=Tag, is_class=True, fn_constructor_args=(0,), batch_size=batch_size
            ),
        ),
        1 << 20,
    )
    op = ActorPoolMapOperator(
        "map_batches(Tag)",
        [],
        fn,
        MapOptions(),
        min_size=min_size,
        max_size=max_size,
        initial_size=initial,
    )
    op._inputs_complete = [False]  # pretend it has one upstream
    op.start(ExecEnv(backend, ctx(actor_max_tasks_in_flight=1)))
    for table in blocks(n_inputs):
        op.add_input(RefBundle((backend.put(table),), table.schema, (0,)))
    return op


def _settle(op):
    for fut in list(op.active_tasks()):
        op.on_task_done(fut)


def test_pool_scales_up_with_the_queue_then_down_to_zero_when_drained(monkeypatch):
    from dataflow.exec.operators import actor_pool
    from runtime.backends.inline import InlineBackend

    backend = InlineBackend(num_cpus=4)
    try:
        op = _pool_op(backend, min_size=0, max_size=3, initial=0, n_inputs=6)
        assert op.dispatch_cost() == Resources(cpu=1)  # no actor yet: starting one costs a CPU
        op.dispatch()
        _settle(op)  # the actor is ready
        assert op.dispatch_cost() == Resources()  # a ready actor with a free slot costs nothing
        op.dispatch()
        assert op.dispatch_cost() == Resources(cpu=1)  # busy (in-flight limit 1): scale up
        op.dispatch()
        _settle(op)
        op.dispatch(), op.dispatch()
        assert len(op._actors) == 2
        # Idle actors above min_size go after IDLE_ACTOR_S; with min 0 all of them.
        monkeypatch.setattr(actor_pool, "IDLE_ACTOR_S", 0.0)
        _settle(op)
        op.on_tick(time.monotonic() + 1)
        assert op._actors == []
        op.shutdown()
        # Upstream exhausted and queue drained: every actor goes, whatever min_size says.
        op = _pool_op(backend, min_size=2, max_size=2, initial=2, n_inputs=2)
        _settle(op)
        op.dispatch(), op.dispatch()
        _settle(op)
        op.on_tick(time.monotonic())
        assert len(op._actors) == 2  # upstream may still send more
        op.inputs_done(0)
        op.on_tick(time.monotonic())
        assert op._actors == [] and op.resources_in_use() == Resources()
        assert sum(b.num_rows for b in op._out) == 20
        op.shutdown()
    finally:
        backend.shutdown()


def test_a_task_s_small_batch_outputs_go_downstream_as_one_bundle():
    from runtime.backends.inline import InlineBackend

    backend = InlineBackend(num_cpus=2)
    try:
        op = _pool_op(backend, min_size=1, max_size=1, initial=1, n_inputs=2, batch_size=2)
        for _ in range(3):  # the actor starts, then one task at a time (in-flight limit 1)
            _settle(op)
            if op.dispatch_cost() is not None:
                op.dispatch()
        # Each 10-row input became five 2-row blocks; they travel as one bundle per
        # task (under target_min_block_size), not as five one-block tasks downstream.
        bundles = [op.get_next() for _ in range(2)]
        assert not op.has_next()
        assert [len(b.refs) for b in bundles] == [5, 5]
        xs = sorted(x for b in bundles for r in b.refs for x in backend.get(r)["x"].to_pylist())
        assert xs == list(range(20))
        op.shutdown()
        backend.free([r for b in bundles for r in b.refs])
        assert backend.store_stats().num_objects == 0
    finally:
        backend.shutdown()


class CrashOnce:
    """Kills its worker the first time any actor sees block 30..39."""

    def __init__(self, marker):
        self.marker = marker

    def __call__(self, b):
        if 30 in b["x"] and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(9)
        return {"x": b["x"] * 3}


def test_an_actor_that_dies_is_replaced_and_its_block_retried(tmp_path):
    df.init("local", num_cpus=2)
    try:
        plan = MapBatches(
            fn=CrashOnce,
            fn_constructor_args=(str(tmp_path / "crashed"),),
            compute=Compute("actors", 1, 1),
            batch_size=None,
            inputs=(InputData(blocks=blocks()),),
        )
        table, _ = run(plan, ctx(preserve_order=True))
        assert table.column("x").to_pylist() == [3 * v for v in range(80)]
        assert (tmp_path / "crashed").exists()
    finally:
        df.shutdown()
