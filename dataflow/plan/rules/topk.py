"""Top-k.

* ``Limit[n]`` over ``Sort`` becomes ``Limit[n]`` over ``Sort[limit=n]``
  (``Sort[limit=m]`` with ``m > n`` lowers to ``n``): the sort keeps only each
  block's first ``n`` rows (``select_k``) and merges them in one task, with no
  sampling and no full sort. The ``Limit`` stays on top; the result is the
  same rows, in the same order, as the full sort.

>>> from dataflow.plan.logical import InputData, Limit, Sort
>>> plan = Limit(n=3, inputs=(Sort(keys=("a",), descending=(False,), inputs=(InputData(blocks=()),)),))
>>> apply(plan).input.name
'sort(a, top 3)'
"""

from __future__ import annotations

import dataclasses

from dataflow.plan.logical import Limit, LogicalOperator, Sort


def _rewrite(node: LogicalOperator) -> LogicalOperator:
    if not isinstance(node, Limit) or not isinstance(node.input, Sort):
        return node
    sort = node.input
    if sort.limit is not None and sort.limit <= node.n:
        return node
    return node.with_inputs(dataclasses.replace(sort, limit=node.n))


def apply(plan: LogicalOperator) -> LogicalOperator:
    return plan.transform_up(_rewrite)
