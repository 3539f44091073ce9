"""from_torch, from_daft / to_daft and to_random_access_dataset (issue 20)."""

from __future__ import annotations

import pyarrow as pa
import pytest

import dataflow as df
from dataflow.errors import PlanError


@pytest.fixture(autouse=True)
def _inline():
    df.init("inline", num_cpus=2)
    yield
    df.shutdown()


def test_from_torch_map_style_reads_index_ranges_in_parallel_tasks():
    torch = pytest.importorskip("torch")
    images = torch.arange(100 * 4, dtype=torch.float32).reshape(100, 2, 2)
    labels = torch.arange(100) % 7
    ds = df.from_torch(torch.utils.data.TensorDataset(images, labels))
    assert ds.count() == 100
    assert ds.schema().names == ["item_0", "item_1"]
    rows = ds.take_all()
    assert [r["item_1"] for r in rows] == [i % 7 for i in range(100)]
    assert rows[3]["item_0"].tolist() == [[12.0, 13.0], [14.0, 15.0]]
    tasks = df.from_torch(list(range(100)))._plan.datasource.get_read_tasks(4)
    assert [t.metadata.num_rows for t in tasks] == [25, 25, 25, 25]


def test_from_torch_iterable_dataset_and_single_values_and_dicts():
    torch = pytest.importorskip("torch")

    class Counting(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(torch.tensor(float(i)) for i in range(70))

    assert df.from_torch(Counting()).take_all() == [{"item": float(i)} for i in range(70)]
    dicts = [{"x": torch.tensor([i, i]), "y": i} for i in range(3)]
    got = df.from_torch(dicts).take_all()
    assert [(r["x"].tolist(), r["y"]) for r in got] == [([i, i], i) for i in range(3)]
    with pytest.raises(PlanError, match="from_torch: expected a torch.utils.data.Dataset"):
        df.from_torch(42)


def test_daft_round_trip_keeps_rows_and_types():
    daft = pytest.importorskip("daft")
    src = df.from_arrow(
        [pa.table({"a": [1, 2], "s": ["x", "y"]}), pa.table({"a": [3], "s": [None]})]
    )
    frame = src.to_daft()
    assert isinstance(frame, daft.DataFrame)
    assert frame.to_pydict() == {"a": [1, 2, 3], "s": ["x", "y", None]}
    back = df.from_daft(frame.where(daft.col("a") > 1))
    assert back.take_all() == [{"a": 2, "s": "y"}, {"a": 3, "s": None}]
    assert back.schema().field("a").type == pa.int64()
    assert pa.types.is_large_string(back.schema().field("s").type)
    empty = df.range(3).filter(expr="id > 5").to_daft()
    assert empty.to_pydict() == {"id": []}
    with pytest.raises(PlanError, match="from_daft: expected a daft.DataFrame, got dict"):
        df.from_daft({"a": [1]})


def test_random_access_dataset_gets_and_multigets_by_key():
    rows = [{"k": (i * 37) % 101, "v": f"v{i}"} for i in range(101)]
    rad = df.from_items(rows, override_num_blocks=5).to_random_access_dataset("k", num_workers=2)
    expected = {r["k"]: r for r in rows}
    assert rad.multiget([5, 100, 0, 500, -1]) == [
        expected[5],
        expected[100],
        expected[0],
        None,
        None,
    ]
    assert [rad.get_async(k).result() for k in (17, 18)] == [expected[17], expected[18]]
    assert "101 rows" in rad.stats() and "7 keys looked up" in rad.stats()
    rad.close()
    strings = df.from_items([{"k": "b", "n": 2}, {"k": "a", "n": 1}]).to_random_access_dataset("k")
    assert strings.multiget(["a", "zz", "b"]) == [{"k": "a", "n": 1}, None, {"k": "b", "n": 2}]
    with pytest.raises(PlanError, match="multiget: keys .* do not compare with key column 'k'"):
        strings.multiget([1])
    with pytest.raises(PlanError, match="to_random_access_dataset: no column 'nope'"):
        df.range(3).to_random_access_dataset("nope")
    with pytest.raises(PlanError, match="num_workers must be a positive int"):
        df.range(3).to_random_access_dataset("id", num_workers=0)


def test_dask_round_trip_one_task_per_partition():
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    frame = dd.from_pandas(pd.DataFrame({"x": range(10), "y": [i * 0.5 for i in range(10)]}), 3)
    ds = df.from_dask(frame)
    assert ds.schema().names == ["x", "y"]
    assert ds.num_blocks() == 3
    assert ds.take_all() == [{"x": i, "y": i * 0.5} for i in range(10)]
    back = df.range(10, override_num_blocks=4).to_dask()
    assert back.npartitions == 4
    assert back.compute()["id"].tolist() == list(range(10))
    assert df.range(3).filter(expr="id > 5").to_dask().compute().columns.tolist() == ["id"]
    with pytest.raises(PlanError, match="from_dask: expected a dask.dataframe.DataFrame, got list"):
        df.from_dask([1])
