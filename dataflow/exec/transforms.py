"""Block transforms: what a map task runs inside a worker.

Each one-to-one logical operator becomes a ``Stage``; a fused chain is a tuple
of stages composed over a stream of blocks, so read -> map -> filter runs as one
task per block with no intermediate objects. ``MapTaskFn`` is the function
registered with the backend (pickled once, cached per worker); ``ActorFactory``
builds one per actor, constructing callable classes there exactly once.

Task call signature (Backend protocol): ``fn(inputs, task_index, read_task)``
where ``read_task`` is a ``ReadTask`` for source tasks and None otherwise.

>>> fn = MapTaskFn((FilterStage("filter(x > 1)", expr=pc.field("x") > 1),), 1 << 20)
>>> [t.num_rows for t in fn([pa.table({"x": [1, 2, 3]})], 0, None)]
[2]
"""

from __future__ import annotations

import inspect
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataflow.acero import filter_table, project
from dataflow.block import (
    array_from_numpy,
    check_batch_format,
    from_batch,
    iter_rows,
    keep_types,
    rebatch,
    rows_to_table,
    split_to_max_size,
    to_batch,
)
from dataflow.errors import DataflowError, PlanError, SourceError, UserCodeError, unknown_columns
from dataflow.exec.metering import (
    READ_FILES,
    WRITE_BYTES,
    WRITE_FILES,
    WRITE_ROWS,
    ChainMeter,
    ChainState,
    StepInfo,
)
from runtime.errors import RemoteTaskError
from runtime.store import table_nbytes
from runtime.task import current_task

if TYPE_CHECKING:
    from dataflow.sources.datasource import Datasink, ReadTask

BoundFn = Callable[[Iterator[pa.Table]], Iterator[pa.Table]]


class StageFailure(Exception):
    """User code raised inside a stage. Always picklable: it carries the
    original exception only when that pickles, and its traceback as text."""

    def __init__(
        self,
        operator: str,
        type_name: str,
        message: str,
        traceback_text: str,
        original: BaseException | None = None,
    ) -> None:
        super().__init__(f"{operator}: {type_name}: {message}")
        self.operator = operator
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text
        self.original = original

    def __reduce__(self):
        return (
            StageFailure,
            (self.operator, self.type_name, self.message, self.traceback_text, self.original),
        )

    @classmethod
    def wrap(cls, operator: str, exc: BaseException) -> StageFailure:
        """``exc`` captured by the runtime's one rule (``RemoteTaskError.capture``),
        its traceback starting at the user's frame (this module's are dropped)."""
        captured = RemoteTaskError.capture(exc, operator, skip_file=__file__)
        return cls(
            operator, captured.type_name, captured.message, captured.traceback_text, captured.cause
        )


def remote_to_user_error(op: str, label: str, e: RemoteTaskError) -> DataflowError:
    """A task's ``RemoteTaskError`` as the dataflow error its user should see: a
    ``StageFailure`` (user code in a stage) becomes a ``UserCodeError`` naming
    the operator and the block ``label``, with the user's traceback; a
    ``DataflowError`` raised on purpose is raised as itself (naming the block);
    anything else is a ``UserCodeError`` of ``op``."""
    cause = e.cause
    if isinstance(cause, StageFailure):
        err: DataflowError = UserCodeError(
            f"{cause.operator} failed on {label}: {cause.type_name}: {cause.message}\n\n"
            f"Remote traceback:\n{cause.traceback_text}",
            operator=cause.operator,
            block=label,
            remote_traceback=cause.traceback_text,
        )
        err.__cause__ = cause.original
        return err
    if isinstance(cause, DataflowError):
        if isinstance(cause, SourceError) or label in str(cause):
            return cause
        cause.args = (f"{cause} ({label})", *cause.args[1:])
        return cause
    err = UserCodeError(
        f"{op} failed on {label}: {e.type_name}: {e.message}\n\nRemote traceback:\n"
        f"{e.traceback_text}",
        operator=op,
        block=label,
        remote_traceback=e.traceback_text,
    )
    err.__cause__ = cause
    return err


# -- row-level error policy ---------------------------------------------------------------


@dataclass(frozen=True)
class ErrorPolicy:
    """``on_error`` of a stage: raise, skip failing rows, or write them to
    ``dead_letter_path`` as parquet with an ``error`` column."""

    mode: str = "raise"
    dead_letter_path: str | None = None

    def rows_failed(
        self, stage: str, table: pa.Table, indices: list[int], errors: list[str]
    ) -> None:
        if not indices:
            return
        current_task().add("rows_skipped", len(indices))
        if self.mode != "dead_letter":
            return
        bad = table.take(pa.array(indices, pa.int64()))
        bad = bad.append_column("error", pa.array(errors, pa.string()))
        os.makedirs(self.dead_letter_path, exist_ok=True)
        import pyarrow.parquet as pq

        safe = "".join(c if c.isalnum() else "_" for c in stage).strip("_")
        pq.write_table(
            bad, os.path.join(self.dead_letter_path, f"{safe}-{uuid.uuid4().hex}.parquet")
        )


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- stages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One one-to-one transform over a stream of blocks."""

    name: str

    def bind(self) -> BoundFn:
        """Build the per-worker callable (constructs callable classes)."""
        raise NotImplementedError

    @property
    def is_python_udf(self) -> bool:
        return False


@dataclass(frozen=True)
class UDFStage(Stage):
    """Shared parts of stages running a user function or callable class."""

    fn: Any = None
    fn_args: tuple = ()
    fn_kwargs: tuple[tuple[str, Any], ...] = ()
    is_class: bool = False
    fn_constructor_args: tuple = ()
    fn_constructor_kwargs: tuple[tuple[str, Any], ...] = ()
    on_error: ErrorPolicy = field(default_factory=ErrorPolicy)

    @property
    def is_python_udf(self) -> bool:
        return self.fn is not None

    def _callable(self) -> Callable[..., Any]:
        if not self.is_class:
            return self.fn
        try:
            return self.fn(*self.fn_constructor_args, **dict(self.fn_constructor_kwargs))
        except Exception as e:
            raise StageFailure.wrap(f"{self.name} constructor", e) from None

    def _row_fn(self, fn: Callable[..., Any]) -> Callable[[dict], Any]:
        """``fn`` with the stage's extra arguments bound (``fn`` itself when none)."""
        args, kwargs = self.fn_args, dict(self.fn_kwargs)
        return (lambda r: fn(r, *args, **kwargs)) if args or kwargs else fn

    def _map_rows(self, table: pa.Table, call: Callable[[dict], Any]) -> list[Any]:
        """``call`` on every row, results in row order (failing rows skipped when the
        error policy allows). Raising policy: one C-level ``map``, no Python per row."""
        if self.on_error.mode != "raise":
            return [out for _, out in self._call_rows(table, call)]
        try:
            return list(map(call, iter_rows(table)))
        except Exception as e:
            raise StageFailure.wrap(self.name, e) from None

    def _call_rows(self, table: pa.Table, call: Callable[[dict], Any]) -> Iterator[tuple[int, Any]]:
        """(row index, result) for each row; failing rows follow the error policy."""
        bad: list[int] = []
        errors: list[str] = []
        for i, row in enumerate(iter_rows(table)):
            try:
                result = call(row)
            except Exception as e:
                if self.on_error.mode == "raise":
                    raise StageFailure.wrap(self.name, e) from None
                bad.append(i)
                errors.append(_error_text(e))
                continue
            yield i, result
        self.on_error.rows_failed(self.name, table, bad, errors)


@dataclass(frozen=True)
class MapBatchesStage(UDFStage):
    batch_size: int | None = 1024
    batch_format: str = "default"
    zero_copy_batch: bool = False

    def bind(self) -> BoundFn:
        fn = self._callable()
        args, kwargs = self.fn_args, dict(self.fn_kwargs)
        fmt = check_batch_format(self.batch_format, self.name)

        # pandas and numpy batches retype some columns (string -> large_string...):
        # outputs get their input's types back where the round trip changed them.
        retyped = fmt != "pyarrow"

        def call(table: pa.Table) -> list[pa.Table]:
            out = fn(_to_udf_batch(table, fmt, self.zero_copy_batch), *args, **kwargs)
            if inspect.isgenerator(out):
                outs = [from_batch(b, self.name) for b in out]
            else:
                outs = [from_batch(out, self.name)]
            return [keep_types(t, table.schema) for t in outs] if retyped else outs

        def run(blocks: Iterator[pa.Table]) -> Iterator[pa.Table]:
            for batch in rebatch(blocks, self.batch_size):
                try:
                    yield from call(batch)
                except Exception as e:
                    if self.on_error.mode == "raise":
                        raise StageFailure.wrap(self.name, e) from None
                    # Retry row by row to keep the good rows and isolate the bad ones.
                    yield from self._retry_rows(batch, call)

        return run

    def _retry_rows(
        self, batch: pa.Table, call: Callable[[pa.Table], list[pa.Table]]
    ) -> Iterator[pa.Table]:
        bad: list[int] = []
        errors: list[str] = []
        for i in range(batch.num_rows):
            try:
                yield from call(batch.slice(i, 1))
            except Exception as e:
                bad.append(i)
                errors.append(_error_text(e))
        self.on_error.rows_failed(self.name, batch, bad, errors)


def _to_udf_batch(table: pa.Table, fmt: str, zero_copy: bool) -> Any:
    if fmt == "cupy":
        import cupy

        batch = to_batch(table, "numpy")
        return {k: cupy.asarray(v) if v.dtype.kind in "biuf" else v for k, v in batch.items()}
    batch = to_batch(table, fmt)
    if fmt == "numpy" and not zero_copy:
        # Arrays may view read-only shared memory; a UDF that writes in place needs a copy.
        return {k: v if v.flags.writeable else v.copy() for k, v in batch.items()}
    return batch


@dataclass(frozen=True)
class MapRowsStage(UDFStage):
    def bind(self) -> BoundFn:
        call = self._row_fn(self._callable())

        def run(blocks: Iterator[pa.Table]) -> Iterator[pa.Table]:
            for table in blocks:
                out = _rows_block(self.name, table, lambda part: self._map_rows(part, call))
                if out is not None:
                    yield out

        return run


@dataclass(frozen=True)
class FlatMapStage(UDFStage):
    def bind(self) -> BoundFn:
        fn = self._row_fn(self._callable())

        def rows(part: pa.Table) -> list[dict]:
            return [row for outs in self._map_rows(part, lambda r: list(fn(r))) for row in outs]

        def run(blocks: Iterator[pa.Table]) -> Iterator[pa.Table]:
            for table in blocks:
                out = _rows_block(self.name, table, rows)
                if out is not None:
                    yield out

        return run


# Rows turned into dicts at a time: the dicts of a slice stay in cache (~20 %
# faster than a whole block on a per-row UDF) and memory stays bounded.
_ROW_SLICE = 16 * 1024


def _rows_block(
    where: str, table: pa.Table, rows_of: Callable[[pa.Table], list[dict]]
) -> pa.Table | None:
    """The output rows of ``table`` as one block (None when there are none),
    made slice by slice."""
    try:
        parts = []
        for start in range(0, table.num_rows, _ROW_SLICE):
            rows = rows_of(table.slice(start, _ROW_SLICE))
            if rows:
                parts.append(rows_to_table(rows, where))
        if len(parts) <= 1:
            return parts[0] if parts else None
        return pa.concat_tables(parts, promote_options="permissive")
    except StageFailure:
        raise
    except Exception as e:
        raise StageFailure.wrap(where, e) from None


@dataclass(frozen=True)
class FilterStage(UDFStage):
    """Keep rows where ``fn(row)`` is true, or where ``expr`` (a pyarrow
    compute expression) evaluates true."""

    expr: pc.Expression | None = None

    def bind(self) -> BoundFn:
        if self.expr is not None:
            expr = self.expr

            def run_expr(blocks: Iterator[pa.Table]) -> Iterator[pa.Table]:
                # An expression filter costs ~80 us per call and per chunk whatever
                # the size: small blocks (e.g. 1024-row map_batches outputs) are
                # joined, then made contiguous (one copy, cheaper than per-chunk work).
                for table in _joined(blocks, _FILTER_MIN_ROWS):
                    if table.num_columns and table.column(0).num_chunks > 1:
                        table = table.combine_chunks()
                    yield _with_columns_checked(
                        self.name, table, lambda t=table: filter_table(t, expr)
                    )

            return run_expr
        call = self._row_fn(self._callable())

        def run(blocks: Iterator[pa.Table]) -> Iterator[pa.Table]:
            for table in blocks:
                if self.on_error.mode == "raise":
                    keep = self._map_rows(table, call)
                    mask = np.fromiter(map(bool, keep), dtype=bool, count=len(keep))
                else:
                    mask = np.zeros(table.num_rows, dtype=bool)
                    for i, kept in self._call_rows(table, call):
                        mask[i] = bool(kept)
                yield table.filter(array_from_numpy(mask))

        return run


_FILTER_MIN_ROWS = 64 * 1024


def _joined(blocks: Iterable[pa.Table], min_rows: int) -> Iterator[pa.Table]:
    """Consecutive same-schema blocks concatenated (zero-copy) until they hold
    ``min_rows``; bigger blocks pass through as they are."""
    pending: list[pa.Table] = []
    rows = 0
    for table in blocks:
        if pending and not table.schema.equals(pending[0].schema):
            yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]
            pending, rows = [], 0
        pending.append(table)
        rows += table.num_rows
        if rows >= min_rows:
            yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]
            pending, rows = [], 0
    if pending:
        yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]


@dataclass(frozen=True)
class ProjectStage(Stage):
    """Column-level rewrite with Arrow expressions only (no Python per row).
    Applied in order: ``exprs`` (the whole output), ``select``, ``drop``,
    ``rename``, ``with_columns``."""

    exprs: tuple[tuple[str, pc.Expression], ...] | None = None
    select: tuple[str, ...] | None = None
    drop: tuple[str, ...] | None = None
    rename: tuple[tuple[str, str], ...] | None = None
    with_columns: tuple[tuple[str, pc.Expression], ...] | None = None

    def bind(self) -> BoundFn:
        def run(blocks: Iterator[pa.Table]) -> Iterator[pa.Table]:
            for table in blocks:
                yield self.apply(table)

        return run

    def apply(self, table: pa.Table) -> pa.Table:
        """Project one table (also used on an empty table to derive a schema)."""
        if self.exprs is not None:
            table = _project(self.name, table, self.exprs)
        for names in (self.select, self.drop, self.rename and [a for a, _ in self.rename]):
            if names:
                _check_columns(self.name, table, names)
        if self.select is not None:
            table = table.select(list(self.select))
        if self.drop:
            table = table.drop_columns(list(self.drop))
        if self.rename:
            mapping = dict(self.rename)
            table = table.rename_columns([mapping.get(n, n) for n in table.column_names])
        if self.with_columns:
            added = _project(self.name, table, self.with_columns)
            for name in added.column_names:
                column = added.column(name)
                if name in table.column_names:
                    table = table.set_column(table.column_names.index(name), name, column)
                else:
                    table = table.append_column(name, column)
        return table


def _check_columns(where: str, table: pa.Table, names: Iterable[str]) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise unknown_columns(where, missing, table.column_names)


def _with_columns_checked(where: str, table: pa.Table, fn: Callable[[], pa.Table]) -> pa.Table:
    """Run an Arrow expression; an unknown column becomes a PlanError naming it."""
    try:
        return fn()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        missing = re.search(r"FieldRef\.Name\((.*?)\)", str(e))
        if missing:
            _check_columns(where, table, [missing.group(1)])
        raise PlanError(f"{where}: cannot evaluate the expression: {e}") from None


def _project(where: str, table: pa.Table, exprs: tuple[tuple[str, pc.Expression], ...]) -> pa.Table:
    """Evaluate named expressions over ``table``; plain column refs stay zero-copy."""
    columns: dict[str, Any] = {}
    computed: list[tuple[str, pc.Expression]] = []
    for name, expr in exprs:
        ref = next((c for c in table.column_names if expr.equals(pc.field(c))), None)
        if ref is not None:
            columns[name] = table.column(ref)
        else:
            columns[name] = None
            computed.append((name, expr))
    if computed:

        def run() -> pa.Table:
            return project(table, [e for _, e in computed], [n for n, _ in computed])

        out = _with_columns_checked(where, table, run)
        for name, _ in computed:
            columns[name] = out.column(name)
    if not columns:
        return table.select([])
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))


@dataclass(frozen=True)
class WriteStage(Stage):
    """Hand the task's blocks to ``datasink.write``; output one WriteResult row."""

    datasink: Datasink | None = None

    def bind(self) -> BoundFn:
        raise TypeError("WriteStage needs the task index: use bind_write()")

    def bind_write(self, task_index: int) -> BoundFn:
        def run(blocks: Iterator[pa.Table]) -> Iterator[pa.Table]:
            try:
                result = self.datasink.write(blocks, task_index)
            except (StageFailure, DataflowError):
                raise
            except Exception as e:
                raise StageFailure.wrap(self.name, e) from None
            task = current_task()
            task.add(WRITE_FILES, len(result.files))
            task.add(WRITE_ROWS, result.num_rows)
            task.add(WRITE_BYTES, result.num_bytes)
            yield result.to_table()

        return run

    @property
    def is_python_udf(self) -> bool:
        return True


# -- the task function -------------------------------------------------------------------


class MapTaskFn:
    """The registered task function of a map operator: read (optionally), run the
    chain, re-chunk outputs to ``max_block_size``. Binds the chain lazily once
    per process, so callable classes are built once per worker or actor."""

    def __init__(self, stages: tuple[Stage, ...], max_block_size: int, read_name: str = "") -> None:
        self.stages = stages
        self.max_block_size = max_block_size
        self.read_name = read_name
        self._bound: list[BoundFn | None] | None = None
        self._meters: ChainState | None = None
        self._bind_lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = {**self.__dict__, "_bound": None, "_meters": None}
        del state["_bind_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bind_lock = threading.Lock()

    def steps(self) -> tuple[StepInfo, ...]:
        """The chain's logical steps, in order (the read first, if any): what the
        ``step.<k>.*`` counters of its tasks refer to (``exec/metering.py``)."""
        read = (StepInfo(self.read_name, "read"),) if self.read_name else ()
        return read + tuple(StepInfo(s.name, _step_kind(s)) for s in self.stages)

    def bind(self) -> MapTaskFn:
        # Tasks of one operator may start together on a process's threads: one
        # binds (a callable class is built once), the others wait for it, and no
        # one sees the chain bound before its meters exist.
        if self._bound is None:
            with self._bind_lock:
                if self._bound is None:
                    self._meters = ChainState(len(self.stages) + bool(self.read_name))
                    self._bound = [
                        None if isinstance(s, WriteStage) else s.bind() for s in self.stages
                    ]
        return self

    def __call__(
        self,
        inputs: list[pa.Table],
        task_index: int,
        read_task: ReadTask | tuple[ReadTask, ...] | None = None,
    ) -> Iterator[pa.Table]:
        """Run the chain over ``inputs`` or over what ``read_task`` reads (several
        short reads may come in one task: their blocks follow in order)."""
        self.bind()
        # Each step's output goes through the meter: per-step time, rows and bytes.
        meter = ChainMeter(self._meters)
        first = bool(self.read_name)
        reads = read_task if isinstance(read_task, tuple) else (read_task,)
        source: Iterator[pa.Table] = (
            meter.wrap(0, (t for r in reads for t in _read(self.read_name, r)))
            if read_task is not None
            else iter(inputs)
        )
        pulled = 0  # input blocks the chain has taken so far

        def counted() -> Iterator[pa.Table]:
            nonlocal pulled
            for table in source:
                pulled += 1
                yield table

        blocks: Iterator[pa.Table] = counted()
        for k, (stage, bound) in enumerate(zip(self.stages, self._bound), first):
            fn = stage.bind_write(task_index) if isinstance(stage, WriteStage) else bound
            blocks = meter.wrap(k, fn(blocks))
        produced = False
        empty: pa.Table | None = None
        # In a read task the outputs made from one read block (e.g. one per
        # 1024-row batch) merge into one block: one store object per read block,
        # not one per batch. Other tasks keep the blocks their stages made.
        merge = read_task is not None
        pending: list[pa.Table] = []
        pending_from = held = 0
        for table in blocks:
            if table.num_rows == 0:
                empty = table
                continue
            produced = True
            nbytes = table_nbytes(table) if merge else 0
            if pending and (
                not merge
                or pulled != pending_from
                or held + nbytes > self.max_block_size
                or not table.schema.equals(pending[0].schema)
            ):
                yield from _merged(pending, self.max_block_size)
                pending, held = [], 0
            if not pending:
                pending_from = pulled
            pending.append(table)
            held += nbytes
        if pending:
            yield from _merged(pending, self.max_block_size)
        meter.report(current_task().counters)
        if not produced and empty is not None and empty.num_columns:
            yield empty  # an all-filtered task still reports its schema


def _step_kind(stage: Stage) -> str:
    if isinstance(stage, WriteStage):
        return "write"
    return "udf" if stage.is_python_udf else "builtin"


def _merged(tables: list[pa.Table], max_bytes: int) -> Iterator[pa.Table]:
    """Contiguous blocks (one chunk per column, so readers slice batches without
    copying) from same-schema ``tables``; one over ``max_bytes`` is split."""
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    if table.num_columns and table.column(0).num_chunks > 1:
        table = table.combine_chunks()
    yield from split_to_max_size(table, max_bytes)


class ActorFactory:
    """Actor factory: builds the bound ``MapTaskFn`` once per actor."""

    def __init__(self, task_fn: MapTaskFn) -> None:
        self.task_fn = task_fn

    def __call__(self) -> MapTaskFn:
        return self.task_fn.bind()


def _read(name: str, read_task: ReadTask) -> Iterator[pa.Table]:
    files = read_task.metadata.input_files
    current_task().add(READ_FILES, len(files))
    try:
        yield from read_task()
    except (StageFailure, DataflowError):
        raise
    except (OSError, pa.ArrowException) as e:
        path = files[0] if files else ""
        where = f" {', '.join(files[:3])}" if files else ""
        raise SourceError(
            f"{name}: cannot read{where}: {type(e).__name__}: {e}", path=path
        ) from None
    except Exception as e:
        raise StageFailure.wrap(name, e) from None
