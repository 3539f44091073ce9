"""Actor pools (callable classes) and stages with different resources running side by side."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pytest

import dataflow as df
from dataflow.context import DataContext
from dataflow.errors import ResourceError, UserCodeError
from dataflow.plan.logical import Compute, InputData, MapBatches
from dataflow.plan.planner import execute
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


def slow_cpu(b):
    time.sleep(0.05)
    return b


class DeviceModel(Tag):
    """A Tag that also records, at construction, the device its actor got."""

    def __init__(self, offset, record_dir):
        super().__init__(offset)
        device = os.environ.get("CUDA_VISIBLE_DEVICES", "none")
        open(os.path.join(record_dir, f"device-{device}"), "w").close()


def test_cpu_and_gpu_stages_run_as_separate_pools_at_the_same_time(tmp_path):
    df.init("local", num_cpus=4, num_gpus=2)
    try:
        src = InputData(blocks=blocks(12))
        pre = MapBatches(fn=slow_cpu, batch_size=None, inputs=(src,))
        model = MapBatches(
            fn=DeviceModel,
            fn_constructor_args=(0, str(tmp_path)),
            compute=Compute("actors", 1, 2),
            resources=Resources(cpu=1, gpu=1),
            batch_size=None,
            inputs=(pre,),
        )
        post = MapBatches(fn=slow_cpu, batch_size=None, inputs=(model,))
        table, stream = run(post)
        assert sorted(table.column("x").to_pylist()) == list(range(120))
        # The GPU pool started at the size the free devices allow: one actor per GPU.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["device-0", "device-1"]
        assert set(table.column("device").to_pylist()) <= {"0", "1"}
        stats = stream.stats()
        spans = {
            name: stats.operator(name).task_spans
            for name in ("map_batches(slow_cpu)", "map_batches(DeviceModel)")
        }
        pre_spans = sorted(spans["map_batches(slow_cpu)"])
        gpu_spans = spans["map_batches(DeviceModel)"]
        overlapping = [g for g in gpu_spans if any(p[0] < g[1] and g[0] < p[1] for p in pre_spans)]
        assert overlapping, "the GPU stage never ran while a CPU stage task ran"
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
    finally:
        df.shutdown()


def _pool_op(backend, min_size, max_size, initial, n_inputs):
    from dataflow.exec.interfaces import ExecEnv, RefBundle
    from dataflow.exec.operators.actor_pool import ActorPoolMapOperator
    from dataflow.exec.operators.map import MapOptions
    from dataflow.exec.transforms import MapBatchesStage, MapTaskFn

    fn = MapTaskFn(
        (MapBatchesStage("mb", fn=Tag, is_class=True, fn_constructor_args=(0,)),), 1 << 20
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
