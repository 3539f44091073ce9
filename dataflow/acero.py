"""Arrow's query engine (Acero) for one table, without importing ``pyarrow.acero``.

``Table.group_by().aggregate()``, ``Table.filter(expression)`` and
``pyarrow.acero`` itself import ``pyarrow.dataset``, which imports pandas:
about 0.5 s of every cold run that groups or filters by expression. The
compiled nodes live in ``pyarrow._acero``, which imports neither, so the three
plans the engine needs are built here from those nodes. Results are the same
as pyarrow's own helpers (same column names and order).

>>> import pyarrow as pa, pyarrow.compute as pc
>>> t = pa.Table.from_arrays([pa.array([1, 2, 1]), pa.array([1.0, 2.0, 3.0])], ["k", "v"])
>>> group_by(t, ["k"], [("v", "sum")]).to_pylist()
[{'k': 1, 'v_sum': 4.0}, {'k': 2, 'v_sum': 2.0}]
>>> filter_table(t, pc.field("v") > 1.5).num_rows
2
>>> project(t, [pc.field("v") * 2], ["w"]).column("w").to_pylist()
[2.0, 4.0, 6.0]
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyarrow._acero import (
    AggregateNodeOptions,
    Declaration,
    FilterNodeOptions,
    ProjectNodeOptions,
    TableSourceNodeOptions,
)


def _run(table: pa.Table, node: Declaration, use_threads: bool) -> pa.Table:
    source = Declaration("table_source", TableSourceNodeOptions(table))
    return Declaration.from_sequence([source, node]).to_table(use_threads=use_threads)


def group_by(
    table: pa.Table,
    keys: Sequence[str],
    aggregations: Sequence[tuple],
    use_threads: bool = False,
) -> pa.Table:
    """``table.group_by(keys, use_threads=...).aggregate(aggregations)``: each
    aggregation is ``(column or columns, function[, options])`` and is named
    ``"{column}_{function}"`` (``function`` alone over no column)."""
    keys = list(keys)
    specs: list[tuple[Any, str, Any, str]] = []
    for aggregation in aggregations:
        target, func = aggregation[0], aggregation[1]
        options = aggregation[2] if len(aggregation) > 2 else None
        targets = list(target) if isinstance(target, (list, tuple)) else [target]
        bare = func[5:] if func.startswith("hash_") else func
        name = "_".join(targets) + "_" + bare if targets else bare
        specs.append((targets, ("hash_" + bare) if keys else bare, options, name))
    if not keys:
        return _scalar_aggregate(table, specs)
    return _run(
        table, Declaration("aggregate", AggregateNodeOptions(specs, keys=keys)), use_threads
    )


def _scalar_aggregate(table: pa.Table, specs: list[tuple[Any, str, Any, str]]) -> pa.Table:
    """``group_by`` without keys: one row of scalar aggregates. The kernels are
    Acero's own, called directly: a plan costs more to set up than summing a
    block does (keyless aggregates, ``Dataset.sum``, run one per block).
    ``distinct`` (no scalar kernel, so Acero has none without keys) is
    ``unique`` as a one-element list column, as ``hash_distinct`` gives.
    Arrays are built from scalars and buffers: ``pa.array`` of a Python list
    would import pandas."""
    columns = []
    for targets, func, options, _ in specs:
        if func == "count_all":
            columns.append(pa.repeat(pa.scalar(table.num_rows, pa.int64()), 1))
            continue
        values = table.column(targets[0])
        if func == "distinct":
            uniques = pc.unique(values)
            if options == pc.CountOptions(mode="only_valid"):
                uniques = uniques.drop_null()
            offsets = pa.Array.from_buffers(
                pa.int32(), 2, [None, pa.py_buffer(struct.pack("<2i", 0, len(uniques)))]
            )
            columns.append(pa.ListArray.from_arrays(offsets, uniques))
            continue
        columns.append(pa.repeat(pc.call_function(func, [values], options), 1))
    return pa.Table.from_arrays(columns, [name for *_, name in specs])


def filter_table(table: pa.Table, expression: pc.Expression, use_threads: bool = False) -> pa.Table:
    """``table.filter(expression)``: the rows where ``expression`` is true."""
    return _run(table, Declaration("filter", FilterNodeOptions(expression)), use_threads)


def project(
    table: pa.Table,
    expressions: Sequence[pc.Expression],
    names: Sequence[str],
    use_threads: bool = False,
) -> pa.Table:
    """A table of ``expressions`` evaluated over ``table``, named ``names``."""
    node = Declaration("project", ProjectNodeOptions(list(expressions), list(names)))
    return _run(table, node, use_threads)
