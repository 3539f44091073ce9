"""Each optimizer rule on hand-built plans: the rewritten plan is compared node by node."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

import dataflow as df
from dataflow.plan.logical import (
    Compute,
    FusedMap,
    Limit,
    MapBatches,
    MapRows,
    Project,
    Read,
)
from dataflow.plan.rules import fusion, limit_pushdown, predicate_pushdown, projection_pushdown
from dataflow.sources.datasource import Datasource
from runtime.resources import Resources


class PlainDatasource(Datasource):
    """A source with a schema and no pushdown support."""

    def schema(self) -> pa.Schema:
        return pa.schema([("a", pa.int64()), ("b", pa.int64()), ("c", pa.string())])


class PushdownDatasource(PlainDatasource):
    supports_projection_pushdown = True
    supports_predicate_pushdown = True
    supports_limit_pushdown = True


def double(batch):
    return batch


def keep(row):
    return True


SRC = PushdownDatasource()
READ = Read(SRC)


def ds(source=SRC) -> df.Dataset:
    return df.read_datasource(source)


# -- predicate pushdown ---------------------------------------------------------------


def test_filter_expr_over_read_becomes_read_predicate():
    plan = ds().filter(expr="a > 1")._plan
    out = predicate_pushdown.apply(plan)
    assert out == Read(SRC, predicate=df.col("a") > 1)


def test_two_filters_combine_with_and():
    plan = ds().filter(expr="a > 1").filter(expr=df.col("c") == "x")._plan
    out = predicate_pushdown.apply(plan)
    assert out == Read(SRC, predicate=(df.col("a") > 1) & (df.col("c") == "x"))


def test_predicate_stays_when_unsupported_or_python():
    unsupported = ds(PlainDatasource()).filter(expr="a > 1")._plan
    assert predicate_pushdown.apply(unsupported) is unsupported
    python_fn = ds().filter(keep)._plan
    assert predicate_pushdown.apply(python_fn) is python_fn
    above_map = ds().map_batches(double).filter(expr="a > 1")._plan
    assert predicate_pushdown.apply(above_map) is above_map


# -- limit pushdown -------------------------------------------------------------------


def test_limit_over_limit_takes_the_minimum():
    plan = ds(PlainDatasource()).limit(10).limit(3)._plan
    out = limit_pushdown.apply(plan)
    assert isinstance(out, Limit) and out.n == 3 and isinstance(out.input, Read)


def test_limit_moves_below_row_preserving_ops_and_into_read():
    plan = ds().map(keep).select_columns("a").limit(5)._plan
    out = limit_pushdown.apply(plan)
    assert isinstance(out, Project)
    names = [n.name for n in out.walk()]
    assert names == ["read_pushdown", "limit(5)", "map(keep)", "select_columns(a)"]
    assert next(out.walk()) == Read(SRC, limit=5)


def test_limit_stops_at_batch_maps_filters_and_skipping_maps():
    for plan in (
        ds().map_batches(double).limit(5)._plan,
        ds().filter(keep).limit(5)._plan,
        ds().map(keep, on_error="skip").limit(5)._plan,
    ):
        out = limit_pushdown.apply(plan)
        assert isinstance(out, Limit) and out.input == plan.input


def test_limit_not_pushed_into_unsupported_read_and_idempotent():
    plan = ds(PlainDatasource()).limit(5)._plan
    assert limit_pushdown.apply(plan) is plan
    pushed = limit_pushdown.apply(ds().limit(5)._plan)
    assert limit_pushdown.apply(pushed) is pushed


# -- projection pushdown --------------------------------------------------------------


def test_select_sets_read_columns_including_filter_columns():
    plan = ds().filter(expr="b > 0").select_columns(["c", "a"])._plan
    out = projection_pushdown.apply(plan)
    assert list(out.walk())[0] == Read(SRC, columns=("a", "b", "c"))
    # select a only: the filter still needs b
    out = projection_pushdown.apply(ds().filter(expr="b > 0").select_columns("a")._plan)
    assert list(out.walk())[0].columns == ("a", "b")


def test_with_column_needs_its_expression_inputs():
    plan = ds().with_column("d", df.col("b") * 2).select_columns(["d"])._plan
    out = projection_pushdown.apply(plan)
    assert list(out.walk())[0].columns == ("b",)


def test_projection_stops_at_python_udfs_and_unsupported_reads():
    above_map = ds().map_batches(double).select_columns("a")._plan
    assert projection_pushdown.apply(above_map) is above_map
    unsupported = ds(PlainDatasource()).select_columns("a")._plan
    assert projection_pushdown.apply(unsupported) is unsupported


def test_nested_selects_merge():
    plan = ds().select_columns(["a", "b"]).select_columns("a")._plan
    out = projection_pushdown.apply(plan)
    assert isinstance(out, Project) and out.select == ("a",)
    assert out.input == Read(SRC, columns=("a",))
    assert projection_pushdown.apply(out) is out


# -- fusion ---------------------------------------------------------------------------


def test_read_and_default_chain_fuse_into_one_stage():
    plan = ds().map_batches(double).filter(keep).map(keep)._plan
    out = fusion.apply(plan)
    assert isinstance(out, FusedMap) and out.inputs == ()
    assert [s.name for s in out.stages] == [
        "read_pushdown",
        "map_batches(double)",
        "filter(keep)",
        "map(keep)",
    ]
    assert all(s.inputs == () for s in out.stages)
    assert fusion.apply(out) is out


def test_different_resources_or_actors_do_not_fuse():
    class Model:
        def __call__(self, batch):
            return batch

    plan = (
        ds()
        .map_batches(double)
        .map_batches(double, num_gpus=1)
        .map_batches(Model, concurrency=2)
        ._plan
    )
    out = fusion.apply(plan)
    assert isinstance(out, MapBatches) and out.compute == Compute("actors", 2, 2)
    gpu = out.input
    assert isinstance(gpu, MapBatches) and gpu.resources == Resources.of(cpu=1, gpu=1)
    assert isinstance(gpu.input, FusedMap)
    assert [s.name for s in gpu.input.stages] == ["read_pushdown", "map_batches(double)"]


def test_read_does_not_join_a_gpu_chain_but_the_chain_fuses():
    plan = ds().map_batches(double, num_gpus=1).map_batches(double, num_gpus=1)._plan
    out = fusion.apply(plan)
    assert isinstance(out, FusedMap) and out.inputs == (READ,)
    assert len(out.stages) == 2


def test_limit_breaks_fusion():
    plan = ds().map(keep).limit(2).map(keep)._plan
    out = fusion.apply(plan)
    assert isinstance(out, MapRows) and isinstance(out.input, Limit)
    assert isinstance(out.input.input, FusedMap)


def test_fused_stages_keep_their_parameters():
    plan = ds().map_batches(double, batch_size=7, batch_format="pyarrow")._plan
    out = fusion.apply(plan)
    stage = out.stages[1]
    assert stage == dataclasses.replace(plan, inputs=())
    assert (
        isinstance(stage, MapBatches) and stage.batch_size == 7 and stage.batch_format == "pyarrow"
    )
    assert out.stages[0] == READ


# -- projection pushdown through aggregations ---------------------------------------------


def test_builtin_aggregations_read_only_their_keys_and_columns():
    plan = ds().groupby("c").mean("a")._plan
    out = projection_pushdown.apply(plan)
    assert out == plan.with_inputs(Read(SRC, columns=("a", "c")))


def test_custom_aggregation_or_bare_count_keeps_every_column():
    from dataflow.aggregate import AggregateFn
    from dataflow.plan.logical import Aggregate

    custom = AggregateFn(
        init=lambda k: 0,
        merge=lambda x, y: x + y,
        name="n",
        accumulate_block=lambda acc, b: acc + b.num_rows,
    )
    bare_count = Aggregate(keys=(), aggs=(df.aggregate.Count(),), inputs=(READ,))
    for plan in (ds().groupby("c").aggregate(custom)._plan, bare_count):
        assert projection_pushdown.apply(plan) == plan


def test_grouped_results_equal_with_and_without_projection_pushdown(tmp_path):
    import pyarrow.parquet as pq

    table = pa.table({"k": ["x", "y", "x", None], "a": [1.0, 2.0, 3.0, 4.0], "t": list("abcd")})
    pq.write_table(table, tmp_path / "t.parquet")
    grouped = df.read_parquet(str(tmp_path)).groupby("k")
    ctx = df.DataContext.get_current()
    expected = [{"k": "x", "mean(a)": 2.0}, {"k": "y", "mean(a)": 2.0}, {"k": None, "mean(a)": 4.0}]
    assert sorted(map(str, grouped.mean("a").take_all())) == sorted(map(str, expected))
    old, ctx.optimizer_flags = ctx.optimizer_flags, df.OptimizerFlags.none()
    try:
        assert sorted(map(str, grouped.mean("a").take_all())) == sorted(map(str, expected))
    finally:
        ctx.optimizer_flags = old
