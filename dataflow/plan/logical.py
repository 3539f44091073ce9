"""Logical operators: frozen dataclasses, one per Dataset transform or source.

Every ``Dataset`` method appends exactly one node. Nodes never change after
construction; optimizer rules build new trees with ``transform_up`` and
``dataclasses.replace``. ``inputs`` holds the upstream nodes (empty for sources).

>>> from dataflow.plan.logical import Limit, InputData
>>> Limit(n=5, inputs=(InputData(blocks=()),)).name
'limit(5)'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from dataflow.errors import PlanError
from runtime.resources import Resources

if TYPE_CHECKING:
    import pyarrow as pa

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


@dataclass(frozen=True)
class MaterializedData(LogicalOperator):
    """Blocks held in the object store by ``materialize()`` (refs stay alive with it)."""

    bundles: tuple[Any, ...]  # tuple[exec.interfaces.RefBundle, ...]
    owner: Any = None  # keeps the refs alive; frees them when collected

    @property
    def name(self) -> str:
        return "materialized"


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


@dataclass(frozen=True)
class MapRows(AbstractUDF):
    @property
    def name(self) -> str:
        return f"map({_fn_name(self.fn)})"


@dataclass(frozen=True)
class FlatMap(AbstractUDF):
    @property
    def name(self) -> str:
        return f"flat_map({_fn_name(self.fn)})"


@dataclass(frozen=True)
class Filter(AbstractUDF):
    """``fn`` (row -> bool) or ``expr`` (an ``Expr``), exactly one of them."""

    expr: Expr | None = None

    @property
    def name(self) -> str:
        return f"filter({self.expr if self.expr is not None else _fn_name(self.fn)})"


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


@dataclass(frozen=True)
class Limit(LogicalOperator):
    n: int

    @property
    def name(self) -> str:
        return f"limit({self.n})"


# -- n-ary -----------------------------------------------------------------------


@dataclass(frozen=True)
class Union(LogicalOperator):
    @property
    def name(self) -> str:
        return "union"


@dataclass(frozen=True)
class Zip(LogicalOperator):
    @property
    def name(self) -> str:
        return "zip"


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


# -- all-to-all (an exchange: every input block is needed before output) ----------


@dataclass(frozen=True)
class Repartition(LogicalOperator):
    """``num_blocks`` output blocks: row order kept (split/merge), or with
    ``shuffle`` rows scattered randomly."""

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


@dataclass(frozen=True)
class RandomShuffle(LogicalOperator):
    """Rows in a random order; ``seed`` makes it the same order on every run."""

    seed: int | None = None
    num_blocks: int | None = None

    @property
    def name(self) -> str:
        return "random_shuffle" if self.seed is None else f"random_shuffle(seed={self.seed})"


@dataclass(frozen=True)
class RandomizeBlockOrder(LogicalOperator):
    """Blocks in a random order (rows inside a block keep theirs); no data moves."""

    seed: int | None = None

    @property
    def name(self) -> str:
        return "randomize_block_order"


@dataclass(frozen=True)
class Sort(LogicalOperator):
    """Rows sorted by ``keys`` (nulls last in either direction). ``limit``: only
    the first ``limit`` rows are needed (set by the optimizer's ``topk`` rule)."""

    keys: tuple[str, ...]
    descending: tuple[bool, ...]
    limit: int | None = None

    @property
    def name(self) -> str:
        top = "" if self.limit is None else f", top {self.limit}"
        return f"sort({', '.join(self.keys)}{top})"


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
