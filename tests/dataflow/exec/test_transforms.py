"""Block transforms as they run inside a task (called in-process here)."""

from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dataflow.errors import PlanError, SourceError
from dataflow.exec.transforms import (
    ActorFactory,
    ErrorPolicy,
    FilterStage,
    FlatMapStage,
    MapBatchesStage,
    MapRowsStage,
    MapTaskFn,
    ProjectStage,
    StageFailure,
)
from dataflow.sources.datasource import BlockMetadata, ReadTask
from runtime.task import TaskContext, current_task, set_current_task


def run(stages, tables, max_bytes=1 << 30, read=None):
    return list(MapTaskFn(tuple(stages), max_bytes, "read_test")(tables, 0, read))


def rows(tables, col="x"):
    return [v for t in tables for v in t.column(col).to_pylist()]


@pytest.fixture
def task_ctx():
    ctx = TaskContext()
    set_current_task(ctx)
    yield ctx
    set_current_task(None)


def test_map_batches_rebatches_to_exact_size_across_blocks():
    seen = []

    def f(b):
        seen.append(len(b["x"]))
        return {"x": b["x"] + 1}

    out = run(
        [MapBatchesStage("mb", fn=f, batch_size=4)],
        [pa.table({"x": range(3)}), pa.table({"x": range(3, 10)})],
    )
    assert seen == [4, 4, 2]
    assert rows(out) == list(range(1, 11))


def test_map_batches_none_batch_size_is_whole_blocks_and_formats_round_trip():
    def f(df, k):
        df["y"] = df["x"] * k
        return df

    out = run(
        [MapBatchesStage("mb", fn=f, fn_args=(3,), batch_size=None, batch_format="pandas")],
        [pa.table({"x": [1, 2]}), pa.table({"x": [5]})],
    )
    assert [t.num_rows for t in out] == [2, 1]
    assert rows(out, "y") == [3, 6, 15]
    out = run(
        [
            MapBatchesStage(
                "mb",
                fn=lambda t: t.append_column("z", pa.array([7] * t.num_rows)),
                batch_format="pyarrow",
                fn_kwargs=(),
            )
        ],
        [pa.table({"x": [1, 2]})],
    )
    assert out[0].to_pydict() == {"x": [1, 2], "z": [7, 7]}


def test_numpy_batches_are_writable_unless_zero_copy():
    def inplace(b):
        b["x"] += 1  # fails on a read-only view
        return b

    table = pa.table({"x": np.arange(4)})
    assert rows(run([MapBatchesStage("mb", fn=inplace, batch_size=None)], [table])) == [1, 2, 3, 4]
    flags = []
    run(
        [
            MapBatchesStage(
                "mb",
                fn=lambda b: flags.append(b["x"].flags.writeable) or b,
                batch_size=None,
                zero_copy_batch=True,
            )
        ],
        [table],
    )
    assert flags == [False]


def test_generator_udf_outputs_every_batch():
    def gen(b):
        for v in b["x"]:
            yield {"x": np.array([v, v])}

    assert rows(
        run([MapBatchesStage("mb", fn=gen, batch_size=None)], [pa.table({"x": [1, 2]})])
    ) == [1, 1, 2, 2]


def test_fused_chain_of_row_ops():
    stages = [
        MapRowsStage("map(f)", fn=lambda r: {"x": r["x"] * 10}),
        FlatMapStage("flat_map(g)", fn=lambda r: [r, {"x": r["x"] + 1}]),
        FilterStage("filter(h)", fn=lambda r: r["x"] % 20 != 0),
        FilterStage("filter(expr)", expr=pc.field("x") < 40),
    ]
    assert rows(run(stages, [pa.table({"x": [1, 2, 3, 4]})])) == [10, 11, 21, 30, 31]


def test_expression_filter_over_small_blocks_keeps_exactly_the_matching_rows():
    """1024-row map_batches outputs reach the filter as many small blocks, which
    it joins (and makes contiguous) before filtering."""
    mb = MapBatchesStage("mb", fn=lambda t: t, batch_format="pyarrow", batch_size=1024)
    keep_odd = FilterStage(
        "filter(x % 2 == 1)", expr=pc.equal(pc.bit_wise_and(pc.field("x"), 1), 1)
    )
    tables = [pa.table({"x": np.arange(i, i + 5000)}) for i in range(0, 100_000, 5000)]
    out = list(keep_odd.bind()(mb.bind()(iter(tables))))
    assert [t.num_rows for t in out] == [32768, 17232]
    assert rows(out) == list(range(1, 100_000, 2))


def test_all_filtered_task_keeps_its_schema():
    out = run([FilterStage("filter", expr=pc.field("x") > 100)], [pa.table({"x": [1, 2]})])
    assert len(out) == 1 and out[0].num_rows == 0 and out[0].schema.names == ["x"]


def test_outputs_are_rechunked_to_max_block_size():
    out = run(
        [MapBatchesStage("mb", fn=lambda b: b, batch_size=None)],
        [pa.table({"x": np.arange(1000)})],
        max_bytes=800,
    )
    assert [t.num_rows for t in out] == [100] * 10
    assert rows(out) == list(range(1000))


def test_user_error_is_wrapped_with_stage_name_and_user_traceback():
    def normalize(b):
        raise ValueError("bad value 7")

    with pytest.raises(StageFailure) as info:
        run([MapBatchesStage("map_batches(normalize)", fn=normalize)], [pa.table({"x": [1]})])
    e = info.value
    assert e.operator == "map_batches(normalize)" and e.type_name == "ValueError"
    assert 'raise ValueError("bad value 7")' in e.traceback_text
    assert "dataflow/exec/transforms.py" not in e.traceback_text
    assert isinstance(pickle.loads(pickle.dumps(e)).original, ValueError)


def test_unpicklable_error_still_travels():
    class Local(Exception):
        def __reduce__(self):
            raise TypeError("no")

    def f(r):
        raise Local("boom")

    with pytest.raises(StageFailure) as info:
        run([MapRowsStage("map(f)", fn=f)], [pa.table({"x": [1]})])
    back = pickle.loads(pickle.dumps(info.value))
    assert back.original is None and back.message == "boom" and back.type_name == "Local"


def test_skip_drops_failing_rows_and_counts_them(task_ctx):
    def f(b):
        if (b["x"] == 3).any():
            raise ValueError("three")
        return b

    out = run(
        [MapBatchesStage("mb", fn=f, batch_size=4, on_error=ErrorPolicy("skip"))],
        [pa.table({"x": range(8)})],
    )
    assert rows(out) == [0, 1, 2, 4, 5, 6, 7]
    out = run(
        [MapRowsStage("m", fn=lambda r: {"x": 1 // r["x"]}, on_error=ErrorPolicy("skip"))],
        [pa.table({"x": [0, 1, 0]})],
    )
    assert rows(out) == [1]
    assert current_task().counters["rows_skipped"] == 3


def test_dead_letter_writes_failing_rows_with_the_error(tmp_path, task_ctx):
    policy = ErrorPolicy("dead_letter", str(tmp_path / "dl"))
    out = run(
        [FilterStage("filter(f)", fn=lambda r: 1 // r["x"] >= 0, on_error=policy)],
        [pa.table({"x": [1, 0, 2]})],
    )
    assert rows(out) == [1, 2]
    (file,) = (tmp_path / "dl").iterdir()
    bad = pq.read_table(file)
    assert bad.column("x").to_pylist() == [0]
    assert bad.column("error").to_pylist() == [
        "ZeroDivisionError: integer division or modulo by zero"
    ]


def test_project_select_drop_rename_with_columns():
    table = pa.table({"a": [1, 2], "b": [3, 4], "c": [5, 6]})
    stage = ProjectStage(
        "p", drop=("c",), rename=(("a", "x"),), with_columns=(("s", pc.field("x") + pc.field("b")),)
    )
    assert stage.apply(table).to_pydict() == {"x": [1, 2], "b": [3, 4], "s": [4, 6]}
    stage = ProjectStage("p", exprs=(("b", pc.field("b")), ("d", pc.field("a") * 2)))
    assert stage.apply(table).to_pydict() == {"b": [3, 4], "d": [2, 4]}


def test_project_unknown_column_names_it_and_the_available_ones():
    table = pa.table({"a": [1], "b": [2]})
    with pytest.raises(
        PlanError, match=r"select_columns: unknown column 'zz'; available columns: a, b"
    ):
        ProjectStage("select_columns", select=("a", "zz")).apply(table)
    with pytest.raises(
        PlanError, match=r"with_column: unknown column 'q'; available columns: a, b"
    ):
        ProjectStage("with_column", with_columns=(("n", pc.field("q") + 1),)).apply(table)


def test_callable_class_is_built_once_per_actor():
    built = []

    class AddK:
        def __init__(self, k):
            built.append(k)
            self.k = k

        def __call__(self, b):
            return {"x": b["x"] + self.k}

    fn = MapTaskFn(
        (MapBatchesStage("mb", fn=AddK, is_class=True, fn_constructor_args=(5,), batch_size=None),),
        1 << 20,
    )
    state = ActorFactory(fn)()
    assert rows(state([pa.table({"x": [1]})], 0)) + rows(state([pa.table({"x": [2]})], 1)) == [6, 7]
    assert built == [5]


class _SlowInit:
    """A callable class whose constructor takes long enough for other threads
    to arrive while one binds it."""

    built: list[int] = []

    def __init__(self):
        time.sleep(0.05)
        _SlowInit.built.append(1)

    def __call__(self, b):
        return {"x": b["x"] * 2}


def test_tasks_starting_together_on_threads_bind_the_chain_once():
    # Threads of one process run tasks of one operator at once: the ones that
    # do not bind must wait for the binding, chain and meters both (a thread
    # that saw the chain bound before its meters failed on a None meter state).
    # The function arrives pickled, as in a worker.
    fn = pickle.loads(
        pickle.dumps(
            MapTaskFn(
                (MapBatchesStage("mb", fn=_SlowInit, is_class=True, batch_size=None),),
                1 << 20,
                "read_test",
            )
        )
    )
    _SlowInit.built.clear()
    out: dict[int, list] = {}
    errors: list[BaseException] = []

    def task(i):
        set_current_task(TaskContext())
        try:
            out[i] = rows(fn([pa.table({"x": [i]})], i))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=task, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert out == {0: [0], 1: [2], 2: [4], 3: [6]}
    assert _SlowInit.built == [1]


def test_read_errors_become_source_errors_naming_the_file():
    def read():
        raise OSError("disk on fire")
        yield

    task = ReadTask(read, BlockMetadata(input_files=("/data/a.parquet",)))
    with pytest.raises(
        SourceError, match=r"read_test: cannot read /data/a.parquet: OSError: disk on fire"
    ) as info:
        run([], [], read=task)
    assert info.value.path == "/data/a.parquet"


def test_cupy_batches_put_numeric_columns_on_the_device(monkeypatch):
    import sys
    import types

    class FakeDeviceArray:
        """Stands in for cupy.ndarray: has the CUDA interface and .get()."""

        __cuda_array_interface__ = {}

        def __init__(self, host):
            self.host = host

        def get(self):
            return self.host

    fake = types.ModuleType("cupy")
    fake.asarray = FakeDeviceArray
    monkeypatch.setitem(sys.modules, "cupy", fake)
    seen = {}

    def on_gpu(batch):
        seen.update({k: type(v).__name__ for k, v in batch.items()})
        return {"x": FakeDeviceArray(batch["x"].host * 2), "s": batch["s"]}

    table = pa.table({"x": [1, 2], "s": ["a", "b"]})
    out = run([MapBatchesStage("mb", fn=on_gpu, batch_format="cupy", batch_size=None)], [table])
    assert seen == {"x": "FakeDeviceArray", "s": "ndarray"}
    assert out[0].to_pydict() == {"x": [2, 4], "s": ["a", "b"]}


def reading(*tables):
    """A read task yielding ``tables``."""
    return ReadTask(lambda: iter(tables), BlockMetadata(input_files=("/data/a.parquet",)))


def test_read_task_outputs_of_one_read_block_merge_into_one_contiguous_block():
    """map_batches(batch_size=5) makes 2 outputs per 10-row read block: they leave
    the task as one single-chunk block per read block (one store object), not 2.
    Without a read, blocks keep the granularity the stages gave them."""
    double = MapBatchesStage("mb", fn=lambda b: {"x": b["x"] * 2}, batch_size=5)
    ten = (pa.table({"x": range(10)}), pa.table({"x": range(10, 20)}))
    out = run([double], [], read=reading(*ten))
    assert [(t.num_rows, t.column("x").num_chunks) for t in out] == [(10, 1), (10, 1)]
    assert rows(out) == [2 * i for i in range(20)]
    assert [t.num_rows for t in run([double], list(ten))] == [5, 5, 5, 5]
    # An expression filter joins small blocks before it runs (one call, not one
    # per block), so the small blocks of both read blocks come out as one.
    out = run([double, FilterStage("f", expr=pc.field("x") != 6)], [], read=reading(*ten))
    assert [(t.num_rows, t.column("x").num_chunks) for t in out] == [(19, 1)]
    assert rows(out) == [2 * i for i in range(20) if i != 3]
    # Merging stops at max_bytes: 16 rows of int64 per block at most.
    same = MapBatchesStage("mb", fn=lambda b: b, batch_size=4)
    out = run([same], [], max_bytes=128, read=reading(pa.table({"x": range(40)})))
    assert [t.num_rows for t in out] == [16, 16, 8]
    assert rows(out) == list(range(40))


def test_map_rows_over_a_big_block_is_one_block_with_promoted_types():
    """Rows become dicts slice by slice; the slices join into one output block
    per input block, a column int in one slice and float in another is float."""
    n = 40_000

    def f(r):
        return {"x": r["x"], "y": r["x"] if r["x"] < 20_000 else r["x"] + 0.5}

    out = run([MapRowsStage("map(f)", fn=f)], [pa.table({"x": range(n)})])
    assert [t.num_rows for t in out] == [n]
    assert out[0].schema.field("y").type == pa.float64()
    assert rows(out, "y") == [x if x < 20_000 else x + 0.5 for x in range(n)]
    flat = run([FlatMapStage("flat_map(g)", fn=lambda r: [r] * (r["x"] % 2))], out)
    assert rows(flat) == list(range(1, n, 2))
