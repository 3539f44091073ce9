"""Operator fusion.

Consecutive one-to-one operators (``MapBatches``, ``MapRows``, ``FlatMap``,
``Filter``, ``Project``) with the same compute and the same resources become
one ``FusedMap`` whose ``stages`` run in one task per block, with no
intermediate objects: ``B(A(x))`` becomes ``FusedMap[A, B](x)``. A ``Read``
on the default task pool directly below a chain that runs on it too
(``Compute()``, one CPU) joins it as ``stages[0]``: ``FusedMap[Read, A, B]``. Actor-pool stages
(callable classes) never fuse: each keeps its own pool of long-lived workers.
``Project`` has no compute of its own and counts as the default task pool.
A ``Write`` over a default-pool chain (or a ``Read``) joins it as the last
stage: read -> map -> write runs as one task per read task, one file each
(unless the write has its own ``min_rows_per_file``, concurrency or resources).
"""

from __future__ import annotations

from dataflow.plan.logical import (
    ONE_TO_ONE,
    AbstractUDF,
    Compute,
    FusedMap,
    LogicalOperator,
    Read,
    Write,
)
from runtime.resources import Resources

_DEFAULT = (Compute(), Resources(cpu=1))


def _key(node: LogicalOperator) -> tuple | None:
    """What two stages must share to fuse; None when the stage never fuses."""
    if isinstance(node, FusedMap):
        return _key(node.stages[-1])
    if isinstance(node, AbstractUDF):
        return None if node.compute.kind == "actors" else (node.compute, node.resources)
    if isinstance(node, ONE_TO_ONE):
        return _DEFAULT
    return None


def _rewrite(node: LogicalOperator) -> LogicalOperator:
    if isinstance(node, Write):
        return _fuse_write(node)
    if not isinstance(node, ONE_TO_ONE):
        return node
    key = _key(node)
    if key is None:
        return node
    stage = node.with_inputs()
    child = node.input
    if isinstance(child, FusedMap) and _key(child) == key:
        return FusedMap(stages=(*child.stages, stage), inputs=child.inputs)
    if isinstance(child, ONE_TO_ONE) and _key(child) == key:
        return FusedMap(stages=(child.with_inputs(), stage), inputs=child.inputs)
    if isinstance(child, Read) and key == _DEFAULT == (child.compute, child.resources):
        return FusedMap(stages=(child, stage))
    return node


def _fuse_write(node: Write) -> LogicalOperator:
    child = node.input
    if not node.fusable:
        return node
    if isinstance(child, FusedMap) and _key(child) == _DEFAULT:
        return FusedMap(stages=(*child.stages, node.with_inputs()), inputs=child.inputs)
    if isinstance(child, ONE_TO_ONE) and _key(child) == _DEFAULT:
        return FusedMap(stages=(child.with_inputs(), node.with_inputs()), inputs=child.inputs)
    if isinstance(child, Read) and (child.compute, child.resources) == _DEFAULT:
        return FusedMap(stages=(child, node.with_inputs()))
    return node


def apply(plan: LogicalOperator) -> LogicalOperator:
    return plan.transform_up(_rewrite)
