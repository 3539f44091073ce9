"""The logical optimizer: an ordered pipeline of rules, each run to its fixpoint.

Rules (one a module under ``plan/rules``, the rewrite stated in its docstring):

1. ``predicate_pushdown``  ``Filter[expr]`` over a ``Read`` -> ``Read.predicate``
2. ``limit_pushdown``      ``Limit`` below row-preserving ops, into ``Read.limit``
3. ``topk``                ``Limit[n]`` over ``Sort`` -> ``Sort[limit=n]`` (per-block top n)
4. ``projection_pushdown`` needed columns -> ``Read.columns``
5. ``dictionary_keys``     ``Aggregate[keys]`` over a ``Read`` -> ``Read.dictionary_columns``
6. ``fusion``              consecutive one-to-one ops (and their ``Read``) -> ``FusedMap``

Fusion runs last because the pushdowns match unfused nodes. ``OptimizerFlags``
has one switch per rule (``DataContext.optimizer_flags``; None = all on).

>>> from dataflow.plan.logical import InputData, Limit
>>> inner = Limit(n=5, inputs=(InputData(blocks=()),))
>>> plan = Limit(n=3, inputs=(inner,))
>>> optimize(plan).input.name
'from_blocks'
>>> optimize(plan, OptimizerFlags.none()).input.name
'limit(5)'
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from dataflow.errors import PlanError
from dataflow.plan.logical import LogicalOperator
from dataflow.plan.rules import (
    dictionary_keys,
    fusion,
    limit_pushdown,
    predicate_pushdown,
    projection_pushdown,
    topk,
)

Rule = Callable[[LogicalOperator], LogicalOperator]

RULES: tuple[tuple[str, Rule], ...] = (
    ("predicate_pushdown", predicate_pushdown.apply),
    ("limit_pushdown", limit_pushdown.apply),
    ("topk", topk.apply),
    ("projection_pushdown", projection_pushdown.apply),
    ("dictionary_keys", dictionary_keys.apply),
    ("fusion", fusion.apply),
)
"""(name, rewrite) in the order they run; names match ``OptimizerFlags`` fields."""

MAX_PASSES = 32
"""A rule that still rewrites after this many passes is a bug: raise, do not loop."""


@dataclass(frozen=True)
class OptimizerFlags:
    """Which optimizer rules run (all by default).

    >>> OptimizerFlags.none().fusion
    False
    """

    predicate_pushdown: bool = True
    limit_pushdown: bool = True
    topk: bool = True
    projection_pushdown: bool = True
    dictionary_keys: bool = True
    fusion: bool = True

    @classmethod
    def none(cls) -> OptimizerFlags:
        """Every rule off: the plan runs as written."""
        return cls(**{f.name: False for f in dataclasses.fields(cls)})


def run_rule(name: str, rule: Rule, plan: LogicalOperator) -> LogicalOperator:
    """Apply ``rule`` until the plan stops changing (same node object)."""
    for _ in range(MAX_PASSES):
        new = rule(plan)
        if new is plan:
            return plan
        plan = new
    raise PlanError(
        f"optimizer rule {name!r} did not converge after {MAX_PASSES} passes; "
        f"disable it with DataContext.optimizer_flags=OptimizerFlags({name}=False) "
        "and report the plan"
    )


def optimization_stages(
    plan: LogicalOperator, flags: OptimizerFlags | None = None
) -> list[tuple[str, LogicalOperator]]:
    """The plan after each enabled rule, in order (what ``explain()`` shows)."""
    flags = flags or OptimizerFlags()
    stages = []
    for name, rule in RULES:
        if getattr(flags, name):
            plan = run_rule(name, rule, plan)
            stages.append((name, plan))
    return stages


def optimize(plan: LogicalOperator, flags: OptimizerFlags | None = None) -> LogicalOperator:
    """The plan rewritten by every rule ``flags`` enables."""
    stages = optimization_stages(plan, flags)
    return stages[-1][1] if stages else plan
