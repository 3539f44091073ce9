"""Predicate pushdown.

``Filter[expr]`` directly over a ``Read`` whose datasource supports predicate
pushdown becomes ``Read[predicate=expr]`` (``old & expr`` when the read already
has a predicate). The datasource applies it while reading (e.g. Parquet
row-group pruning), so filtered-out rows never leave the read task. Filters with
a Python function, or that skip errors, are left alone.
"""

from __future__ import annotations

import dataclasses

from dataflow.plan.logical import Filter, LogicalOperator, Read


def _rewrite(node: LogicalOperator) -> LogicalOperator:
    if not (isinstance(node, Filter) and node.expr is not None and node.fn is None):
        return node
    read = node.input
    if not (isinstance(read, Read) and read.datasource.supports_predicate_pushdown):
        return node
    predicate = node.expr if read.predicate is None else read.predicate & node.expr
    return dataclasses.replace(read, predicate=predicate)


def apply(plan: LogicalOperator) -> LogicalOperator:
    return plan.transform_up(_rewrite)
