"""Logical operators: frozen dataclasses, one per Dataset transform or source.

Every ``Dataset`` method appends exactly one node. Nodes never change after
construction; optimizer rules build new trees with ``transform_up`` and
``dataclasses.replace``. ``inputs`` holds the upstream nodes (empty for sources).

A node answers what is known about its output without running anything, so
that the facade, the optimizer, the planner, ``count()``, ``schema()`` and
``explain()`` ask it instead of re-deriving: ``output_schema()``,
``num_rows()`` (exact), ``max_rows()`` (an upper bound), ``preserves_rows``
(one row out per row in, in order) and ``runs_python`` (user code runs).

>>> from dataflow.plan.logical import Limit, InputData
>>> Limit(n=5, inputs=(InputData(blocks=()),)).name
'limit(5)'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import pyarrow as pa

from dataflow.errors import PlanError
from runtime.resources import Resources

if TYPE_CHECKING:
    from dataflow.expressions import Expr
    from dataflow.sources.datasource import Datasink, Datasource

OnError = Literal["raise", "skip", "dead_letter"]
ON_ERROR: tuple[str, ...] = get_args(OnError)
"""What a UDF does when its function raises on a row or batch: stop the run,
drop the failing rows, or write them to ``DataContext.dead_letter_path``."""


def check_on_error(where: str, on_error: Any) -> None:
    """Reject an ``on_error`` outside ``ON_ERROR`` (the facade and the planner both ask)."""
    if on_error not in ON_ERROR:
        raise PlanError(f"{where}: on_error must be one of {ON_ERROR}, got {on_error!r}")


@dataclass(frozen=True)
class Compute:
    """How a UDF stage runs: a task pool, or an actor pool of ``min_size..max_size``
    long-lived workers (callable classes), starting with ``initial_size`` (None:
    the planner picks) and giving each actor at most ``max_tasks_in_flight``
    tasks at once (None: ``DataContext.actor_max_tasks_in_flight``).
    ``use_threads`` lets a vectorized, GIL-releasing UDF run on threads instead
    of worker processes."""

    kind: Literal["tasks", "actors"] = "tasks"
    min_size: int = 1
    max_size: int | None = None
    use_threads: bool = False
    initial_size: int | None = None
    max_tasks_in_flight: int | None = None


@dataclass(frozen=True)
class LogicalOperator:
    """Base node. Subclasses add their parameters as fields after ``inputs``."""

    inputs: tuple[LogicalOperator, ...] = field(default=(), kw_only=True)

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def input(self) -> LogicalOperator:
        """The single upstream node of a one-input operator."""
        (only,) = self.inputs
        return only

    def with_inputs(self, *inputs: LogicalOperator) -> LogicalOperator:
        return dataclasses.replace(self, inputs=tuple(inputs))

    def walk(self) -> Iterator[LogicalOperator]:
        """This node and every node below it, upstream first (post-order)."""
        for child in self.inputs:
            yield from child.walk()
        yield self

    def transform_up(self, fn: Callable[[LogicalOperator], LogicalOperator]) -> LogicalOperator:
        """Rewrite bottom-up: children first, then ``fn`` on the rebuilt node."""
        new_inputs = tuple(c.transform_up(fn) for c in self.inputs)
        node = self if new_inputs == self.inputs else self.with_inputs(*new_inputs)
        return fn(node)

    def steps(self) -> tuple[LogicalOperator, ...]:
        """The operators this node runs: itself, or a fused node's stages."""
        return (self,)

    # -- what is known without running ----------------------------------------------

    keeps_schema: ClassVar[bool] = False
    """The output has the (first) input's columns: the node only drops, orders
    or regroups rows (Ray Data's ``LogicalOperatorPreservesSchema``)."""

    def output_schema(self) -> pa.Schema | None:
        """The output schema when known without running anything; None when
        only running tells (user code decides the columns)."""
        return self.inputs[0].output_schema() if self.keeps_schema else None

    @property
    def preserves_rows(self) -> bool:
        """Exactly one output row per input row, in order, none dropped: a
        ``Limit`` above may move below it, and its row count is its input's."""
        return False

    @property
    def runs_python(self) -> bool:
        """User Python code runs in this node (a function, a custom aggregation, a sink)."""
        return False

    def num_rows(self) -> int | None:
        """The exact number of output rows from metadata, else None. A node
        running user code does not know it: ``count()`` then runs the plan so
        that the code's errors surface (a map raising on every row must not
        count), as in Ray Data."""
        if self.preserves_rows and not self.runs_python:
            return self.input.num_rows()
        return None

    def max_rows(self) -> int | None:
        """An upper bound on the output rows from metadata, else None."""
        return None


def _fn_name(fn: Any) -> str:
    if fn is None:
        return ""
    return getattr(fn, "__name__", None) or type(fn).__name__


# -- sources ---------------------------------------------------------------------


@dataclass(frozen=True)
class Read(LogicalOperator):
    """Read from a ``Datasource``; the optimizer pushes ``columns``, ``predicate``
    and ``limit`` into it."""

    datasource: Datasource
    parallelism: int | None = None
    columns: tuple[str, ...] | None = None
    predicate: Expr | None = None
    limit: int | None = None
    compute: Compute = Compute()
    """Ray's ``concurrency=n`` on a read: at most ``n`` read tasks at once."""
    resources: Resources = Resources(cpu=1)
    """What each read task reserves (Ray's ``num_cpus`` / ``num_gpus`` / ...)."""
    dictionary_columns: tuple[str, ...] = ()
    """String columns the source reads dictionary-encoded (group keys of an
    aggregation right above: ``rules/dictionary_keys``)."""

    @property
    def name(self) -> str:
        return f"read_{self.datasource.get_name()}"

    def output_schema(self) -> pa.Schema | None:
        schema = self.datasource.schema()
        if schema is None or self.columns is None:
            return schema
        if not set(self.columns) <= set(schema.names):
            return None  # the read fails when it runs: no schema to promise
        return pa.schema([schema.field(c) for c in self.columns])

    def num_rows(self) -> int | None:
        return None if self.predicate is not None else self.max_rows()

    def max_rows(self) -> int | None:
        n = self.datasource.num_rows()
        if self.limit is None:
            return n
        return self.limit if n is None else min(n, self.limit)

    def pushdown(self) -> dict[str, Any]:
        """The keyword arguments of ``get_read_tasks``: the pushed columns,
        predicate and limit that the datasource says it applies (the planner
        applies the others after the read). The predicate is an Arrow
        expression, or the ``Expr`` itself for a source with ``filter_as_expr``."""
        ds = self.datasource
        out: dict[str, Any] = {}
        if self.predicate is not None and ds.supports_predicate_pushdown:
            expr = getattr(ds, "filter_as_expr", False)
            out["filter"] = self.predicate if expr else self.predicate.to_arrow()
        if self.columns is not None and ds.supports_projection_pushdown:
            out["columns"] = list(self.columns)
        if self.limit is not None and ds.supports_limit_pushdown:
            out["limit"] = self.limit
        if self.dictionary_columns and ds.supports_dictionary_read:
            out["dictionary_columns"] = list(self.dictionary_columns)
        return out


@dataclass(frozen=True)
class InputData(LogicalOperator):
    """Blocks already in memory (``from_items``, ``from_pandas``, ``from_arrow``...)."""

    blocks: tuple[pa.Table, ...]

    @property
    def name(self) -> str:
        return "from_blocks"

    def output_schema(self) -> pa.Schema | None:
        return self.blocks[0].schema if self.blocks else None

    def num_rows(self) -> int:
        return sum(t.num_rows for t in self.blocks)

    def max_rows(self) -> int:
        return self.num_rows()


@dataclass(frozen=True)
class MaterializedData(LogicalOperator):
    """Blocks held in the object store by ``materialize()`` (refs stay alive with it)."""

    bundles: tuple[Any, ...]  # tuple[exec.interfaces.RefBundle, ...]
    owner: Any = None  # keeps the refs alive; frees them when collected

    @property
    def name(self) -> str:
        return "materialized"

    def output_schema(self) -> pa.Schema | None:
        return next((b.schema for b in self.bundles if b.schema is not None), None)

    def num_rows(self) -> int:
        return sum(b.num_rows for b in self.bundles)

    def max_rows(self) -> int:
        return self.num_rows()


# -- one-to-one transforms -------------------------------------------------------


@dataclass(frozen=True)
class AbstractUDF(LogicalOperator):
    """A transform running user Python code; its compute and resources decide fusion."""

    fn: Any = None
    fn_args: tuple = ()
    fn_kwargs: tuple[tuple[str, Any], ...] = ()
    fn_constructor_args: tuple = ()
    fn_constructor_kwargs: tuple[tuple[str, Any], ...] = ()
    compute: Compute = Compute()
    resources: Resources = Resources(cpu=1)
    on_error: OnError = "raise"

    @property
    def is_class(self) -> bool:
        return isinstance(self.fn, type)

    @property
    def runs_python(self) -> bool:
        return self.fn is not None

    calls_per_row: ClassVar[bool] = False
    """``fn`` is called once per row (not per batch)."""


@dataclass(frozen=True)
class MapBatches(AbstractUDF):
    batch_size: int | None = None
    batch_format: str = "default"
    zero_copy_batch: bool = False
    modifies_row_count: bool = True
    """False (Ray's ``udf_modifying_row_count=False``): one row out per row in,
    so a ``Limit`` above may move below it."""

    @property
    def name(self) -> str:
        return f"map_batches({_fn_name(self.fn)})"

    @property
    def preserves_rows(self) -> bool:
        return not self.modifies_row_count and self.on_error == "raise"

    def max_rows(self) -> int | None:
        return None if self.modifies_row_count else self.input.max_rows()


@dataclass(frozen=True)
class MapRows(AbstractUDF):
    calls_per_row: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return f"map({_fn_name(self.fn)})"

    @property
    def preserves_rows(self) -> bool:
        return self.on_error == "raise"  # "skip" drops the rows whose call raised

    def max_rows(self) -> int | None:
        return self.input.max_rows()


@dataclass(frozen=True)
class FlatMap(AbstractUDF):
    calls_per_row: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return f"flat_map({_fn_name(self.fn)})"


@dataclass(frozen=True)
class Filter(AbstractUDF):
    """``fn`` (row -> bool) or ``expr`` (an ``Expr``), exactly one of them."""

    expr: Expr | None = None
    keeps_schema: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return f"filter({self.expr if self.expr is not None else _fn_name(self.fn)})"

    @property
    def calls_per_row(self) -> bool:  # type: ignore[override]
        return self.fn is not None

    def max_rows(self) -> int | None:
        return self.input.max_rows()


@dataclass(frozen=True)
class Project(LogicalOperator):
    """Column-level rewrite without Python UDFs: ``exprs`` is the output schema in
    order, each ``(name, Expr)`` (``col("a")`` for a kept column). Covers
    select_columns, drop_columns, rename_columns and with_column."""

    exprs: tuple[tuple[str, Expr], ...] | None = None
    select: tuple[str, ...] | None = None
    drop: tuple[str, ...] | None = None
    rename: tuple[tuple[str, str], ...] | None = None
    with_columns: tuple[tuple[str, Expr], ...] | None = None
    label: str = "project"

    @property
    def name(self) -> str:
        return self.label

    @property
    def preserves_rows(self) -> bool:
        return True

    def output_schema(self) -> pa.Schema | None:
        schema = self.input.output_schema()
        if schema is None:
            return None
        try:
            return self.apply_to_schema(schema)
        except (KeyError, pa.ArrowException):
            return None  # a column the input lacks: the projection fails when it runs

    def apply_to_schema(self, schema: pa.Schema) -> pa.Schema:
        """The output schema given the input's ``schema``, the fields applied in
        the projection's order (``exprs``, ``select``, ``drop``, ``rename``,
        ``with_columns``); an expression's type is that of its value over an
        empty table. ``KeyError`` names a column the input lacks."""
        if self.exprs is not None:
            empty = schema.empty_table()
            schema = pa.schema([pa.field(name, e.eval(empty).type) for name, e in self.exprs])
        for names in (self.select, self.drop, self.rename and [old for old, _ in self.rename]):
            missing = [c for c in names or () if c not in schema.names]
            if missing:
                raise KeyError(missing[0])
        if self.select is not None:
            schema = pa.schema([schema.field(c) for c in self.select])
        if self.drop:
            schema = pa.schema([f for f in schema if f.name not in self.drop])
        if self.rename:
            new = dict(self.rename)
            schema = pa.schema([f.with_name(new.get(f.name, f.name)) for f in schema])
        if self.with_columns:
            empty = schema.empty_table()
            for name, expr in self.with_columns:
                typed = pa.field(name, expr.eval(empty).type)
                idx = schema.get_field_index(name)
                schema = schema.set(idx, typed) if idx >= 0 else schema.append(typed)
        return schema

    def max_rows(self) -> int | None:
        return self.input.max_rows()


@dataclass(frozen=True)
class Limit(LogicalOperator):
    n: int
    keeps_schema: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return f"limit({self.n})"

    def num_rows(self) -> int | None:
        below = self.input.num_rows()
        return None if below is None else min(self.n, below)

    def max_rows(self) -> int:
        below = self.input.max_rows()
        return self.n if below is None else min(self.n, below)


# -- n-ary -----------------------------------------------------------------------


@dataclass(frozen=True)
class Union(LogicalOperator):
    keeps_schema: ClassVar[bool] = True  # the first input's

    @property
    def name(self) -> str:
        return "union"

    def num_rows(self) -> int | None:
        return _total(c.num_rows() for c in self.inputs)

    def max_rows(self) -> int | None:
        return _total(c.max_rows() for c in self.inputs)


@dataclass(frozen=True)
class Zip(LogicalOperator):
    @property
    def name(self) -> str:
        return "zip"

    def num_rows(self) -> int | None:
        counts = {c.num_rows() for c in self.inputs}
        return counts.pop() if len(counts) == 1 else None  # unequal inputs fail when run

    def max_rows(self) -> int | None:
        bounds = [c.max_rows() for c in self.inputs]
        return None if None in bounds else min(bounds)  # type: ignore[type-var]


def _total(counts: Iterator[int | None]) -> int | None:
    values = list(counts)
    return None if None in values else sum(values)  # type: ignore[arg-type]


# -- sinks -----------------------------------------------------------------------


@dataclass(frozen=True)
class Write(LogicalOperator):
    datasink: Datasink
    min_rows_per_task: int = 0
    """Rows a write task gathers before it starts (``min_rows_per_file``): the
    task's input blocks are bundled until they hold that many."""
    compute: Compute = Compute()
    """Ray's ``concurrency=n`` on a write: at most ``n`` write tasks at once."""
    resources: Resources = Resources(cpu=1)
    """What each write task reserves (``ray_remote_args``)."""

    @property
    def fusable(self) -> bool:
        """Only a default write joins the task before it (its bundling and
        limits apply to its own tasks)."""
        return (self.min_rows_per_task, self.compute, self.resources) == (
            0,
            Compute(),
            Resources(cpu=1),
        )

    @property
    def name(self) -> str:
        return f"write_{self.datasink.get_name()}"

    @property
    def runs_python(self) -> bool:
        return True  # a Datasink's write is Python (any sink may be user code)


ONE_TO_ONE = (MapBatches, MapRows, FlatMap, Filter, Project)
"""Operators that take one block and give blocks back without seeing others: fusable."""


@dataclass(frozen=True)
class FusedMap(LogicalOperator):
    """Consecutive one-to-one stages fused by the optimizer into one physical map
    stage (one task per block, no intermediate objects). ``stages`` is upstream
    first; ``stages[0]`` may be the ``Read`` that feeds them, in which case
    ``inputs`` is empty. Every stage has the same compute and resources."""

    stages: tuple[LogicalOperator, ...] = ()

    @property
    def name(self) -> str:
        return "->".join(s.name for s in self.stages)

    def steps(self) -> tuple[LogicalOperator, ...]:
        return self.stages

    def unfused(self) -> LogicalOperator:
        """The stages as the chain of nodes they were: what this node knows is
        what that chain knows."""
        chain = self.stages[0] if not self.inputs else self.stages[0].with_inputs(*self.inputs)
        for stage in self.stages[1:]:
            chain = stage.with_inputs(chain)
        return chain

    def output_schema(self) -> pa.Schema | None:
        return self.unfused().output_schema()

    @property
    def preserves_rows(self) -> bool:
        return bool(self.inputs) and all(s.preserves_rows for s in self.stages)

    @property
    def runs_python(self) -> bool:
        return any(s.runs_python for s in self.stages)

    def num_rows(self) -> int | None:
        return self.unfused().num_rows()

    def max_rows(self) -> int | None:
        return self.unfused().max_rows()


# -- all-to-all (an exchange: every input block is needed before output) ----------


@dataclass(frozen=True)
class Repartition(LogicalOperator):
    """``num_blocks`` output blocks: row order kept (split/merge), or with
    ``shuffle`` rows scattered randomly."""

    keeps_schema: ClassVar[bool] = True

    num_blocks: int
    shuffle: bool = False
    keys: tuple[str, ...] = ()
    """Hash-partition by these columns (rows with equal keys share a block)."""
    sort: bool = False
    """With ``keys``: each block sorted by them."""

    @property
    def name(self) -> str:
        by = f", keys={list(self.keys)}" if self.keys else ""
        return f"repartition({self.num_blocks}{by})"

    def max_rows(self) -> int | None:
        return self.input.max_rows()


@dataclass(frozen=True)
class RandomShuffle(LogicalOperator):
    """Rows in a random order; ``seed`` makes it the same order on every run."""

    keeps_schema: ClassVar[bool] = True

    seed: int | None = None
    num_blocks: int | None = None

    @property
    def name(self) -> str:
        return "random_shuffle" if self.seed is None else f"random_shuffle(seed={self.seed})"

    def max_rows(self) -> int | None:
        return self.input.max_rows()


@dataclass(frozen=True)
class RandomizeBlockOrder(LogicalOperator):
    """Blocks in a random order (rows inside a block keep theirs); no data moves."""

    keeps_schema: ClassVar[bool] = True

    seed: int | None = None

    @property
    def name(self) -> str:
        return "randomize_block_order"

    def max_rows(self) -> int | None:
        return self.input.max_rows()


@dataclass(frozen=True)
class Sort(LogicalOperator):
    """Rows sorted by ``keys`` (nulls last in either direction). ``limit``: only
    the first ``limit`` rows are needed (set by the optimizer's ``topk`` rule)."""

    keeps_schema: ClassVar[bool] = True

    keys: tuple[str, ...]
    descending: tuple[bool, ...]
    limit: int | None = None

    @property
    def name(self) -> str:
        top = "" if self.limit is None else f", top {self.limit}"
        return f"sort({', '.join(self.keys)}{top})"

    def max_rows(self) -> int | None:
        return self.input.max_rows()


@dataclass(frozen=True)
class Aggregate(LogicalOperator):
    """One row per distinct ``keys`` (one row overall without keys) with one
    column per aggregation (``dataflow.aggregate.AggregateFn``)."""

    keys: tuple[str, ...]
    aggs: tuple[Any, ...]
    num_partitions: int | None = None

    @property
    def name(self) -> str:
        aggs = ", ".join(a.name for a in self.aggs)
        if not self.keys:
            return f"aggregate({aggs})"
        return f"groupby({', '.join(self.keys)}).aggregate({aggs})"

    @property
    def runs_python(self) -> bool:
        return any(a.runs_python for a in self.aggs)

    def max_rows(self) -> int | None:
        return 1 if not self.keys else self.input.max_rows()


@dataclass(frozen=True)
class MapGroups(LogicalOperator):
    """``fn`` called once per group of rows with equal ``keys``, in ``batch_format``."""

    keys: tuple[str, ...]
    fn: Any = None
    batch_format: str = "default"
    fn_args: tuple = ()
    fn_kwargs: tuple[tuple[str, Any], ...] = ()
    resources: Resources = Resources(cpu=1)
    num_partitions: int | None = None
    fn_constructor_args: tuple = ()
    fn_constructor_kwargs: tuple[tuple[str, Any], ...] = ()
    """A callable class ``fn`` is built with these once per reduce task."""
    zero_copy_batch: bool = True
    """False: numpy batches are writable copies (Ray's meaning)."""

    @property
    def name(self) -> str:
        return f"map_groups({_fn_name(self.fn)})"

    @property
    def runs_python(self) -> bool:
        return True


@dataclass(frozen=True)
class Join(LogicalOperator):
    """Hash join of ``inputs[0]`` (left) and ``inputs[1]`` (right) on
    ``left_on`` = ``right_on``; ``how`` is inner, left, right or outer."""

    left_on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: str = "inner"
    right_suffix: str = "_right"
    num_partitions: int | None = None

    @property
    def name(self) -> str:
        return f"join({self.how}, on={', '.join(self.left_on)})"


ALL_TO_ALL = (Repartition, RandomShuffle, RandomizeBlockOrder, Sort, Aggregate, MapGroups, Join)
"""Operators that need every input block before their output is complete."""
