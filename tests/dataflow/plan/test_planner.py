"""The planner: registry coverage, physical DAG shape, driver placement, plan-time errors."""

from __future__ import annotations

import inspect

import pyarrow as pa
import pytest

import dataflow as df
from dataflow.context import DataContext
from dataflow.errors import PlanError, UserCodeError
from dataflow.exec.operators.actor_pool import ActorPoolMapOperator
from dataflow.exec.operators.input import InputBuffer
from dataflow.exec.operators.limit import LimitOperator
from dataflow.exec.operators.map import MapOperator
from dataflow.plan import logical
from dataflow.plan.logical import (
    Compute,
    Filter,
    FusedMap,
    InputData,
    Limit,
    LogicalOperator,
    MapBatches,
    MapRows,
    Project,
    Read,
    Union,
)
from dataflow.plan.planner import execute, plan_physical, registered_node_types
from dataflow.sources.range import RangeDatasource

T = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})


def data(*tables):
    return InputData(blocks=tables or (T,))


def test_every_logical_node_is_registered():
    nodes = {
        cls
        for _, cls in inspect.getmembers(logical, inspect.isclass)
        if issubclass(cls, LogicalOperator)
        and cls.__module__ == logical.__name__
        and cls not in (LogicalOperator, logical.AbstractUDF)
    }
    assert nodes - registered_node_types() == set()


def test_unknown_node_fails_loudly():
    class Mystery(LogicalOperator):
        pass

    with pytest.raises(
        PlanError, match=r"no rule for logical node Mystery .*known nodes: .*FusedMap"
    ):
        plan_physical(Mystery(), DataContext())


def test_physical_dag_shape():
    udf = MapBatches(fn=lambda b: b, inputs=(data(),))
    sink = plan_physical(Limit(inputs=(udf,), n=2), DataContext())
    assert isinstance(sink, LimitOperator)
    (map_op,) = sink.input_dependencies
    assert isinstance(map_op, MapOperator) and map_op.name == "map_batches(<lambda>)"
    assert isinstance(map_op.input_dependencies[0], InputBuffer)
    fused = FusedMap(stages=(Read(RangeDatasource(10)), MapRows(fn=lambda r: r)))
    op = plan_physical(fused, DataContext())
    assert op.input_dependencies == [] and op.name == "read_range->map(<lambda>)"
    assert [type(s).__name__ for s in op.task_fn.stages] == ["MapRowsStage"]


class Model:
    def __call__(self, b):
        return b


def test_callable_class_without_concurrency_gets_a_pool_up_to_the_cpus():
    df.init("inline", num_cpus=3)
    try:
        op = plan_physical(
            MapBatches(fn=Model, compute=Compute("actors", 1, None), inputs=(data(),)),
            DataContext(),
        )
        assert isinstance(op, ActorPoolMapOperator)
        assert (op.min_size, op.max_size, op.initial_size) == (1, 3, 1)
    finally:
        df.shutdown()


def test_dead_letter_without_a_path_is_a_plan_error():
    plan = MapRows(fn=lambda r: r, on_error="dead_letter", inputs=(data(),))
    with pytest.raises(
        PlanError, match=r"map\(<lambda>\): on_error='dead_letter' needs a directory"
    ):
        plan_physical(plan, DataContext())


def test_unknown_on_error_is_the_same_plan_error_in_the_facade_and_the_planner():
    expected = (
        "map(<lambda>): on_error must be one of ('raise', 'skip', 'dead_letter'), got 'ignore'"
    )
    with pytest.raises(PlanError) as built:
        plan_physical(MapRows(fn=lambda r: r, on_error="ignore", inputs=(data(),)), DataContext())
    with pytest.raises(PlanError) as called:
        df.range(3).map(lambda r: r, on_error="ignore")
    assert str(built.value) == str(called.value) == expected


def test_filter_needs_exactly_one_of_fn_and_expr():
    with pytest.raises(PlanError, match="give exactly one of fn or expr"):
        plan_physical(Filter(inputs=(data(),)), DataContext())


def test_metadata_counts_match_execution(backend):
    plans = [
        Limit(inputs=(Read(RangeDatasource(100)),), n=7),
        Union(inputs=(Read(RangeDatasource(20)), Project(select=("a",), inputs=(data(),)))),
    ]
    for plan in plans:
        with execute(plan, DataContext().replace(enable_progress_bars=False)) as stream:
            assert sum(t.num_rows for t in stream.iter_blocks()) == plan.num_rows()


def test_unknown_column_in_a_projection_is_raised_as_plan_error(backend):
    plan = Project(select=("a", "nope"), label="select_columns", inputs=(data(),))
    with pytest.raises(
        PlanError, match=r"select_columns: unknown column 'nope'; available columns: a, b"
    ):
        with execute(plan, DataContext()) as stream:
            list(stream.iter_blocks())


def test_driver_mode_only_for_small_plans_without_python():
    from dataflow.aggregate import AggregateFn, Sum
    from dataflow.plan.logical import Aggregate, Join, MapGroups, Sort
    from dataflow.plan.planner import _runs_in_driver

    c = DataContext()
    small = Read(RangeDatasource(10))
    huge = Read(RangeDatasource(10**10))
    assert _runs_in_driver(Project(select=("id",), inputs=(small,)), c)
    assert _runs_in_driver(Limit(inputs=(huge,), n=1), c)  # a limit bounds the rows
    assert _runs_in_driver(Sort(keys=("id",), descending=(False,), inputs=(small,)), c)
    # Arrow-only plans of any size: readers that release the GIL need no process hop.
    assert _runs_in_driver(huge, c)
    assert _runs_in_driver(Join(left_on=("id",), right_on=("id",), inputs=(huge, small)), c)
    python_reads = Read(_PythonSource())
    assert not _runs_in_driver(python_reads, c)  # a Python datasource reads in workers...
    assert _runs_in_driver(Limit(inputs=(python_reads,), n=5), c)  # ...unless tiny
    assert not _runs_in_driver(MapRows(fn=lambda r: r, inputs=(small,)), c)
    assert not _runs_in_driver(MapGroups(keys=("id",), fn=lambda g: g, inputs=(small,)), c)
    # A keyless aggregate outputs one row but reads them all: still the workers' job.
    assert not _runs_in_driver(Aggregate(keys=(), aggs=(Sum("id"),), inputs=(python_reads,)), c)
    assert _runs_in_driver(Aggregate(keys=(), aggs=(Sum("id"),), inputs=(small,)), c)
    product = AggregateFn(init=lambda k: 1, merge=int.__mul__, name="p", accumulate_row=_mul)
    assert not _runs_in_driver(Aggregate(keys=(), aggs=(product,), inputs=(small,)), c)


def _mul(acc: int, row: dict) -> int:
    return acc * row["id"]


class _PythonSource(RangeDatasource):
    """A datasource whose reads run Python (the default for user datasources)."""

    reads_without_gil = False

    def __init__(self) -> None:
        super().__init__(10**9)


# -- a write joined to the all-to-all step before it ------------------------------------


def _written_rows(path) -> list[dict]:
    """The rows of a write's files, in the order its manifest lists them."""
    import json
    import os

    import pyarrow.parquet as pq

    with open(os.path.join(path, "_SUCCESS")) as f:
        files = [entry["path"] for entry in json.load(f)["files"]]
    return [r for name in files for r in pq.read_table(os.path.join(path, name)).to_pylist()]


_ALL_TO_ALL = {
    "sort": lambda ds: ds.sort(["k", "id"], descending=[True, False]),
    "shuffle": lambda ds: ds.random_shuffle(seed=3),
    "groupby": lambda ds: ds.groupby("k").sum("id"),
    "repartition": lambda ds: ds.repartition(3),
}


@pytest.mark.parametrize("op", sorted(_ALL_TO_ALL))
def test_a_write_after_an_all_to_all_step_runs_in_its_reduce_tasks(backend, tmp_path, op):
    table = pa.table({"id": list(range(3000)), "k": [i * 7 % 11 for i in range(3000)]})
    ds = _ALL_TO_ALL[op](df.from_arrow([table.slice(i, 750) for i in range(0, 3000, 750)]))
    ds.write_parquet(str(tmp_path))
    stats = ds._last_stream.stats()
    # The files hold the step's rows in its order, as if read from a separate write.
    assert _written_rows(tmp_path) == ds.take_all()
    (joined,) = [o for o in stats.operators if o.name.endswith("->write_parquet")]
    assert [o.name for o in stats.operators if "write" in o.name] == [joined.name]
    (write,) = joined.steps
    rows = 11 if op == "groupby" else 3000
    files = len(list(tmp_path.glob("*.parquet")))
    assert (write.rows_in, write.rows_written, write.files) == (rows, rows, files)


def test_a_write_with_settings_of_its_own_or_a_python_sink_keeps_its_own_tasks(tmp_path):
    from dataflow.exec.exchange.operator import ExchangeOperator
    from dataflow.plan.logical import Sort, Write
    from dataflow.sources.sinks import CSVDatasink, ParquetDatasink

    class PythonSink(ParquetDatasink):
        writes_without_gil = False

    sort = Sort(keys=("id",), descending=(False,), inputs=(data(),))
    c = DataContext()
    joined = plan_physical(Write(ParquetDatasink(str(tmp_path)), inputs=(sort,)), c)
    assert isinstance(joined, ExchangeOperator) and joined.name == "sort(id)->write_parquet"
    assert [s.name for s in joined.steps()] == ["write_parquet"]
    csv = plan_physical(Write(CSVDatasink(str(tmp_path)), inputs=(sort,)), c)
    assert isinstance(csv, ExchangeOperator) and csv.name == "sort(id)->write_csv"
    for write in (
        Write(ParquetDatasink(str(tmp_path)), min_rows_per_task=10, inputs=(sort,)),
        Write(PythonSink(str(tmp_path)), inputs=(sort,)),
    ):
        op = plan_physical(write, c)
        assert isinstance(op, MapOperator) and op.name == "write_parquet"
        (exchange,) = op.input_dependencies
        assert exchange.name == "sort(id)" and exchange.post is None


def test_a_failing_write_inside_a_reduce_names_the_write_and_rolls_back(tmp_path):
    from dataflow.sources.sinks import ParquetDatasink

    class Fails(ParquetDatasink):
        failed: list = []

        def write_table(self, state, stream, table):
            raise OSError("disk on fire")

        def on_write_failed(self, error):
            Fails.failed.append(type(error).__name__)
            super().on_write_failed(error)

    df.init("inline", num_cpus=2)
    try:
        ds = df.range(100, override_num_blocks=4).sort("id", descending=True)
        with pytest.raises(UserCodeError, match=r"write_parquet.*disk on fire"):
            ds.write_datasink(Fails(str(tmp_path)))
    finally:
        df.shutdown()
    assert Fails.failed == ["UserCodeError"]
    assert not list(tmp_path.glob("*.parquet"))
