"""Sharding a plan at its sources: share ``index`` of ``count`` runs the same
transforms over a disjoint part of the input, and the ``count`` shares together
cover every row exactly once.

This is how DataLoader workers of ``to_torch_dataset`` split the work without
talking to each other: each one plans the same read tasks (a fixed
``parallelism``, so every process lists the same tasks) and runs every
``count``-th of them; in-memory blocks are cut into ``count`` row ranges. Only
transforms that see one block at a time (``ONE_TO_ONE``, block order, union)
may sit above the sources: a limit, zip, sort, shuffle, aggregation or join
needs rows of every share, and raises ``PlanError`` naming it.

>>> import pyarrow as pa
>>> from dataflow.plan.logical import MapRows
>>> plan = MapRows(fn=str, inputs=(InputData(blocks=(pa.table({"x": [1, 2, 3, 4]}),)),))
>>> [shard_plan(plan, i, 2).input.blocks[0]["x"].to_pylist() for i in range(2)]
[[1, 2], [3, 4]]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from dataflow.errors import PlanError
from dataflow.plan.logical import (
    ONE_TO_ONE,
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


def shard_plan(
    plan: LogicalOperator,
    index: int,
    count: int,
    *,
    parallelism: int | None = None,
    where: str = "shard_plan",
) -> LogicalOperator:
    """``plan`` over share ``index`` of ``count`` of its sources' rows.

    ``parallelism`` fixes how many read tasks a source without its own
    ``override_num_blocks`` is cut into (default: 2 per share); every share
    must use the same value. ``where`` names the caller in errors.
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
        if isinstance(node, SHARDABLE):
            return node
        raise PlanError(
            f"{where}: {node.name} needs the rows of every share, so the plan cannot be "
            f"split into {count} independent shares at its sources; run it in one process "
            "(e.g. DataLoader num_workers=0: dataflow already runs the pipeline in "
            "parallel), or hand its output to several processes with streaming_split(n)"
        )

    return plan.transform_up(shard)


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
