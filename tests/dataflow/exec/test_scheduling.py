"""Selection policy and backpressure on hand-built 3-operator topologies (inline backend)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from dataflow.context import DataContext
from dataflow.errors import ResourceError
from dataflow.exec.backpressure import MemoryBudgetPolicy, OutputQueuePolicy
from dataflow.exec.budget import check_request, free_resources, max_concurrency
from dataflow.exec.interfaces import ExecEnv
from dataflow.exec.operators.input import InputBuffer
from dataflow.exec.operators.map import MapOperator, MapOptions
from dataflow.exec.scheduling import pressure_state, select_operator
from dataflow.exec.topology import Topology
from dataflow.exec.transforms import MapTaskFn, ProjectStage
from runtime.backends.inline import InlineBackend
from runtime.resources import Resources


@pytest.fixture
def backend():
    b = InlineBackend(num_cpus=2)
    yield b
    b.shutdown()


def _chain(backend, n_blocks=4, rows=10):
    """input -> map a -> map b, started on ``backend``."""
    tables = [pa.table({"x": list(range(i * rows, (i + 1) * rows))}) for i in range(n_blocks)]
    src = InputBuffer("input", tables=tables)
    identity = MapTaskFn((ProjectStage("p", select=("x",)),), 1 << 20)
    a = MapOperator("a", [src], identity)
    b = MapOperator("b", [a], identity)
    topo = Topology(b)
    env = ExecEnv(backend, DataContext())
    for op in topo.ops:
        op.start(env)
    return topo, src, a, b


class FakeOutput:
    def __init__(self, room=True):
        self.room = room
        self.items = []

    def has_room(self):
        return self.room

    def put(self, bundle):
        self.items.append(bundle)


def _select(topo, total=Resources(cpu=2), policies=(), **state):
    st = pressure_state(topo.ops, sink=topo.sink, **state)
    return select_operator(topo.ops, total, list(policies), st)


def test_topology_orders_upstream_first(backend):
    topo, src, a, b = _chain(backend)
    assert [op.name for op in topo.ops] == ["input", "a", "b"]
    assert topo.upstream_of(b) == [a, src]


def test_furthest_downstream_operator_with_input_is_picked(backend):
    topo, src, a, b = _chain(backend)
    out = FakeOutput()
    # Only `a` has input after the first move: the input buffer feeds it.
    topo.move_outputs(out)
    op, _ = _select(topo)
    assert op is a
    fut = a.dispatch()  # inline: done at once
    a.on_task_done(fut)
    topo.move_outputs(out)
    # Now both a (3 bundles left) and b (1 bundle) have input: b wins.
    op, _ = _select(topo)
    assert op is b


def test_no_free_resources_means_no_dispatch(backend):
    topo, src, a, b = _chain(backend)
    topo.move_outputs(FakeOutput())
    op, _ = _select(topo, total=Resources(cpu=0.5))
    assert op is None


def test_free_resources_subtract_running_tasks(backend):
    topo, src, a, b = _chain(backend)
    a._tasks[object()] = None  # a pretend running task holds one CPU
    assert free_resources(Resources(cpu=2, gpu=1), topo.ops) == Resources(cpu=1, gpu=1)


def test_memory_budget_vetoes_and_reports_held_back(backend):
    topo, src, a, b = _chain(backend, rows=1000)
    topo.move_outputs(FakeOutput())
    a._tasks[object()] = None  # something is running, so the budget applies
    usage = pressure_state(topo.ops, sink=b).memory_usage
    assert usage == sum(bundle.nbytes for bundle in a._queue) + a._estimate.value(0)
    op, held = _select(topo, policies=[MemoryBudgetPolicy(usage)])
    assert op is None and held == [a]
    op, held = _select(topo, policies=[MemoryBudgetPolicy(usage + 8000)])
    assert op is a and held == []


def test_memory_budget_never_blocks_an_idle_pipeline(backend):
    topo, src, a, b = _chain(backend)
    topo.move_outputs(FakeOutput())
    op, _ = _select(topo, policies=[MemoryBudgetPolicy(0)])
    assert op is a


def test_full_output_queue_stops_the_sink_only(backend):
    topo, src, a, b = _chain(backend)
    out = FakeOutput()
    topo.move_outputs(out)
    a.on_task_done(a.dispatch())
    topo.move_outputs(out)
    op, held = _select(topo, policies=[OutputQueuePolicy()], output_queue_full=True)
    assert op is a and held == [b]


def test_sink_bundles_wait_while_the_consumer_queue_is_full(backend):
    topo, src, a, b = _chain(backend, n_blocks=1)
    out = FakeOutput(room=False)
    topo.move_outputs(out)
    a.on_task_done(a.dispatch())
    topo.move_outputs(out)
    b.on_task_done(b.dispatch())
    topo.move_outputs(out)
    assert out.items == [] and b.has_next()
    out.room = True
    topo.move_outputs(out)
    assert [bundle.num_rows for bundle in out.items] == [10]


def test_completion_propagates_downstream(backend):
    topo, src, a, b = _chain(backend, n_blocks=1)
    out = FakeOutput()
    topo.move_outputs(out)
    topo.propagate_completion()
    assert a.all_inputs_done and not b.all_inputs_done
    a.on_task_done(a.dispatch())
    topo.move_outputs(out)
    topo.propagate_completion()
    assert b.all_inputs_done and not topo.done()
    b.on_task_done(b.dispatch())
    topo.move_outputs(out)
    assert topo.done()
    assert backend.get(out.items[0].refs[0]).column("x").to_pylist() == list(range(10))


def test_resource_error_message_names_stage_number_and_knob():
    with pytest.raises(
        ResourceError,
        match=r"map_batches\(embed\) needs 2 GPUs, this machine has 1: lower num_gpus or add a GPU",
    ):
        check_request("map_batches(embed)", Resources(gpu=2), Resources(cpu=8, gpu=1))
    check_request("map_batches(embed)", Resources(cpu=1, gpu=1), Resources(cpu=8, gpu=1))


def test_max_concurrency_is_the_tightest_resource():
    assert max_concurrency(Resources(cpu=1), Resources(cpu=8)) == 8
    assert max_concurrency(Resources(cpu=1, gpu=1), Resources(cpu=8, gpu=2)) == 2
    assert max_concurrency(Resources(cpu=0.5, gpu=0.5), Resources(cpu=8, gpu=2)) == 4
    assert max_concurrency(Resources(), Resources(cpu=3)) == 3


def test_memory_limit_holds_new_work_while_resident_memory_is_over(backend):
    from dataflow.exec.backpressure import MemoryLimitPolicy

    topo, src, a, b = _chain(backend)
    topo.move_outputs(FakeOutput())
    a._tasks[object()] = None
    policy = MemoryLimitPolicy(1000)
    assert _select(topo, policies=[policy], rss_bytes=1001) == (None, [a])
    assert _select(topo, policies=[policy], rss_bytes=1000)[0] is a
    a._tasks.clear()  # stalled: one task may run whatever the memory says
    assert _select(topo, policies=[policy], rss_bytes=10**12)[0] is a


def test_actor_reserve_leaves_one_task_of_every_task_stage():
    from dataflow.exec.budget import actors_that_fit, task_reserve

    identity = MapTaskFn((ProjectStage("p", select=("x",)),), 1 << 20)
    src = InputBuffer("input", tables=[])
    reads = MapOperator("a", [src], identity, MapOptions(resources=Resources(cpu=1)))
    gpu_map = MapOperator("g", [reads], identity, MapOptions(resources=Resources(cpu=0.5, gpu=1)))
    assert task_reserve([src, reads, gpu_map]) == Resources(cpu=1, gpu=1)
    # 2 CPUs, 1 held back for the task stage: one 1-CPU actor, not two.
    assert actors_that_fit(Resources(cpu=1), Resources(cpu=2), Resources(cpu=1)) == 1
    assert actors_that_fit(Resources(cpu=1), Resources(cpu=1), Resources(cpu=1)) == 0
    assert actors_that_fit(Resources(cpu=0.5), Resources(cpu=4), Resources()) == 8


def test_actor_pool_taking_every_cpu_no_longer_starves_its_upstream_stage():
    """2 CPUs, an upstream 1-CPU task stage and an actor pool of min 2 x 1 CPU:
    the pool used to hold both CPUs while its input waited in the upstream
    stage, forever (a hang); the pool now leaves that stage one CPU."""
    import threading

    import dataflow as df
    from dataflow import session

    class AddOne:
        def __call__(self, batch):
            return {"id": batch["id"] + 1}

    session.init("local", num_cpus=2)
    try:
        ds = (
            df.range(200, override_num_blocks=20)
            .map_batches(lambda b: b)
            .map_batches(AddOne, concurrency=(2, 4))
        )
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(rows=ds.take_all()), daemon=True)
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "the pipeline deadlocked"
        assert sorted(r["id"] for r in result["rows"]) == list(range(1, 201))
    finally:
        session.shutdown()


def test_an_operator_of_short_tasks_counts_each_as_a_fraction_of_a_slot(backend):
    from dataflow.exec.operators.map import SHORT_TASK_S, SHORT_TASKS_PER_SLOT

    topo, src, a, b = _chain(backend, n_blocks=12)
    topo.move_outputs(FakeOutput())
    assert a.dispatch_cost() == Resources(cpu=1)
    for _ in range(8):
        a.on_task_done(a.dispatch())  # inline tasks of a few microseconds
    assert a._task_s < SHORT_TASK_S * 8
    slot = Resources(cpu=1 / SHORT_TASKS_PER_SLOT)
    assert a.dispatch_cost() == slot
    a._tasks[object()] = None  # a running task holds one fraction
    assert a.resources_in_use() == slot
