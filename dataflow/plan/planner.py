"""The planner: optimized logical plan -> physical DAG -> running executor.

The only module of ``dataflow.plan`` that imports ``dataflow.exec``. Planning
is an explicit registry from logical node type to planning function; an
unregistered node fails loudly (``tests/dataflow/plan/test_planner.py`` checks
that every class in ``plan.logical`` is registered).

>>> from dataflow.plan.logical import InputData, Limit
>>> stream = execute(Limit(InputData(blocks=(pa.table({"x": [1, 2, 3]}),)), n=2), ctx)  # doctest: +SKIP
>>> [t.num_rows for t in stream.iter_blocks()]  # doctest: +SKIP
[2]
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from dataflow.errors import PlanError
from dataflow.exec.budget import actors_that_fit, check_request, max_concurrency, task_reserve
from dataflow.exec.exchange.block_order import RandomizeBlockOrderOperator
from dataflow.exec.exchange.operator import ExchangeOperator
from dataflow.exec.exchange.partition import sort_keys
from dataflow.exec.exchange.tasks import (
    AggregateSpec,
    ExchangeSpec,
    HashRepartitionSpec,
    JoinSpec,
    MapGroupsSpec,
    RandomShuffleSpec,
    RepartitionSpec,
    SortSpec,
)
from dataflow.exec.executor import OutputStream, StreamingExecutor
from dataflow.exec.interfaces import JoinsWrite, PhysicalOperator
from dataflow.exec.operators.actor_pool import ActorPoolMapOperator
from dataflow.exec.operators.broadcast_join import (
    BROADCAST_HOWS,
    BroadcastJoinFn,
    BroadcastJoinOperator,
    broadcastable_key_type,
)
from dataflow.exec.operators.input import InputBuffer
from dataflow.exec.operators.limit import LimitOperator
from dataflow.exec.operators.map import MapOperator, MapOptions
from dataflow.exec.operators.nary import UnionOperator, ZipOperator
from dataflow.exec.placement import MODES as PLACEMENTS
from dataflow.exec.transforms import (
    ErrorPolicy,
    FilterStage,
    FlatMapStage,
    MapBatchesStage,
    MapRowsStage,
    MapTaskFn,
    ProjectStage,
    Stage,
    WriteStage,
)
from dataflow.plan.logical import (
    AbstractUDF,
    Aggregate,
    Compute,
    Filter,
    FlatMap,
    FusedMap,
    InputData,
    Join,
    Limit,
    LogicalOperator,
    MapBatches,
    MapGroups,
    MapRows,
    MaterializedData,
    Project,
    RandomizeBlockOrder,
    RandomShuffle,
    Read,
    Repartition,
    Sort,
    Union,
    Write,
    Zip,
    check_on_error,
)
from dataflow.sources.datasource import TaskSizer
from runtime.resources import Resources

if TYPE_CHECKING:
    import pyarrow as pa

    from dataflow.context import DataContext
    from dataflow.sources.datasource import ReadTask
    from runtime.backends.base import Backend

__all__ = ["OutputStream", "execute", "plan_physical"]


def execute(plan: LogicalOperator, ctx: DataContext) -> OutputStream:
    """Plan the (already optimized) logical plan into a physical DAG and start the
    streaming executor on ``dataflow.session.get_backend()``. Returns at once."""
    from dataflow.session import get_backend

    backend = get_backend()
    ctx = ctx.copy()
    planning = _Planning(ctx, backend)
    in_driver = _runs_in_driver(plan, ctx)
    sink = planning.plan(plan)
    if not in_driver and _needs_workers(sink):
        backend.prestart()  # workers boot while the first tasks queue
    executor = StreamingExecutor(sink, backend, ctx, in_driver=in_driver)
    executor.start()
    return OutputStream(executor)


def plan_physical(plan: LogicalOperator, ctx: DataContext) -> PhysicalOperator:
    """The physical DAG for ``plan`` (for ``explain()``); starts nothing. Resource
    checks run only when a backend is already running."""
    from dataflow.session import get_backend, is_initialized

    return _Planning(ctx, get_backend() if is_initialized() else None).plan(plan)


# -- the registry ---------------------------------------------------------------------

PlanFn = Callable[["_Planning", Any, list[PhysicalOperator]], PhysicalOperator]
StageFn = Callable[["_Planning", Any], Stage]
_PLANNERS: dict[type, PlanFn] = {}
"""Logical node type -> the function that plans it as a physical operator."""
_STAGES: dict[type, StageFn] = {}
"""Logical node type -> the function that builds it as a stage of a map task."""

F = TypeVar("F", bound=Callable[..., Any])


def _registrar(registry: dict[type, Any]) -> Callable[..., Callable[[F], F]]:
    def for_types(*types: type) -> Callable[[F], F]:
        def register(fn: F) -> F:
            registry.update(dict.fromkeys(types, fn))
            return fn

        return register

    return for_types


_plans = _registrar(_PLANNERS)
_stages = _registrar(_STAGES)


def registered_node_types() -> frozenset[type]:
    """Logical node types the planner knows."""
    return frozenset(_PLANNERS)


@dataclass
class _Planning:
    ctx: DataContext
    backend: Backend | None

    def plan(self, node: LogicalOperator) -> PhysicalOperator:
        inputs = [self.plan(child) for child in node.inputs]
        fn = _PLANNERS.get(type(node))
        if fn is None:
            known = ", ".join(sorted(t.__name__ for t in _PLANNERS))
            raise PlanError(
                f"the planner has no rule for logical node {type(node).__name__} ({node.name}); "
                f"known nodes: {known}"
            )
        return fn(self, node, inputs)

    @property
    def total(self) -> Resources | None:
        return self.backend.total_resources() if self.backend is not None else None

    def cpu_slots(self) -> int:
        total = self.total
        return max(1, int(total.cpu)) if total is not None else 1


@_plans(InputData)
def _plan_input(p: _Planning, node: InputData, inputs: list) -> PhysicalOperator:
    return InputBuffer(node.name, tables=list(node.blocks))


@_plans(MaterializedData)
def _plan_materialized(p: _Planning, node: MaterializedData, inputs: list) -> PhysicalOperator:
    return InputBuffer(node.name, bundles=list(node.bundles))


@_plans(Limit)
def _plan_limit(p: _Planning, node: Limit, inputs: list) -> PhysicalOperator:
    upstream = inputs[0]
    if isinstance(upstream, MapOperator) and all(
        isinstance(s, Read) or s.preserves_rows for s in node.input.steps()
    ):
        # Row-preserving tasks: stop launching once running ones cover the limit.
        upstream.options = dataclasses.replace(upstream.options, row_cap=node.n)
    return LimitOperator(node.name, inputs, node.n)


@_plans(Union)
def _plan_union(p: _Planning, node: Union, inputs: list) -> PhysicalOperator:
    return UnionOperator(node.name, inputs)


@_plans(Zip)
def _plan_zip(p: _Planning, node: Zip, inputs: list) -> PhysicalOperator:
    if len(inputs) != 2:
        raise PlanError(f"zip takes exactly two inputs, got {len(inputs)}")
    return ZipOperator(node.name, inputs)


@_plans(Read)
def _plan_read(p: _Planning, node: Read, inputs: list) -> PhysicalOperator:
    return _map_operator(p, node.name, [], [node])


@_plans(MapBatches, MapRows, FlatMap, Filter, Project, Write)
def _plan_one(p: _Planning, node: LogicalOperator, inputs: list) -> PhysicalOperator:
    if isinstance(node, Write) and _joins_write(p, node, inputs):
        stages = (_write_stage(p, node),)
        inputs[0].join_write(node.name, MapTaskFn(stages, p.ctx.target_max_block_size))
        return inputs[0]
    return _map_operator(p, node.name, inputs, [node])


def _joins_write(p: _Planning, node: Write, inputs: list[PhysicalOperator]) -> bool:
    """A default write (see ``Write.fusable``) of a sink that writes without the
    GIL, straight after an all-to-all step or a broadcast join, runs in that
    operator's tasks (``JoinsWrite``): sort, shuffle, groupby or join outputs
    go to the files without a round trip through the object store and without
    a write task per block."""
    upstream = inputs[0] if len(inputs) == 1 else None
    if isinstance(upstream, BroadcastJoinOperator) and not (
        p.backend is not None and p.backend.driver_threads
    ):
        # Where each task builds its own probe (Ray), the write's buffers beside
        # it passed memory_limit (ooc_join, 32M rows): the write keeps its tasks.
        return False
    return (
        isinstance(upstream, JoinsWrite)
        and upstream.post is None
        and node.fusable
        and node.datasink.writes_without_gil
    )


@_plans(FusedMap)
def _plan_fused(p: _Planning, node: FusedMap, inputs: list) -> PhysicalOperator:
    return _map_operator(p, node.name, inputs, list(node.stages))


# -- all-to-all: map -> exchange -> reduce (dataflow/exec/exchange) ------------------


def _exchange(
    node: LogicalOperator,
    inputs: list[PhysicalOperator],
    spec: ExchangeSpec,
    num_partitions: int | None = None,
    resources: Resources = Resources(cpu=1),
    *,
    total_rows: int | None = None,
) -> PhysicalOperator:
    return ExchangeOperator(
        node.name,
        inputs,
        spec,
        num_partitions=num_partitions,
        resources=resources,
        total_rows=total_rows,
    )


@_plans(Sort)
def _plan_sort(p: _Planning, node: Sort, inputs: list) -> PhysicalOperator:
    return _exchange(node, inputs, SortSpec(sort_keys(node.keys, node.descending), node.limit))


@_plans(RandomShuffle)
def _plan_shuffle(p: _Planning, node: RandomShuffle, inputs: list) -> PhysicalOperator:
    seed = node.seed if node.seed is not None else random.getrandbits(63)
    return _exchange(node, inputs, RandomShuffleSpec(seed), node.num_blocks)


@_plans(Repartition)
def _plan_repartition(p: _Planning, node: Repartition, inputs: list) -> PhysicalOperator:
    rows = None
    if node.keys:
        spec: ExchangeSpec = HashRepartitionSpec(node.keys, node.sort)
    elif node.shuffle:
        spec = RandomShuffleSpec(random.getrandbits(63))
    else:
        # Rows in order and their count known (metadata): cut each output block
        # as its rows arrive instead of holding the whole input (out of core, the
        # whole input would spill).
        rows = node.input.num_rows() if p.ctx.preserve_order else None
        spec = RepartitionSpec(node.num_blocks)
    return _exchange(node, inputs, spec, node.num_blocks, total_rows=rows)


@_plans(Aggregate)
def _plan_aggregate(p: _Planning, node: Aggregate, inputs: list) -> PhysicalOperator:
    return _exchange(node, inputs, AggregateSpec(node.keys, node.aggs), node.num_partitions)


@_plans(MapGroups)
def _plan_map_groups(p: _Planning, node: MapGroups, inputs: list) -> PhysicalOperator:
    spec = MapGroupsSpec(
        node.keys,
        node.fn,
        node.batch_format,
        node.fn_args,
        dict(node.fn_kwargs),
        node.name,
        fn_constructor_args=node.fn_constructor_args,
        fn_constructor_kwargs=dict(node.fn_constructor_kwargs),
        zero_copy_batch=node.zero_copy_batch,
    )
    return _exchange(node, inputs, spec, node.num_partitions, node.resources)


@_plans(Join)
def _plan_join(p: _Planning, node: Join, inputs: list) -> PhysicalOperator:
    right_schema = node.inputs[1].output_schema()
    if right_schema is not None and _broadcasts(p, node, right_schema):
        fn = BroadcastJoinFn(
            node.left_on,
            node.right_on,
            node.how,
            node.right_suffix,
            right_schema,
            p.ctx.target_max_block_size,
        )
        return BroadcastJoinOperator(f"broadcast_{node.name}", inputs, fn)
    spec = JoinSpec(node.left_on, node.right_on, node.how, node.right_suffix)
    return _exchange(node, inputs, spec, node.num_partitions)


_VARIABLE_WIDTH_BYTES = 64
"""Bytes a string or binary value is assumed to take in the right side's size estimate."""


def _broadcasts(p: _Planning, node: Join, right_schema: pa.Schema) -> bool:
    """Whether the join's right side is small enough (metadata) to broadcast,
    and the join one a broadcast runs (``BROADCAST_HOWS``, one key of a
    hashable type). ``num_partitions`` does not count: it is the width of an
    exchange when one runs, and every Ray Data call passes it."""
    limit = p.ctx.broadcast_join_max_bytes
    if p.backend is not None:
        limit = min(limit, p.backend.store_stats().capacity_bytes // 4)
    if limit <= 0 or node.how not in BROADCAST_HOWS:
        return False
    if len(node.left_on) != 1 or node.right_on[0] not in right_schema.names:
        return False
    left_schema = node.inputs[0].output_schema()
    key_types = [right_schema.field(node.right_on[0]).type]
    if left_schema is not None and node.left_on[0] in left_schema.names:
        key_types.append(left_schema.field(node.left_on[0]).type)
    if not all(broadcastable_key_type(t) for t in key_types):
        return False
    rows = node.inputs[1].max_rows()
    if rows is None:
        return False
    width = 0.0
    for field in right_schema:
        try:
            width += field.type.bit_width / 8 + 0.125  # values and validity
        except ValueError:  # variable width
            width += _VARIABLE_WIDTH_BYTES
    return rows * width <= limit


@_plans(RandomizeBlockOrder)
def _plan_block_order(p: _Planning, node: RandomizeBlockOrder, inputs: list) -> PhysicalOperator:
    return RandomizeBlockOrderOperator(node.name, inputs, node.seed)


# -- map stages -----------------------------------------------------------------------


def _map_operator(
    p: _Planning, name: str, inputs: list[PhysicalOperator], nodes: list[LogicalOperator]
) -> PhysicalOperator:
    read = nodes[0] if isinstance(nodes[0], Read) else None
    stages: list[Stage] = []
    read_tasks = sizer = None
    if read is not None:
        if read.datasource.supports_task_sizing:
            sizer = TaskSizer()
        read_tasks, compensate = _read_tasks(p, read, sizer)
        stages += compensate
        nodes = nodes[1:]
    stages += [_stage(p, n) for n in nodes]
    udfs = [n for n in nodes if isinstance(n, AbstractUDF)]
    # A UDF's settings, else the read's, else a lone write's (a write with
    # settings of its own never fuses), else the defaults.
    writes = [n for n in nodes if isinstance(n, Write)]
    owner = udfs[0] if udfs else read if read is not None else writes[0] if writes else None
    compute = owner.compute if owner is not None else Compute()
    resources = owner.resources if owner is not None else Resources(cpu=1)
    total = p.total
    if total is not None:
        check_request(name, resources, total)
    first = nodes[0] if nodes and read is None else None
    options = MapOptions(
        resources=resources,
        min_rows_per_task=_min_rows(first),
        placement=_placement(p.ctx, read, nodes, compute, resources),
        max_tasks=compute.max_size if compute.kind == "tasks" else None,
        sizer=sizer,
    )
    task_fn = MapTaskFn(tuple(stages), p.ctx.target_max_block_size, read.name if read else "")
    if compute.kind != "actors" and not any(n.is_class for n in udfs):
        return MapOperator(name, inputs, task_fn, options, read_tasks=read_tasks)
    if read is not None:
        raise PlanError(f"{name}: a read cannot run on an actor pool; do not fuse it")
    return _actor_pool(p, name, inputs, task_fn, options, compute)


def _min_rows(first: LogicalOperator | None) -> int:
    """Rows a task of the stage chain starting with ``first`` gathers first."""
    if isinstance(first, MapBatches):
        return first.batch_size or 0
    if isinstance(first, Write):
        return first.min_rows_per_task
    return 0


def _placement(
    ctx: DataContext,
    read: Read | None,
    nodes: list[LogicalOperator],
    compute: Compute,
    resources: Resources,
) -> str:
    """Where a map operator's tasks run (``dataflow/exec/placement.py``):
    processes for tasks that reserve resources (GPUs, several CPUs, memory),
    else ``DataContext.task_placement`` when forced, processes for per-row
    user code and Python datasources, a measured choice for batch UDFs and
    custom sinks, threads for what only Arrow runs."""
    mode = ctx.task_placement
    if mode not in PLACEMENTS:
        raise PlanError(f"DataContext.task_placement must be one of {PLACEMENTS}, got {mode!r}")
    if resources != Resources(cpu=1):
        return "processes"  # only a worker process holds a lease (and its GPU)
    if compute.use_threads:
        return "threads"
    if mode != "auto":
        return mode
    if any(isinstance(n, AbstractUDF) and n.calls_per_row for n in nodes):
        return "processes"
    if read is not None and not read.datasource.reads_without_gil:
        return "processes"
    custom_sink = any(isinstance(n, Write) and not n.datasink.writes_without_gil for n in nodes)
    if custom_sink or any(isinstance(n, MapBatches) for n in nodes):
        return "auto"
    return "threads"


def _actor_pool(
    p: _Planning,
    name: str,
    inputs: list[PhysicalOperator],
    task_fn: MapTaskFn,
    options: MapOptions,
    compute: Compute,
) -> PhysicalOperator:
    res, total = options.resources, p.total
    explicit = compute.kind == "actors"
    min_size = compute.min_size if explicit else 1
    max_size = compute.max_size if explicit and compute.max_size else None
    if total is not None:
        if max_size is None:
            max_size = max(min_size, max_concurrency(res, total))
        if min_size > 1:
            check_request(f"{name} with concurrency min {min_size}", res.scale(min_size), total)
    max_size = max_size or max(min_size, 1)
    initial = min_size
    if compute.initial_size is not None:  # Ray's concurrency=(min, max, initial)
        initial = min(max(compute.initial_size, min_size), max_size)
    elif res.gpu and p.backend is not None:
        # A GPU pool starts as large as the free devices allow, so all GPUs work at once.
        free_gpu = p.backend.available_resources().gpu
        initial = max(min_size, min(max_size, int(free_gpu / res.gpu + 1e-9)))
    if total is not None:
        # Actors hold their CPUs for life: start no more than leave room for one
        # task of every upstream task stage (the executor grows the pool to
        # min_size once those stages are done; see scheduling.py).
        upstream = [op for i in inputs for op in _upstream(i)]
        initial = min(initial, actors_that_fit(res, total, task_reserve(upstream)))
    return ActorPoolMapOperator(
        name,
        inputs,
        task_fn,
        options,
        min_size=min_size,
        max_size=max_size,
        initial_size=initial,
        max_tasks_in_flight=compute.max_tasks_in_flight,
    )


def _needs_workers(sink: PhysicalOperator) -> bool:
    """True when an operator of the DAG starts on worker processes (per-row
    user code, actors, exchanges running Python); operators on threads or
    still measuring start none."""
    for op in _upstream(sink):
        if isinstance(op, MapOperator) and op.options.placement == "processes":
            return True
        if isinstance(op, ExchangeOperator) and op.spec.runs_python:
            return True
    return False


def _upstream(op: PhysicalOperator) -> list[PhysicalOperator]:
    """``op`` and everything upstream of it."""
    return [op, *(u for i in op.input_dependencies for u in _upstream(i))]


def _error_policy(p: _Planning, node: AbstractUDF) -> ErrorPolicy:
    check_on_error(node.name, node.on_error)
    if node.on_error == "dead_letter" and not p.ctx.dead_letter_path:
        raise PlanError(
            f"{node.name}: on_error='dead_letter' needs a directory: set "
            "DataContext.get_current().dead_letter_path"
        )
    return ErrorPolicy(node.on_error, p.ctx.dead_letter_path)


def _udf_fields(p: _Planning, node: AbstractUDF) -> dict:
    return dict(
        name=node.name,
        fn=node.fn,
        fn_args=node.fn_args,
        fn_kwargs=node.fn_kwargs,
        is_class=node.is_class,
        fn_constructor_args=node.fn_constructor_args,
        fn_constructor_kwargs=node.fn_constructor_kwargs,
        on_error=_error_policy(p, node),
    )


def _stage(p: _Planning, node: LogicalOperator) -> Stage:
    build = _STAGES.get(type(node))
    if build is None:
        raise PlanError(f"{node.name} ({type(node).__name__}) cannot run inside a map stage")
    return build(p, node)


@_stages(MapBatches)
def _map_batches_stage(p: _Planning, node: MapBatches) -> Stage:
    return MapBatchesStage(
        **_udf_fields(p, node),
        batch_size=node.batch_size,
        batch_format=node.batch_format,
        zero_copy_batch=node.zero_copy_batch,
    )


@_stages(MapRows)
def _map_rows_stage(p: _Planning, node: MapRows) -> Stage:
    return MapRowsStage(**_udf_fields(p, node))


@_stages(FlatMap)
def _flat_map_stage(p: _Planning, node: FlatMap) -> Stage:
    return FlatMapStage(**_udf_fields(p, node))


@_stages(Filter)
def _filter_stage(p: _Planning, node: Filter) -> Stage:
    if (node.fn is None) == (node.expr is None):
        raise PlanError(f"{node.name}: give exactly one of fn or expr")
    fields = _udf_fields(p, node)
    if node.expr is not None:
        fields["fn"] = None
    expr = node.expr.to_arrow() if node.expr is not None else None
    return FilterStage(**fields, expr=expr)


@_stages(Write)
def _write_stage(p: _Planning, node: Write) -> Stage:
    return WriteStage(node.name, datasink=node.datasink)


@_stages(Project)
def _project_stage(p: _Planning, node: Project) -> ProjectStage:
    return ProjectStage(
        node.name,
        exprs=_arrow_exprs(node.exprs),
        select=node.select,
        drop=node.drop,
        rename=node.rename,
        with_columns=_arrow_exprs(node.with_columns),
    )


def _arrow_exprs(exprs: tuple | None) -> tuple | None:
    return None if exprs is None else tuple((n, e.to_arrow()) for n, e in exprs)


def _read_tasks(
    p: _Planning, read: Read, sizer: TaskSizer | None = None
) -> tuple[Iterator[ReadTask], list[Stage]]:
    """The datasource's read tasks (a lazy iterator) with the pushdowns it
    supports, plus stages applying in the task the ones it does not; ``sizer``
    goes to sources that size tasks from measured cost."""
    ds = read.datasource
    parallelism = read.parallelism or p.ctx.read_parallelism_factor * p.cpu_slots()
    pushdown = read.pushdown()
    compensate: list[Stage] = []
    if read.predicate is not None and "filter" not in pushdown:
        compensate.append(FilterStage(f"filter({read.predicate})", expr=read.predicate.to_arrow()))
    if read.columns is not None and "columns" not in pushdown:
        compensate.append(ProjectStage("select_columns", select=tuple(read.columns)))
    if sizer is not None:
        pushdown["sizer"] = sizer

    def tasks() -> Iterator[ReadTask]:
        yield from ds.iter_read_tasks(parallelism, **pushdown)

    return tasks(), compensate


# -- where the plan runs ---------------------------------------------------------------


def _runs_in_driver(plan: LogicalOperator, ctx: DataContext) -> bool:
    """Plans with no Python UDF run on the driver's threads, with no process hop
    (DESIGN point 7), when they handle few rows or every read releases the GIL
    (Arrow's readers); a Python datasource's reads still go to workers."""
    steps = [s for node in plan.walk() for s in node.steps()]
    if any(s.runs_python for s in steps):
        return False
    bound = _rows_handled(plan)
    if bound is not None and bound <= ctx.driver_inline_max_rows:
        return True
    return all(s.datasource.reads_without_gil for s in steps if isinstance(s, Read))


def _rows_handled(node: LogicalOperator) -> int | None:
    """An upper bound on the rows any operator of the plan handles: the most
    any node outputs, except that a ``Limit`` stops what is upstream of it
    early (its tasks stop launching once the limit is covered)."""
    if isinstance(node, Limit):
        return node.max_rows()
    if isinstance(node, FusedMap):
        return _rows_handled(node.unfused())  # the read inside counts too
    bounds = [node.max_rows(), *(_rows_handled(c) for c in node.inputs)]
    return None if None in bounds else max(bounds)  # type: ignore[type-var]
