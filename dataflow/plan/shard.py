"""Sharding a plan at its sources: share ``index`` of ``count`` runs the same
transforms over a disjoint part of the input, and the ``count`` shares together
cover every row exactly once.

Two ways to cut, both without talking to other processes:

* by rows (``shard_rows``): the sources' rows, numbered in dataset order
  across all sources, are cut into ranges; a source yields the slices of its
  read tasks (or in-memory blocks) that fall in its ranges. Exact to the row
  and independent of how a process cuts read tasks; needs each source's row
  count from metadata (Parquet footers, ``range``, in-memory data). This is how
  ``Dataset.shard`` and DDP ranks (``dataflow.distributed``) split a dataset.
* by read tasks (``shard_plan``): every process plans the same read tasks (a
  fixed ``parallelism``) and share ``index`` runs every ``count``-th of them;
  in-memory blocks are cut into ``count`` row ranges. For sources that cannot
  count their rows, and for DataLoader workers of ``to_torch_dataset``.

Only transforms that see one block at a time (``ONE_TO_ONE``, block order,
union) may sit above the sources: a limit, zip, sort, shuffle, aggregation or
join needs rows of every share, and raises ``PlanError`` naming it.

>>> import pyarrow as pa
>>> from dataflow.plan.logical import MapRows
>>> plan = MapRows(fn=str, inputs=(InputData(blocks=(pa.table({"x": [1, 2, 3, 4]}),)),))
>>> [shard_plan(plan, i, 2).input.blocks[0]["x"].to_pylist() for i in range(2)]
[[1, 2], [3, 4]]
>>> shard_rows(plan, [(1, 3)]).input.blocks[0]["x"].to_pylist()
[2, 3]
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from dataflow.errors import DataflowError, PlanError
from dataflow.plan.logical import (
    ONE_TO_ONE,
    Filter,
    FlatMap,
    FusedMap,
    InputData,
    LogicalOperator,
    RandomizeBlockOrder,
    Read,
    Union,
)
from dataflow.sources.datasource import Datasource, ReadTask

SHARDABLE = (*ONE_TO_ONE, FusedMap, RandomizeBlockOrder, Union)
"""Nodes that may stand between the sources and a sharded plan's output."""

ONE_PROCESS_HINT = (
    "run it in one process (e.g. DataLoader num_workers=0: dataflow already runs the "
    "pipeline in parallel), or hand its output to several processes with streaming_split(n)"
)

Range = tuple[int, int]

TASKS_PER_SHARE = 16
"""Read tasks per share when shares are dealt as whole read tasks across
processes (a source that cannot count its rows): ``parallelism`` of
``shard_plan`` for ``Dataset.shard`` and DDP ranks, the same in every process."""


# -- by rows -----------------------------------------------------------------------


def source_rows(plan: LogicalOperator) -> list[int | None]:
    """Rows each source of ``plan`` (``Read`` or in-memory) reads, in dataset
    order (before a filter given to the read: ``shard_rows`` cuts there); None
    for a source that cannot count its rows without reading them.

    >>> source_rows(InputData(blocks=(pa.table({"x": [1, 2]}),)))
    [2]
    """
    out: list[int | None] = []
    for node in plan.walk():
        if isinstance(node, InputData):
            out.append(sum(t.num_rows for t in node.blocks))
        elif isinstance(node, Read):
            out.append(node.datasource.num_rows() if node.limit is None else None)
    return out


def rows_follow_input(plan: LogicalOperator) -> bool:
    """Whether each share yields as many rows as it reads: no filter or
    flat_map above the sources. ``map_batches`` is taken to return the rows it
    is given, as a training transform does (a consumer that needs exact counts
    checks them as they come, as ``dataflow.distributed`` does)."""
    return not any(
        isinstance(s, (Filter, FlatMap)) or (isinstance(s, Read) and s.predicate is not None)
        for node in plan.walk()
        for s in (node.stages if isinstance(node, FusedMap) else (node,))
    )


def shard_rows(
    plan: LogicalOperator,
    ranges: Sequence[Range],
    *,
    where: str = "shard_rows",
    hint: str = ONE_PROCESS_HINT,
) -> LogicalOperator:
    """``plan`` over the source rows in ``ranges`` (``[start, stop)`` pairs in
    the numbering of ``source_rows``: the first source's rows, then the next
    source's...), each range read in order. Every source must know its rows.
    """
    counts = source_rows(plan)
    if any(c is None for c in counts):
        raise PlanError(
            f"{where}: a source of this dataset cannot count its rows without reading "
            "them, so it cannot be cut into row ranges"
        )
    offsets = [0]
    for c in counts:
        offsets.append(offsets[-1] + c)
    leaf = iter(range(len(counts)))

    def shard(node: LogicalOperator) -> LogicalOperator:
        if isinstance(node, (Read, InputData)):
            i = next(leaf)
            local = _intersect(ranges, offsets[i], offsets[i + 1])
            if isinstance(node, InputData):
                return dataclasses.replace(node, blocks=_slice_blocks(node.blocks, local))
            source = RowRangeDatasource(node.datasource, local)
            read = dataclasses.replace(node, datasource=source, predicate=None)
            # A filter given to the read (read_parquet(filter=...)) runs after the
            # cut, as a filter stage: inside the read it would renumber the rows.
            return read if node.predicate is None else Filter(expr=node.predicate, inputs=(read,))
        _check_shardable(node, where, hint)
        return node

    return plan.transform_up(shard)


def _intersect(ranges: Sequence[Range], lo: int, hi: int) -> tuple[Range, ...]:
    """The parts of ``ranges`` within ``[lo, hi)``, shifted to start at 0, in order."""
    out = []
    for start, stop in ranges:
        a, b = max(start, lo), min(stop, hi)
        if b > a:
            out.append((a - lo, b - lo))
    return tuple(out)


def _slice_blocks(blocks: tuple[pa.Table, ...], ranges: tuple[Range, ...]) -> tuple[Any, ...]:
    out = []
    for start, stop in ranges:
        offset = 0
        for table in blocks:
            a, b = max(start, offset), min(stop, offset + table.num_rows)
            if b > a:
                out.append(table.slice(a - offset, b - a))  # zero-copy
            offset += table.num_rows
    return tuple(out)


class RowRangeDatasource(Datasource):
    """The rows of ``inner`` in ``ranges`` (row numbers of ``inner``, in order):
    its read tasks that overlap a range, each sliced to the overlap. The slices
    follow row numbers, not task boundaries, so any process may plan the tasks
    its own way. Filters run after the read (a pushed filter would renumber the
    rows)."""

    supports_predicate_pushdown = False
    supports_limit_pushdown = False

    def __init__(self, inner: Datasource, ranges: tuple[Range, ...]) -> None:
        self.inner = inner
        self.ranges = ranges
        self.supports_projection_pushdown = inner.supports_projection_pushdown
        self.reads_without_gil = inner.reads_without_gil

    def get_name(self) -> str:
        return self.inner.get_name()

    def num_rows(self) -> int:
        return sum(stop - start for start, stop in self.ranges)

    def schema(self) -> Any:
        return self.inner.schema()

    def estimate_inmemory_data_size(self) -> int | None:
        size, total = self.inner.estimate_inmemory_data_size(), self.inner.num_rows()
        return None if size is None or not total else size * self.num_rows() // total

    def get_read_tasks(self, parallelism: int, **pushdown: Any) -> list[ReadTask]:
        return list(self.iter_read_tasks(parallelism, **pushdown))

    def iter_read_tasks(self, parallelism: int, **pushdown: Any) -> Iterator[ReadTask]:
        if not self.ranges:
            return
        # Plan about as many tasks for the part we read as the planner wants for
        # the whole source (within reason: a one-row share needs no million tasks).
        total = max(1, self.inner.num_rows() or 1)
        wanted = min(parallelism * 64, max(1, parallelism * total // max(1, self.num_rows())))
        tasks: list[tuple[int, ReadTask]] = []
        offset = 0
        for task in self.inner.iter_read_tasks(wanted, **pushdown):
            rows = task.metadata.num_rows
            if rows is None:
                raise DataflowError(
                    f"read_{self.get_name()}: a read task does not say how many rows it "
                    "reads, so it cannot be cut into row ranges"
                )
            tasks.append((offset, task))
            offset += rows
        for start, stop in self.ranges:
            for first, task in tasks:
                rows = task.metadata.num_rows or 0
                a, b = max(start, first), min(stop, first + rows)
                if b > a:
                    yield (
                        task if (a, b) == (first, first + rows) else _sliced(task, a - first, b - a)
                    )


def _sliced(task: ReadTask, start: int, length: int) -> ReadTask:
    meta = task.metadata
    rows = meta.num_rows or 1
    size = None if meta.size_bytes is None else meta.size_bytes * length // rows
    return ReadTask(
        functools.partial(_read_slice, task.read_fn, start, length),
        dataclasses.replace(meta, num_rows=length, size_bytes=size),
    )


def _read_slice(read_fn: Any, start: int, length: int) -> Iterator[pa.Table]:
    """Rows ``[start, start + length)`` of what ``read_fn`` yields; stops reading after them."""
    if length <= 0:
        return
    for table in read_fn():
        if start >= table.num_rows:
            start -= table.num_rows
            continue
        piece = table.slice(start, length)
        start = 0
        length -= piece.num_rows
        yield piece
        if length <= 0:
            return


# -- share arithmetic ----------------------------------------------------------------


def share_range(total: int, index: int, count: int, remainder: str = "keep") -> Range:
    """Rows ``[start, stop)`` of share ``index`` of ``count`` over ``total`` rows.

    ``"keep"``: contiguous shares whose sizes differ by at most one row (all
    rows, as Hugging Face's ``shard``); ``"drop"``: ``total // count`` rows each,
    the last ``total % count`` rows dropped; ``"pad"``: ``ceil(total / count)``
    rows each, running past ``total`` (``wrap`` maps that back to the first
    rows), as torch's ``DistributedSampler`` pads.

    >>> [share_range(10, i, 3) for i in range(3)]
    [(0, 3), (3, 6), (6, 10)]
    >>> [share_range(10, i, 3, "drop") for i in range(3)], share_range(10, 2, 3, "pad")
    ([(0, 3), (3, 6), (6, 9)], (8, 12))
    """
    if remainder == "keep":
        return total * index // count, total * (index + 1) // count
    if remainder not in ("drop", "pad"):
        raise ValueError(f"remainder must be 'keep', 'drop' or 'pad', got {remainder!r}")
    per = total // count if remainder == "drop" else -(-total // count)
    return per * index, per * (index + 1)


def wrap(start: int, stop: int, total: int) -> tuple[Range, ...]:
    """``[start, stop)`` with row numbers taken modulo ``total``, as ranges of ``[0, total)``.

    >>> wrap(8, 12, 10), wrap(2, 4, 10), wrap(0, 0, 0)
    (((8, 10), (0, 2)), ((2, 4),), ())
    """
    out = []
    while stop > start and total > 0:
        lo = start % total
        hi = min(total, lo + stop - start)
        out.append((lo, hi))
        start += hi - lo
    return tuple(out)


def batch_share(rows: int, batch_size: int, index: int, count: int) -> Range:
    """Rows ``[start, stop)`` of part ``index`` of ``count`` of ``rows`` rows, cut
    at multiples of ``batch_size``: every part holds whole batches except the one
    holding the last rows, so the parts together make ``ceil(rows / batch_size)``
    batches however many parts there are.

    >>> [batch_share(10, 4, i, 2) for i in range(2)], [batch_share(10, 4, i, 4) for i in range(4)]
    ([(0, 4), (4, 10)], [(0, 0), (0, 4), (4, 8), (8, 10)])
    """
    batches = -(-rows // batch_size)
    first, last = batches * index // count, batches * (index + 1) // count
    return min(rows, first * batch_size), min(rows, last * batch_size)


# -- by read tasks ---------------------------------------------------------------------


def shard_plan(
    plan: LogicalOperator,
    index: int,
    count: int,
    *,
    parallelism: int | None = None,
    where: str = "shard_plan",
    hint: str = ONE_PROCESS_HINT,
) -> LogicalOperator:
    """``plan`` over share ``index`` of ``count`` of its sources' read tasks.

    ``parallelism`` fixes how many read tasks a source without its own
    ``override_num_blocks`` is cut into (default: 2 per share); every share
    must use the same value. ``where`` names the caller in errors, ``hint``
    says there what to do instead.
    """
    if not 0 <= index < count:
        raise ValueError(f"{where}: share {index} out of range 0..{count - 1}")
    if count == 1:
        return plan  # the one share is the whole plan, whatever it does
    tasks = parallelism or 2 * count

    def shard(node: LogicalOperator) -> LogicalOperator:
        if isinstance(node, Read):
            source = ShardedDatasource(node.datasource, index, count, node.parallelism or tasks)
            return dataclasses.replace(node, datasource=source)
        if isinstance(node, InputData):
            return dataclasses.replace(node, blocks=_row_share(node.blocks, index, count))
        _check_shardable(node, where, hint, count)
        return node

    return plan.transform_up(shard)


def check_shardable(plan: LogicalOperator, *, where: str, hint: str = ONE_PROCESS_HINT) -> None:
    """Raise ``PlanError`` if a node of ``plan`` needs the rows of every share."""
    for node in plan.walk():
        if not isinstance(node, (Read, InputData)):
            _check_shardable(node, where, hint)


def _check_shardable(node: LogicalOperator, where: str, hint: str, count: int = 0) -> None:
    if isinstance(node, SHARDABLE):
        return
    into = f"split into {count} independent shares" if count else "split into independent shares"
    raise PlanError(
        f"{where}: {node.name} needs the rows of every share, so the plan cannot be "
        f"{into} at its sources; {hint}"
    )


def _row_share(blocks: tuple[Any, ...], index: int, count: int) -> tuple[Any, ...]:
    """Rows ``[n * index // count, n * (index + 1) // count)`` of each block (zero-copy)."""
    out = []
    for table in blocks:
        n = table.num_rows
        start, stop = n * index // count, n * (index + 1) // count
        if stop > start:
            out.append(table.slice(start, stop - start))
    return tuple(out)


class ShardedDatasource(Datasource):
    """Every ``count``-th read task of ``inner``, starting at ``index``, from a
    plan of exactly ``parallelism`` tasks (the planner's own choice would depend
    on the process that plans)."""

    def __init__(self, inner: Datasource, index: int, count: int, parallelism: int) -> None:
        self.inner = inner
        self.index = index
        self.count = count
        self.parallelism = parallelism
        self.supports_projection_pushdown = inner.supports_projection_pushdown
        self.supports_predicate_pushdown = inner.supports_predicate_pushdown
        self.supports_limit_pushdown = False  # a limit never reaches a sharded read
        self.reads_without_gil = inner.reads_without_gil

    def get_name(self) -> str:
        return self.inner.get_name()

    def get_read_tasks(self, parallelism: int, **pushdown: Any) -> list[ReadTask]:
        return list(self.iter_read_tasks(parallelism, **pushdown))

    def iter_read_tasks(self, parallelism: int, **pushdown: Any) -> Iterator[ReadTask]:
        for i, task in enumerate(self.inner.iter_read_tasks(self.parallelism, **pushdown)):
            if i % self.count == self.index:
                yield task

    def schema(self) -> Any:
        return self.inner.schema()

    def estimate_inmemory_data_size(self) -> int | None:
        size = self.inner.estimate_inmemory_data_size()
        return None if size is None else size // self.count
