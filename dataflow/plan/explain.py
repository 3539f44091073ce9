"""Text form of a pipeline's plans: logical, after each optimizer rule, physical.

Each node is one line (its name, then what the optimizer pushed into it),
inputs indented below it; a fused stage lists its stages upstream first.

>>> import dataflow as df
>>> print(render(df.range(10).filter(expr="id > 3").limit(2)._plan))
limit(2)
  filter(id > 3)
    read_range
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dataflow.plan.logical import FusedMap, LogicalOperator, Read
from dataflow.plan.optimizer import optimization_stages

if TYPE_CHECKING:
    from dataflow.context import DataContext


def _describe(node: LogicalOperator) -> str:
    if not isinstance(node, Read):
        return node.name
    pushed = []
    if node.columns is not None:
        pushed.append(f"columns=[{', '.join(node.columns)}]")
    if node.predicate is not None:
        pushed.append(f"predicate={node.predicate}")
    if node.limit is not None:
        pushed.append(f"limit={node.limit}")
    if node.dictionary_columns:
        pushed.append(f"dictionary=[{', '.join(node.dictionary_columns)}]")
    if node.parallelism is not None:
        pushed.append(f"parallelism={node.parallelism}")
    return f"{node.name} {' '.join(pushed)}".rstrip()


def render(node: LogicalOperator, indent: int = 0) -> str:
    """A logical plan as an indented tree, root first."""
    pad = "  " * indent
    if isinstance(node, FusedMap):
        lines = [f"{pad}fused[{len(node.stages)} stages]"]
        lines += [f"{pad}  | {_describe(s)}" for s in node.stages]
    else:
        lines = [pad + _describe(node)]
    lines += [render(child, indent + 1) for child in node.inputs]
    return "\n".join(lines)


def render_physical(op: Any, indent: int = 0) -> str:
    """A physical operator DAG (``name`` and ``input_dependencies``) as a tree."""
    lines = ["  " * indent + str(getattr(op, "name", op))]
    lines += [render_physical(child, indent + 1) for child in getattr(op, "input_dependencies", ())]
    return "\n".join(lines)


def render_scans(plan: LogicalOperator) -> str:
    """One line per read whose datasource reports what its pushdowns prune
    (``Datasource.explain_read``: files and partitions skipped, the filter it
    applies); empty when none does."""
    lines = []
    for node in plan.walk():
        for stage in node.stages if isinstance(node, FusedMap) else (node,):
            if isinstance(stage, Read):
                text = stage.datasource.explain_read(**stage.pushdown())
                if text:
                    lines.append(f"{stage.name}: {text}")
    return "\n".join(lines)


def explain_plan(plan: LogicalOperator, ctx: DataContext) -> str:
    """The logical plan, the plan after each enabled optimizer rule, what the
    reads prune, and the physical plan the planner builds from the optimized one."""
    from dataflow.plan.planner import plan_physical

    sections = [("Logical plan", render(plan))]
    previous = plan
    for rule, stage in optimization_stages(plan, ctx.optimizer_flags):
        text = "(unchanged)" if stage is previous else render(stage)
        sections.append((f"After {rule}", text))
        previous = stage
    scans = render_scans(previous)
    if scans:
        sections.append(("Scans", scans))
    sections.append(("Physical plan", render_physical(plan_physical(previous, ctx))))
    return "\n\n".join(f"-- {title} --\n{text}" for title, text in sections)
