"""Limit pushdown.

* ``Limit[n]`` over ``Limit[m]`` becomes ``Limit[min(n, m)]``.
* ``Limit[n]`` over a row-preserving operator (``LogicalOperator.preserves_rows``:
  ``MapRows``, or ``MapBatches`` declared with ``udf_modifying_row_count=False``,
  that raises on error; any ``Project``) moves below it: ``Limit[n](Map(x))`` becomes
  ``Map(Limit[n](x))``, so the map sees only ``n`` rows.
* ``Limit[n]`` over a ``Read`` whose datasource supports limit pushdown sets
  ``Read.limit = n`` (each read task returns at most ``n`` rows, counted after
  the read's predicate). The ``Limit`` stays on top: ``n`` rows per task may
  still add up to more than ``n``.
"""

from __future__ import annotations

import dataclasses

from dataflow.plan.logical import Limit, LogicalOperator, Read


def _rewrite(node: LogicalOperator) -> LogicalOperator:
    if not isinstance(node, Limit):
        return node
    child = node.input
    if isinstance(child, Limit):
        return _rewrite(Limit(n=min(node.n, child.n), inputs=child.inputs))
    if child.preserves_rows:
        return child.with_inputs(_rewrite(node.with_inputs(child.input)))
    if isinstance(child, Read) and child.datasource.supports_limit_pushdown:
        if child.limit is None or child.limit > node.n:
            return node.with_inputs(dataclasses.replace(child, limit=node.n))
    return node


def apply(plan: LogicalOperator) -> LogicalOperator:
    return plan.transform_up(_rewrite)
