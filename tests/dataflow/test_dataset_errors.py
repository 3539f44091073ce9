"""Bad input to the Dataset API: each raises at plan time with a message naming
the method, the function or column, and what to do; user-code failures come out
of consumption as UserCodeError; writes roll back."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataflow as df
from dataflow.sources.datasource import (
    BlockMetadata,
    Datasink,
    Datasource,
    ReadTask,
    WriteResult,
)

DS = df.from_items([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])


def ident(batch):
    return batch


class Model:
    def __init__(self, scale=1):
        self.scale = scale

    def __call__(self, batch):
        return batch


class NotCallable:
    pass


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda: DS.select_columns(["a", "zz"]),
            "select_columns: unknown column 'zz'; available columns: a, b",
        ),
        (lambda: DS.drop_columns("zz"), "drop_columns: unknown column 'zz'"),
        (lambda: DS.rename_columns({"zz": "q"}), "rename_columns: unknown column 'zz'"),
        (lambda: DS.rename_columns({"a": "q", "b": "q"}), "new names must be unique"),
        (lambda: DS.select_columns(["a", "a"]), "select_columns: duplicate column names"),
        (lambda: DS.select_columns([]), "select_columns: expected a column name or a list"),
        (lambda: DS.filter(expr="zz > 1"), "filter: unknown column 'zz' in expression zz > 1"),
        (lambda: DS.filter(expr="len(b) > 1"), "call is not supported in 'len(b)'"),
        (lambda: DS.filter(), "filter: pass exactly one of fn"),
        (lambda: DS.filter(ident, expr="a > 1"), "filter: pass exactly one of fn"),
        (lambda: DS.filter(expr=3), "filter: expr must be a dataflow expression"),
        (lambda: DS.with_column("c", df.col("q") + 1), "with_column(c): unknown column 'q'"),
        (lambda: DS.with_column("", df.col("a")), "with_column: column name must be a non-empty"),
        (lambda: DS.limit(-1), "limit: limit must be a non-negative int"),
        (lambda: DS.union(3), "union: expected Dataset arguments, got int"),
        (lambda: DS.union(), "union: pass at least one other Dataset"),
        (lambda: DS.zip([1]), "zip: expected Dataset arguments"),
        (
            lambda: DS.map_batches(ident, batch_size=0),
            "map_batches(ident): batch_size must be an int >= 1",
        ),
        (
            lambda: DS.map_batches(ident, batch_format="arrow"),
            "map_batches(ident): unknown batch_format 'arrow'",
        ),
        (
            lambda: DS.map_batches(ident, concurrency=(1, 4)),
            "map_batches(ident): concurrency=(min, max) autoscales an actor pool",
        ),
        (
            lambda: DS.map_batches(Model, concurrency=(4, 1)),
            "map_batches(Model): concurrency=(min, max) needs min <= max",
        ),
        (
            lambda: DS.map_batches(Model, concurrency="2"),
            "map_batches(Model): concurrency must be None",
        ),
        (
            lambda: DS.map_batches(ident, fn_constructor_args=(1,)),
            "map_batches(ident): fn_constructor_args/fn_constructor_kwargs are only for callable classes",
        ),
        (
            lambda: DS.map_batches(ident, num_gpus=-1),
            "map_batches(ident): num_gpus must be a non-negative number",
        ),
        (
            lambda: DS.map_batches(ident, resources={"tpu": "x"}),
            "map_batches(ident): tpu must be a non-negative number",
        ),
        (
            lambda: DS.map_batches(ident, on_error="ignore"),
            "map_batches(ident): on_error must be one of",
        ),
        (
            lambda: DS.map_batches(ident, fn_args=5),
            "map_batches(ident): fn_args must be a tuple or list",
        ),
        (
            lambda: DS.map_batches(NotCallable),
            "map_batches(NotCallable): class NotCallable has no __call__",
        ),
        (lambda: DS.map(42), "map: fn must be a function or a callable class"),
        (lambda: DS.add_column("c", 5), "add_column(c): fn must be a function or a callable class"),
        (
            lambda: DS.add_column("c", len, batch_format="cupy"),
            "add_column(c): batch_format must be",
        ),
        (lambda: df.range(-1), "range: n must be a non-negative int"),
        (
            lambda: df.range(5, override_num_blocks=0),
            "range: override_num_blocks must be a positive int",
        ),
        (
            lambda: df.range_tensor(5, shape=(0,)),
            "range_tensor: shape must be a tuple of positive ints",
        ),
        (lambda: df.from_items("abc"), "from_items: expected a list of dicts or values, got str"),
        (lambda: df.from_items([{"a": 1}, 2]), "from_items: mix of dicts and plain values"),
        (lambda: df.from_pandas([1]), "from_pandas: expected DataFrame or a list of them, got int"),
        (lambda: df.from_arrow({"a": [1]}), "from_arrow: expected Table or RecordBatch"),
        (lambda: df.from_numpy(__import__("numpy").float64(1.0)), "from_numpy: expected ndarray"),
        (
            lambda: df.read_datasource(object()),
            "read_datasource: expected a dataflow.sources.datasource.Datasource",
        ),
        (lambda: DS.iter_batches(batch_size=-2), "iter_batches: batch_size must be a positive int"),
        (
            lambda: DS.iter_batches(batch_format="cupy"),
            "iter_batches: batch_format 'cupy' is for map_batches",
        ),
        (
            lambda: DS.write_datasink(object()),
            "write_datasink: expected a dataflow.sources.datasource.Datasink",
        ),
    ],
)
def test_bad_arguments_raise_plan_error(make, message):
    with pytest.raises(df.PlanError) as info:
        make()
    assert message in str(info.value)


def test_valid_udf_arguments_build_the_node():
    node = DS.map_batches(
        Model,
        concurrency=(1, 3),
        num_cpus=0.5,
        num_gpus=1,
        memory=1e9,
        resources={"tpu": 2},
        fn_constructor_kwargs={"scale": 2},
        batch_size=None,
    )._plan
    assert (node.compute.kind, node.compute.min_size, node.compute.max_size) == ("actors", 1, 3)
    assert node.resources.custom_dict == {"tpu": 2.0}
    assert (node.resources.cpu, node.resources.gpu, node.resources.memory) == (0.5, 1.0, 1e9)
    assert node.fn_constructor_kwargs == (("scale", 2),) and node.batch_size is None
    pool = DS.map_batches(ident, concurrency=3)._plan.compute
    assert (pool.kind, pool.max_size) == ("tasks", 3)
    default_class = DS.map_batches(Model)._plan.compute
    assert (default_class.kind, default_class.min_size, default_class.max_size) == (
        "actors",
        1,
        None,
    )


def boom(batch):
    raise KeyError("no such key")


def test_user_code_error_names_the_operator(backend):
    with pytest.raises(df.UserCodeError) as info:
        df.range(10).map_batches(boom).take_all()
    assert "map_batches(boom)" in str(info.value)
    assert "no such key" in str(info.value)


class MemorySink(Datasink):
    """Collects rows in the driver through WriteResult.extra; records the hooks."""

    def __init__(self, fail_in_task: bool = False) -> None:
        self.events: list[str] = []
        self.fail_in_task = fail_in_task
        self.rows: list[dict] = []

    def on_write_start(self) -> None:
        self.events.append("start")

    def write(self, blocks, task_index: int) -> WriteResult:
        rows = [r for b in blocks for r in b.to_pylist()]
        if self.fail_in_task:
            raise OSError("disk full")
        return WriteResult(num_rows=len(rows), extra={"rows": rows})

    def on_write_complete(self, results) -> None:
        self.events.append("complete")
        self.rows = sorted((r for res in results for r in res.extra["rows"]), key=lambda r: r["id"])

    def on_write_failed(self, error: BaseException) -> None:
        self.events.append(f"failed:{type(error).__name__}")


def test_write_datasink_commits(backend):
    sink = MemorySink()
    df.range(12, override_num_blocks=3).write_datasink(sink)
    assert sink.events == ["start", "complete"]
    assert sink.rows == [{"id": i} for i in range(12)]


def test_write_datasink_rolls_back_on_failure(backend):
    sink = MemorySink(fail_in_task=True)
    with pytest.raises(df.UserCodeError, match="disk full"):
        df.range(12, override_num_blocks=3).write_datasink(sink)
    assert sink.events == ["start", "failed:UserCodeError"]


def test_take_all_limit_and_empty_take_batch(backend):
    with pytest.raises(ValueError, match="more than the given limit of 3 rows"):
        df.range(10).take_all(limit=3)
    rows = df.range(3).take_all(limit=3)
    assert sorted(r["id"] for r in rows) == [0, 1, 2]  # blocks arrive in any order
    with pytest.raises(ValueError, match="take_batch: the dataset is empty"):
        df.range(0).take_batch()


def test_write_files_roundtrip(backend, tmp_path):
    out = tmp_path / "out"
    df.range(20, override_num_blocks=2).write_parquet(str(out))
    back = sorted(r["id"] for r in df.read_parquet(str(out)).take_all())
    assert back == list(range(20))
    table = pa.table({"id": list(range(20))})
    assert df.read_parquet(str(out)).to_arrow().sort_by("id").equals(table)


def fail_on_150(batch):
    if 150 in batch["id"]:
        raise ValueError("id 150 is not allowed")
    return batch


class FailOn150:
    def __call__(self, batch):
        return fail_on_150(batch)


class ThreeFiles(Datasource):
    """Ids 0-299 in three read tasks of 100 rows, each naming the file it reads."""

    def __init__(self, root: str) -> None:
        self.root = root

    def get_read_tasks(self, parallelism: int, **pushdown) -> list[ReadTask]:
        return [
            ReadTask(
                lambda i=i: [pa.table({"id": list(range(100 * i, 100 * i + 100))})],
                BlockMetadata(num_rows=100, input_files=(f"{self.root}/part-{i}.parquet",)),
            )
            for i in range(3)
        ]


def first_line(error: BaseException) -> str:
    return str(error).splitlines()[0]


def test_read_task_failure_names_the_task_and_its_file(backend):
    ds = df.read_datasource(ThreeFiles("/data")).map_batches(fail_on_150)
    with pytest.raises(df.UserCodeError) as info:
        ds.take_all()
    assert first_line(info.value) == (
        "map_batches(fail_on_150) failed on read task 1 (file /data/part-1.parquet): "
        "ValueError: id 150 is not allowed"
    )
    assert info.value.block == "read task 1 (file /data/part-1.parquet)"


def test_read_parquet_failure_names_the_file(backend, tmp_path):
    path = str(tmp_path / "p.parquet")
    pq.write_table(pa.table({"id": list(range(140, 160))}), path)
    with pytest.raises(df.UserCodeError) as info:
        df.read_parquet(path).map_batches(fail_on_150).take_all()
    assert first_line(info.value) == (
        f"map_batches(fail_on_150) failed on read task 0 (file {path}): "
        "ValueError: id 150 is not allowed"
    )


def test_downstream_failure_names_the_block_and_where_it_was_read(backend):
    ds = df.read_datasource(ThreeFiles("/data")).map_batches(FailOn150, concurrency=1)
    with pytest.raises(df.UserCodeError) as info:
        ds.take_all()
    assert first_line(info.value) == (
        "map_batches(FailOn150) failed on block 0 of read task 1 (file /data/part-1.parquet): "
        "ValueError: id 150 is not allowed"
    )


def test_failure_after_an_exchange_names_the_exchange_task(backend):
    ds = df.range(300, override_num_blocks=3).repartition(3).map_batches(fail_on_150)
    with pytest.raises(df.UserCodeError) as info:
        ds.take_all()
    assert first_line(info.value) == (
        "map_batches(fail_on_150) failed on block 0 of repartition(3) task 1: "
        "ValueError: id 150 is not allowed"
    )


def test_failure_on_in_memory_blocks_names_the_block(backend):
    parts = [pa.table({"id": list(range(100 * i, 100 * i + 100))}) for i in range(3)]
    with pytest.raises(df.UserCodeError) as info:
        df.from_arrow(parts).map_batches(fail_on_150).take_all()
    assert first_line(info.value) == (
        "map_batches(fail_on_150) failed on block 1 of the in-memory data: "
        "ValueError: id 150 is not allowed"
    )
