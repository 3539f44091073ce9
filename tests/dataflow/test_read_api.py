"""Constructors: the blocks they plan (no execution) and what they read back."""

from __future__ import annotations

import cloudpickle
import numpy as np
import pandas as pd
import pyarrow as pa

import dataflow as df
from dataflow.plan.logical import InputData, Read
from dataflow.sources.range import RangeDatasource


def blocks(ds: df.Dataset) -> tuple[pa.Table, ...]:
    assert isinstance(ds._plan, InputData)
    return ds._plan.blocks


def test_from_items_dicts_values_and_blocks():
    ds = df.from_items([{"a": i, "s": str(i)} for i in range(10)], override_num_blocks=3)
    parts = blocks(ds)
    assert [t.num_rows for t in parts] == [3, 3, 4]
    assert pa.concat_tables(parts).to_pylist() == [{"a": i, "s": str(i)} for i in range(10)]
    values = df.from_items([1.5, 2.5])
    assert pa.concat_tables(blocks(values)).to_pylist() == [{"item": 1.5}, {"item": 2.5}]
    assert blocks(df.from_items([])) == ()


def test_from_items_default_blocks_never_exceed_rows():
    assert len(blocks(df.from_items([{"a": 1}]))) == 1
    assert sum(t.num_rows for t in blocks(df.from_items([{"a": i} for i in range(100)]))) == 100


def test_from_pandas_arrow_numpy():
    frame = pd.DataFrame({"a": [1, 2, 3]}, index=[7, 8, 9])
    (t,) = blocks(df.from_pandas(frame))
    assert t.to_pylist() == [{"a": 1}, {"a": 2}, {"a": 3}]  # index dropped
    assert len(blocks(df.from_pandas([frame, frame]))) == 2
    batch = pa.record_batch({"x": [1, 2]})
    assert [b.num_rows for b in blocks(df.from_arrow([pa.table({"x": [0]}), batch]))] == [1, 2]
    (tensor,) = blocks(df.from_numpy(np.arange(12).reshape(3, 2, 2)))
    assert tensor.column_names == ["data"]
    assert tensor.column("data").type == pa.fixed_shape_tensor(pa.int64(), (2, 2))
    flat = blocks(df.from_numpy([np.arange(3), np.arange(2)]))
    assert [b.column("data").to_pylist() for b in flat] == [[0, 1, 2], [0, 1]]


def test_range_plans_a_read_with_schema_and_count():
    ds = df.range(1000, override_num_blocks=4)
    read = ds._plan
    assert isinstance(read, Read) and read.parallelism == 4
    src = read.datasource
    assert src.schema() == pa.schema([("id", pa.int64())]) and src.num_rows() == 1000
    tasks = src.get_read_tasks(4)
    assert [t.metadata.num_rows for t in tasks] == [250] * 4
    ids = [
        i
        for t in tasks
        for b in cloudpickle.loads(cloudpickle.dumps(t))()
        for i in b["id"].to_pylist()
    ]
    assert ids == list(range(1000))


def test_range_pushdowns_in_tasks():
    src = RangeDatasource(100)
    tasks = src.get_read_tasks(
        3, filter=(df.col("id") % 10 == 3).to_arrow(), limit=2, columns=["id"]
    )
    assert all(t.metadata.num_rows is None for t in tasks)  # unknown after a filter
    got = [[b["id"].to_pylist() for b in t()] for t in tasks]
    assert got == [[[3, 13]], [[43, 53]], [[73, 83]]]
    empty = [b for t in src.get_read_tasks(2, columns=[]) for b in t()]
    assert [b.num_columns for b in empty] == [0, 0] and sum(b.num_rows for b in empty) == 100


def test_range_splits_large_tasks_into_bounded_blocks(monkeypatch):
    monkeypatch.setattr(df.DataContext.get_current(), "target_max_block_size", 8 * 10)
    (task,) = RangeDatasource(35).get_read_tasks(1)
    assert [b.num_rows for b in task()] == [10, 10, 10, 5]


def test_range_tensor_rows():
    src = RangeDatasource(4, (2,))
    (task,) = src.get_read_tasks(1)
    (block,) = list(task())
    arr = block.column("data").combine_chunks().to_numpy_ndarray()
    np.testing.assert_array_equal(arr, [[0, 0], [1, 1], [2, 2], [3, 3]])
    assert src.get_name() == "range_tensor"


def test_range_parallelism_and_concurrency_as_ray():
    import pytest

    from dataflow.errors import PlanError

    ds = df.range(10, parallelism=3, concurrency=2)
    assert (ds._plan.parallelism, ds._plan.compute.max_size) == (3, 2)
    assert [t.metadata.num_rows for t in ds._plan.datasource.get_read_tasks(3)] == [4, 3, 3]
    assert ds.num_blocks() == 3 and ds.take_all() == [{"id": i} for i in range(10)]
    assert df.range_tensor(6, shape=(2,), parallelism=2)._plan.parallelism == 2
    assert df.range(5, override_num_blocks=5)._plan.parallelism == 5
    with pytest.raises(PlanError, match="range: concurrency must be a positive int"):
        df.range(5, concurrency=0)
    with pytest.raises(PlanError, match="parallelism must be -1"):
        df.range_tensor(5, parallelism=0)


def test_from_items_parallelism_is_the_old_name_of_override_num_blocks():
    parts = blocks(df.from_items(list(range(10)), parallelism=4))
    assert [t.num_rows for t in parts] == [2, 3, 2, 3]


def test_from_pandas_and_from_arrow_override_num_blocks_recut_all_rows():
    frames = [pd.DataFrame({"a": [1, 2, 3]}), pd.DataFrame({"a": [4]})]
    parts = blocks(df.from_pandas(frames, override_num_blocks=2))
    assert [t.column("a").to_pylist() for t in parts] == [[1, 2], [3, 4]]
    assert len(blocks(df.from_pandas(frames))) == 2
    table = pa.table({"x": [1, 2, 3]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    parts = blocks(df.from_arrow([sink.getvalue().to_pybytes(), table], override_num_blocks=3))
    assert [t.column("x").to_pylist() for t in parts] == [[1, 2], [3, 1], [2, 3]]
