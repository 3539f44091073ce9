"""The optimizer pipeline: flags, stages, the fixpoint guard, whole-plan rewrites."""

from __future__ import annotations

import dataclasses

import pytest

import dataflow as df
from dataflow.plan import optimizer
from dataflow.plan.explain import render
from dataflow.plan.logical import FusedMap, Limit, LogicalOperator, Project, Read
from dataflow.plan.optimizer import RULES, OptimizerFlags, optimization_stages, optimize
from dataflow.sources.range import RangeDatasource


def double(batch):
    return batch


def test_flags_have_one_switch_per_rule_in_order():
    assert [f.name for f in dataclasses.fields(OptimizerFlags)] == [name for name, _ in RULES]
    assert not any(dataclasses.asdict(OptimizerFlags.none()).values())
    assert all(dataclasses.asdict(OptimizerFlags()).values())


def test_read_filter_select_map_becomes_one_stage_with_pushdowns():
    src = RangeDatasource(100)
    plan = (
        df.read_datasource(src)
        .filter(expr="id % 7 == 0")
        .select_columns("id")
        .map_batches(double)
        ._plan
    )
    out = optimize(plan)
    assert isinstance(out, FusedMap) and out.inputs == ()
    read, select, udf = out.stages
    assert read == Read(src, columns=("id",), predicate=df.col("id") % 7 == 0)
    assert isinstance(select, Project) and select.select == ("id",)
    assert udf.name == "map_batches(double)"


def test_range_take_plans_one_tiny_read():
    plan = df.range(10**10).limit(5)._plan
    out = optimize(plan)
    assert isinstance(out, Limit) and out.input.limit == 5
    read = out.input
    tasks = read.datasource.get_read_tasks(8, limit=read.limit)
    assert [t.metadata.num_rows for t in tasks] == [5]


def test_none_flags_leave_the_plan_as_written():
    plan = df.range(10).filter(expr="id > 2").map_batches(double).limit(3)._plan
    assert optimize(plan, OptimizerFlags.none()) is plan
    only_fusion = OptimizerFlags(
        predicate_pushdown=False, limit_pushdown=False, projection_pushdown=False
    )
    out = optimize(plan, only_fusion)
    assert isinstance(out, Limit) and isinstance(out.input, FusedMap)
    assert out.input.stages[0] == Read(plan.input.input.input.datasource)


def test_stages_show_each_rule_in_order():
    plan = df.range(10).filter(expr="id > 2").limit(3)._plan
    stages = optimization_stages(plan)
    assert [name for name, _ in stages] == [name for name, _ in RULES]
    after_predicate = render(stages[0][1])
    assert after_predicate == "limit(3)\n  read_range predicate=id > 2"
    assert render(stages[1][1]) == "limit(3)\n  read_range predicate=id > 2 limit=3"


def test_non_converging_rule_raises(monkeypatch):
    def churn(plan: LogicalOperator) -> LogicalOperator:
        return dataclasses.replace(plan)  # a new object every time: never a fixpoint

    monkeypatch.setattr(optimizer, "RULES", (("fusion", churn),))
    with pytest.raises(df.PlanError, match=r"rule 'fusion' did not converge after 32 passes"):
        optimize(df.range(3)._plan)


def test_context_flags_are_used_by_the_dataset(monkeypatch):
    ds = df.range(10).limit(2)
    ctx = df.DataContext.get_current()
    monkeypatch.setattr(ctx, "optimizer_flags", OptimizerFlags.none())
    assert ds._optimized() is ds._plan
    monkeypatch.setattr(ctx, "optimizer_flags", None)
    assert ds._optimized().input.limit == 2


def test_explain_shows_every_stage_and_the_physical_plan(capsys):
    ds = df.range(50).filter(expr="id > 3").select_columns("id").map_batches(double).limit(2)
    ds.explain()
    text = capsys.readouterr().out
    sections = text.rstrip("\n").split("\n\n")
    assert sections[0] == (
        "-- Logical plan --\n"
        "limit(2)\n  map_batches(double)\n    select_columns(id)\n      filter(id > 3)\n"
        "        read_range"
    )
    assert [s.splitlines()[0] for s in sections] == [
        "-- Logical plan --",
        "-- After predicate_pushdown --",
        "-- After limit_pushdown --",
        "-- After topk --",
        "-- After projection_pushdown --",
        "-- After dictionary_keys --",
        "-- After fusion --",
        "-- Physical plan --",
    ]
    assert sections[2] == "-- After limit_pushdown --\n(unchanged)"
    assert sections[3] == "-- After topk --\n(unchanged)"
    assert sections[5] == "-- After dictionary_keys --\n(unchanged)"
    assert sections[6] == (
        "-- After fusion --\nlimit(2)\n  fused[3 stages]\n"
        "    | read_range columns=[id] predicate=id > 3\n"
        "    | select_columns(id)\n    | map_batches(double)"
    )
    assert sections[7] == (
        "-- Physical plan --\nlimit(2)\n  read_range->select_columns(id)->map_batches(double)"
    )
