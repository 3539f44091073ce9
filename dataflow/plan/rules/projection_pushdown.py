"""Projection pushdown.

A ``Project`` that defines its whole output (``select`` or ``exprs``) sets
``Read.columns`` to the columns the operators between it and the ``Read`` need,
when the datasource supports projection pushdown:
``Project[select a](Filter[b > 0](Read))`` becomes
``Project[select a](Filter[b > 0](Read[columns=a, b]))``. The walk down passes
``Filter[expr]``, ``Limit``, ``Project[select]`` and ``Project[with_columns]``
(adding the columns their expressions read) and stops at anything else (a
Python UDF may read any column). ``Project[select x]`` over ``Project[select y]``
with ``x`` within ``y`` becomes ``Project[select x]``. The top ``Project`` stays:
it still orders the columns.

An ``Aggregate`` of built-in aggregations reads only its keys and the columns
it aggregates: ``Aggregate[cat: mean(a)](Read)`` becomes
``Aggregate[cat: mean(a)](Read[columns=cat, a])``. A custom ``AggregateFn``
sees whole blocks, so it stops the rewrite.
"""

from __future__ import annotations

import dataclasses

from dataflow.plan.logical import Aggregate, Filter, Limit, LogicalOperator, Project, Read


def _defines_output(node: LogicalOperator) -> bool:
    return isinstance(node, Project) and (node.select is not None or node.exprs is not None)


def _input_needs(node: Project, required: list[str]) -> list[str] | None:
    """Columns ``node``'s input must have so that ``node`` yields ``required``."""
    if node.select is not None:
        return list(node.select)
    if node.exprs is not None:
        return _union(*(sorted(e.columns()) for _, e in node.exprs))
    if node.with_columns is not None:
        made = {n for n, _ in node.with_columns}
        return _union(
            [c for c in required if c not in made],
            *(sorted(e.columns()) for _, e in node.with_columns),
        )
    return None  # drop / rename: their input columns are not known here


def _union(*lists: list[str]) -> list[str]:
    return list(dict.fromkeys(c for lst in lists for c in lst))


def _push(node: LogicalOperator, required: list[str]) -> LogicalOperator:
    """Rebuild the chain below a projection so that its ``Read`` yields ``required``."""
    if isinstance(node, Read):
        return _narrow(node, required)
    if isinstance(node, Filter) and node.expr is not None and node.fn is None:
        below = _union(required, sorted(node.expr.columns()))
    elif isinstance(node, Limit):
        below = required
    elif isinstance(node, Project):
        needs = _input_needs(node, required)
        if needs is None:
            return node
        below = needs
    else:
        return node
    child = _push(node.input, below)
    return node if child is node.input else node.with_inputs(child)


def _narrow(read: Read, required: list[str]) -> Read:
    if not read.datasource.supports_projection_pushdown:
        return read
    if read.columns is not None:
        if not set(required) <= set(read.columns):
            return read  # a missing column: leave it for the read to report
        columns = tuple(c for c in read.columns if c in required)
    else:
        schema = read.datasource.schema()
        if schema is not None and set(required) <= set(schema.names):
            columns = tuple(c for c in schema.names if c in required)
        else:
            columns = tuple(required)
    if columns == read.columns:
        return read
    return dataclasses.replace(read, columns=columns)


def _aggregate_needs(node: Aggregate) -> list[str] | None:
    """The columns built-in aggregations read; None when one may read any column."""
    if node.runs_python:
        return None
    needs = _union(list(node.keys), [a.on for a in node.aggs if a.on is not None])
    return needs or None  # a bare count() reads no column: keep the read as it is


def _rewrite(node: LogicalOperator) -> LogicalOperator:
    if isinstance(node, Aggregate):
        needs = _aggregate_needs(node)
        pushed = node.input if needs is None else _push(node.input, needs)
        return node if pushed is node.input else node.with_inputs(pushed)
    if not _defines_output(node):
        return node
    assert isinstance(node, Project)
    child = node.input
    if (
        node.select is not None
        and isinstance(child, Project)
        and child.select is not None
        and set(node.select) <= set(child.select)
    ):
        return _rewrite(node.with_inputs(child.input))
    pushed = _push(child, _input_needs(node, []) or [])
    return node if pushed is child else node.with_inputs(pushed)


def apply(plan: LogicalOperator) -> LogicalOperator:
    return plan.transform_up(_rewrite)
