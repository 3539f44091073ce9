"""What a logical node knows without running: output schema, exact and bounded
row counts, row preservation, whether Python runs. ``count()``, ``schema()``,
the facade's column checks, limit pushdown and the planner all ask these."""

from __future__ import annotations

import pyarrow as pa

import dataflow as df
from dataflow.aggregate import AggregateFn, Sum
from dataflow.expressions import col
from dataflow.plan.logical import (
    Aggregate,
    Filter,
    FlatMap,
    FusedMap,
    InputData,
    Join,
    Limit,
    MapBatches,
    MapRows,
    Project,
    RandomizeBlockOrder,
    RandomShuffle,
    Read,
    Repartition,
    Sort,
    Union,
    Write,
    Zip,
)
from dataflow.sources.range import RangeDatasource

T = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def data() -> InputData:
    return InputData(blocks=(T,))


def ident(x):
    return x


def test_num_rows_is_exact_and_only_without_user_code():
    rng = Read(RangeDatasource(100))
    assert rng.num_rows() == 100
    assert Limit(inputs=(rng,), n=7).num_rows() == 7
    assert Union(inputs=(rng, data())).num_rows() == 103
    assert Project(select=("id",), inputs=(rng,)).num_rows() == 100
    assert FusedMap(stages=(rng, Project(select=("id",)))).num_rows() == 100
    assert Zip(inputs=(rng, Read(RangeDatasource(100)))).num_rows() == 100
    assert Zip(inputs=(rng, Read(RangeDatasource(5)))).num_rows() is None
    # Anything that may drop or add rows needs execution.
    assert Filter(expr=col("id") > 3, inputs=(rng,)).num_rows() is None
    assert Read(RangeDatasource(100), predicate=col("id") > 3).num_rows() is None
    assert MapBatches(fn=ident, inputs=(rng,)).num_rows() is None
    assert MapRows(fn=ident, on_error="skip", inputs=(rng,)).num_rows() is None
    # User code runs, even a map that keeps every row, so that its errors surface.
    assert MapRows(fn=ident, inputs=(rng,)).num_rows() is None
    assert Sort(keys=("id",), descending=(False,), inputs=(rng,)).num_rows() is None


def test_max_rows_bounds_the_output():
    rng = Read(RangeDatasource(100))
    assert Filter(expr=col("id") > 3, inputs=(rng,)).max_rows() == 100
    assert Read(RangeDatasource(100), predicate=col("id") > 3).max_rows() == 100
    assert Limit(inputs=(Filter(fn=ident, inputs=(rng,)),), n=5).max_rows() == 5
    assert MapRows(fn=ident, on_error="skip", inputs=(rng,)).max_rows() == 100
    assert MapBatches(fn=ident, modifies_row_count=False, inputs=(rng,)).max_rows() == 100
    assert MapBatches(fn=ident, inputs=(rng,)).max_rows() is None
    assert FlatMap(fn=ident, inputs=(rng,)).max_rows() is None
    assert Zip(inputs=(rng, Read(RangeDatasource(5)))).max_rows() == 5
    assert Aggregate(keys=(), aggs=(Sum("id"),), inputs=(rng,)).max_rows() == 1
    assert Aggregate(keys=("id",), aggs=(Sum("id"),), inputs=(rng,)).max_rows() == 100
    assert Join(left_on=("id",), right_on=("id",), inputs=(rng, rng)).max_rows() is None
    assert FusedMap(stages=(rng, FlatMap(fn=ident))).max_rows() is None


def test_output_schema():
    rng = Read(RangeDatasource(10))
    assert rng.output_schema() == pa.schema([("id", pa.int64())])
    project = Project(
        rename=(("id", "n"),), with_columns=(("double", col("n") * 2),), inputs=(rng,)
    )
    assert project.output_schema().names == ["n", "double"]
    assert FusedMap(stages=(rng, Project(select=("id",)))).output_schema().names == ["id"]
    assert MapBatches(fn=ident, inputs=(data(),)).output_schema() is None
    # Nodes that only drop, order or regroup rows keep their input's columns
    # (Ray Data's LogicalOperatorPreservesSchema), a filter with a function too.
    for node in (
        Filter(expr=col("a") > 1, inputs=(data(),)),
        Filter(fn=ident, inputs=(data(),)),
        Limit(n=1, inputs=(data(),)),
        Sort(keys=("a",), descending=(True,), inputs=(data(),)),
        RandomShuffle(inputs=(data(),)),
        RandomizeBlockOrder(inputs=(data(),)),
        Repartition(num_blocks=2, inputs=(data(),)),
        Union(inputs=(data(), data())),
    ):
        assert node.output_schema() == T.schema, node.name


def test_a_read_of_a_column_its_source_lacks_has_no_schema():
    # It fails when it runs; known_schema used to answer without the column.
    assert Read(RangeDatasource(10), columns=("id", "nope")).output_schema() is None
    assert Read(RangeDatasource(10), columns=("id",)).output_schema().names == ["id"]
    assert Project(select=("nope",), inputs=(data(),)).output_schema() is None


def test_preserves_rows_and_runs_python():
    rng = Read(RangeDatasource(10))
    assert Project(select=("id",), inputs=(rng,)).preserves_rows
    assert MapRows(fn=ident, inputs=(rng,)).preserves_rows
    assert not MapRows(fn=ident, on_error="skip", inputs=(rng,)).preserves_rows
    assert MapBatches(fn=ident, modifies_row_count=False, inputs=(rng,)).preserves_rows
    assert not MapBatches(fn=ident, inputs=(rng,)).preserves_rows
    assert not Filter(expr=col("id") > 1, inputs=(rng,)).preserves_rows
    assert not FusedMap(stages=(rng, Project(select=("id",)))).preserves_rows  # a source
    assert FusedMap(
        stages=(Project(select=("id",)), MapRows(fn=ident)), inputs=(rng,)
    ).preserves_rows

    assert not Filter(expr=col("id") > 1, inputs=(rng,)).runs_python
    assert Filter(fn=ident, inputs=(rng,)).runs_python
    assert FusedMap(stages=(rng, MapRows(fn=ident))).runs_python
    assert not Aggregate(keys=(), aggs=(Sum("id"),), inputs=(rng,)).runs_python
    custom = AggregateFn(init=lambda k: 0, merge=int.__add__, name="n", accumulate_row=_count)
    assert Aggregate(keys=(), aggs=(custom,), inputs=(rng,)).runs_python
    sink = df.read_api  # any object: a Write's sink is Python whatever it is
    assert Write(datasink=sink, inputs=(rng,)).runs_python


def _count(acc: int, row: dict) -> int:
    return acc + 1


def test_dataset_schema_of_a_function_filter_and_a_sort_needs_no_run(backend):
    calls = []

    def keep(row):
        calls.append(1)
        return True

    ds = df.from_arrow(T)
    assert ds.filter(keep).schema() == T.schema
    assert ds.sort("a").columns(fetch_if_missing=False) == ["a", "b"]
    assert calls == []
