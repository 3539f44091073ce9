"""The aggregation engine: partial aggregation per block (map side), merge and
finalize per partition (reduce side). The aggregations themselves are in
``dataflow.aggregate``.

>>> from dataflow.aggregate import Count, Sum
>>> t = pa.table({"k": ["x", "y", "x"], "a": [1, 2, 3]})
>>> parts = [partial_aggregate(t, ["k"], [Sum("a"), Count()])]
>>> final_aggregate(parts, ["k"], [Sum("a"), Count()]).to_pydict()
{'k': ['x', 'y'], 'sum(a)': [4, 2], 'count()': [2, 1]}
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from dataflow.acero import group_by
from dataflow.aggregate import AggregateFn, Count, VectorizedAggregateFn
from dataflow.block import array_from_numpy, concat
from dataflow.errors import unknown_columns
from dataflow.exec.exchange.partition import (
    group_starts,
    restore_float_keys,
    sort_keys,
    sort_table,
    spread_float_keys,
)

_STATE = "__agg{}_{}"


def _check_columns(table: pa.Table, keys: Sequence[str], aggs: Sequence[AggregateFn]) -> None:
    present = set(table.column_names)
    missing = [k for k in keys if k not in present]
    if missing:
        raise unknown_columns("groupby", missing, table.column_names)
    for a in aggs:
        if a.on is not None and a.on not in present:
            raise unknown_columns(a.name, [a.on], table.column_names)


def _key_value(table: pa.Table, keys: Sequence[str], row: int) -> Any:
    if not keys:
        return None
    values = tuple(table.column(k)[row].as_py() for k in keys)
    return values[0] if len(values) == 1 else values


def partial_aggregate(
    table: pa.Table, keys: Sequence[str], aggs: Sequence[AggregateFn]
) -> pa.Table:
    """Map side: one row per group of ``table`` with the keys and every state.

    With user-defined aggregations the block is sorted by key first, so that
    pyarrow's groups (first-appearance order) line up with the key runs the
    Python accumulators walk."""
    _check_columns(table, keys, aggs)
    python_aggs = [i for i, a in enumerate(aggs) if not isinstance(a, VectorizedAggregateFn)]
    encoded = [k for k in keys if pa.types.is_dictionary(table.schema.field(k).type)]
    if python_aggs:
        table, encoded = decode_keys(table, encoded), []
    elif encoded:
        table = table.unify_dictionaries()  # one dictionary per column: group the indices
    if python_aggs and keys:
        table = sort_table(table, sort_keys(keys, [False] * len(keys)))
    specs, names = [], []
    for i, agg in enumerate(aggs):
        if isinstance(agg, VectorizedAggregateFn):
            for j, spec in enumerate(agg.states()):
                specs.append(spec)
                names.append(_STATE.format(i, j))
    hashable, float_keys = spread_float_keys(table, keys)
    grouped = group_by(hashable, keys, specs)
    out = restore_float_keys(grouped.rename_columns(list(keys) + names), float_keys)
    out = decode_keys(out, encoded)
    if python_aggs:
        starts = group_starts(table, keys) if keys else np.array([0, table.num_rows])
        for i in python_aggs:
            agg = aggs[i]
            accs = []
            for g in range(len(starts) - 1):
                lo, hi = int(starts[g]), int(starts[g + 1])
                acc = agg._accumulate(
                    agg.init(_key_value(table, keys, lo)), table.slice(lo, hi - lo)
                )
                accs.append(pickle.dumps(acc, protocol=pickle.HIGHEST_PROTOCOL))
            out = out.append_column(_STATE.format(i, 0), pa.array(accs, pa.binary()))
    return out


def final_aggregate(
    partials: Sequence[pa.Table], keys: Sequence[str], aggs: Sequence[AggregateFn]
) -> pa.Table:
    """Reduce side: merge the partial states of each group and finalize them.

    The output has the key columns then one column per aggregation, sorted by
    key. A global aggregation (no keys) always gives exactly one row.

    When every aggregation merges with plain hash kernels (count, sum, min,
    max) the states are merged by one hash aggregation and only the merged
    groups are sorted; otherwise the partial rows are sorted by key and merged
    run by run. A single partial has distinct keys already: nothing merges."""
    present = [p for p in partials if p.num_columns]
    table = concat(present)
    keys = list(keys)
    if not keys and table.num_rows == 0:
        return _empty_global(aggs)
    if not table.num_columns:  # no input block at all: the schema is unknown
        return table
    distinct = bool(keys) and len(present) == 1
    if keys and not distinct and all(_merges_by_hash(a) for a in aggs):
        table = _hash_merge(table, keys, aggs)
        distinct = True
    if keys:
        table = sort_table(table, sort_keys(keys, [False] * len(keys)))
    if distinct:
        ngroups = table.num_rows
        gid = np.arange(ngroups)
        columns = {k: table.column(k) for k in keys}
    else:
        starts = group_starts(table, keys) if keys else np.array([0, table.num_rows])
        ngroups = len(starts) - 1
        gid = np.repeat(np.arange(ngroups), np.diff(starts))
        firsts = array_from_numpy(starts[:-1])
        columns = {k: table.column(k).take(firsts) for k in keys}
    for i, agg in enumerate(aggs):
        if isinstance(agg, VectorizedAggregateFn):
            names = [_STATE.format(i, j) for j in range(len(agg.states()))]
            if distinct and _merges_by_hash(agg):
                merged = [table.column(n).combine_chunks() for n in names]
            else:
                merged = agg.merge_states(table.select(names), gid, ngroups)
            columns[agg.name] = agg.finalize_states(merged)
        else:
            accs = table.column(_STATE.format(i, 0)).to_pylist()
            results = []
            bounds = np.arange(ngroups + 1) if distinct else starts
            for g in range(ngroups):
                acc = pickle.loads(accs[bounds[g]])
                for blob in accs[bounds[g] + 1 : bounds[g + 1]]:
                    acc = agg.merge(acc, pickle.loads(blob))
                results.append(agg.finalize(acc))
            columns[agg.name] = pa.array(results)
    return pa.table(columns)


def is_partial(table: pa.Table) -> bool:
    """Whether ``table`` holds partial states (``partial_aggregate``'s output)
    rather than input rows (a map task that skipped partial aggregation)."""
    return _STATE.format(0, 0) in table.column_names


def raw_columns(table: pa.Table, keys: Sequence[str], aggs: Sequence[AggregateFn]) -> pa.Table:
    """The columns of input rows that the aggregation reads: what a map task
    that skips partial aggregation passes on (checked as ``partial_aggregate``
    checks them)."""
    _check_columns(table, keys, aggs)
    needed = list(dict.fromkeys([*keys, *(a.on for a in aggs if a.on is not None)]))
    return decode_keys(table.select(needed), keys)


def decode_keys(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """``table`` with its dictionary-encoded ``keys`` columns as plain values:
    partial states leave a block with plain keys, so that pieces from blocks
    with different dictionaries hash, merge and sort as values."""
    for k in keys:
        t = table.schema.field(k).type
        if pa.types.is_dictionary(t):
            i = table.schema.get_field_index(k)
            table = table.set_column(i, k, table.column(k).cast(t.value_type))
    return table


def _merges_by_hash(agg: AggregateFn) -> bool:
    """A built-in whose states merge by its ``merge_fns`` alone (no custom merge)."""
    return (
        isinstance(agg, VectorizedAggregateFn)
        and type(agg).merge_states is VectorizedAggregateFn.merge_states
        and len(agg.merge_fns) == len(agg.states())
    )


def _hash_merge(table: pa.Table, keys: list[str], aggs: Sequence[AggregateFn]) -> pa.Table:
    """One row per group: every state merged by its hash kernel."""
    specs, names = [], []
    for i, agg in enumerate(aggs):
        for j, fn in enumerate(agg.merge_fns):
            names.append(_STATE.format(i, j))
            specs.append((names[-1], fn, agg._scalar_opts()))
    hashable, float_keys = spread_float_keys(table.select(keys + names), keys)
    merged = group_by(hashable, keys, specs)
    return restore_float_keys(merged.rename_columns(keys + names), float_keys)


def _empty_global(aggs: Sequence[AggregateFn]) -> pa.Table:
    """The one-row result of a global aggregation over no rows (as Ray Data:
    counts are 0, everything else null)."""
    columns = {}
    for agg in aggs:
        if isinstance(agg, Count):
            columns[agg.name] = pa.array([0], pa.int64())
        elif isinstance(agg, VectorizedAggregateFn):
            columns[agg.name] = pa.array([None])
        else:
            columns[agg.name] = pa.array([agg.finalize(agg.init(None))])
    return pa.table(columns)
