"""``RangeDatasource``: the integers ``0..n-1`` as column ``id`` (or as tensors).

Supports projection, predicate and limit pushdown, so that
``range(10**10).take(5)`` plans a single task that makes five rows.

>>> src = RangeDatasource(10)
>>> [t.metadata.num_rows for t in src.get_read_tasks(3)]
[4, 3, 3]
>>> [list(t())[0].column("id").to_pylist() for t in src.get_read_tasks(3, limit=2)]
[[0, 1]]
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from dataflow.block import array_from_numpy
from dataflow.context import DataContext
from dataflow.sources.datasource import BlockMetadata, Datasource, ReadTask

if TYPE_CHECKING:
    import pyarrow.compute as pc


class RangeDatasource(Datasource):
    """Rows ``0..n-1``; with ``tensor_shape`` each row is ``np.full(tensor_shape, i)``
    in column ``data`` (as ``range_tensor``), else an int64 in column ``id``."""

    reads_without_gil = True

    supports_projection_pushdown = True
    supports_predicate_pushdown = True
    supports_limit_pushdown = True

    def __init__(self, n: int, tensor_shape: tuple[int, ...] | None = None) -> None:
        self._n = n
        self._shape = tensor_shape
        self._column = "id" if tensor_shape is None else "data"

    def get_name(self) -> str:
        return "range" if self._shape is None else "range_tensor"

    def schema(self) -> pa.Schema:
        if self._shape is None:
            return pa.schema([(self._column, pa.int64())])
        return pa.schema([(self._column, pa.fixed_shape_tensor(pa.int64(), self._shape))])

    def num_rows(self) -> int:
        return self._n

    def _row_bytes(self) -> int:
        return 8 * math.prod(self._shape or (1,))

    def estimate_inmemory_data_size(self) -> int:
        return self._n * self._row_bytes()

    def get_read_tasks(
        self,
        parallelism: int,
        *,
        columns: list[str] | None = None,
        filter: pc.Expression | None = None,
        limit: int | None = None,
    ) -> list[ReadTask]:
        # Without a filter a limit shrinks the range itself; with one, each task
        # filters its slice and stops after `limit` matching rows.
        n = self._n if limit is None or filter is not None else min(self._n, limit)
        rows_per_block = max(
            1, DataContext.get_current().target_max_block_size // self._row_bytes()
        )
        num_tasks = max(1, min(parallelism, n))
        if n < self._n and n <= rows_per_block:
            num_tasks = 1  # a pushed-down limit: one small task, not `parallelism` tiny ones
        schema = self.schema()
        if columns is not None:
            schema = pa.schema([f for f in schema if f.name in columns])
        tasks = []
        for start, stop in _split(n, num_tasks):
            read = functools.partial(
                _read_range, self, start, stop, rows_per_block, columns, filter, limit
            )
            rows = None if filter is not None else stop - start
            size = None if rows is None else rows * self._row_bytes() * len(schema.names)
            tasks.append(
                ReadTask(read, BlockMetadata(num_rows=rows, size_bytes=size, schema=schema))
            )
        return tasks

    def make_block(self, start: int, stop: int) -> pa.Table:
        """Rows ``start..stop-1`` (full schema)."""
        ids = np.arange(start, stop, dtype=np.int64)
        if self._shape is not None:
            ids = np.broadcast_to(
                ids.reshape(-1, *([1] * len(self._shape))), (len(ids), *self._shape)
            )
        # Through Arrow buffers: pa.table() of a numpy array imports pandas (~0.6 s).
        return pa.Table.from_arrays([array_from_numpy(np.ascontiguousarray(ids))], [self._column])


def _split(n: int, parts: int) -> Iterator[tuple[int, int]]:
    """``parts`` contiguous ranges covering ``0..n`` whose sizes differ by at most one."""
    base, extra = divmod(n, parts)
    start = 0
    for i in range(parts):
        stop = start + base + (i < extra)
        yield start, stop
        start = stop


def _read_range(
    source: RangeDatasource,
    start: int,
    stop: int,
    rows_per_block: int,
    columns: list[str] | None,
    filter: pc.Expression | None,
    limit: int | None,
) -> Iterator[pa.Table]:
    remaining = limit
    # An empty range still yields one empty block, so that its schema is known.
    for lo in range(start, max(stop, start + 1), rows_per_block):
        table = source.make_block(lo, min(stop, lo + rows_per_block))
        if filter is not None:
            table = table.filter(filter)
        if remaining is not None:
            table = table.slice(0, remaining)
            remaining -= table.num_rows
        yield table.select(columns) if columns is not None else table
        if remaining == 0:
            return
