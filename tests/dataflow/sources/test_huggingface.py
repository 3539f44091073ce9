"""from_huggingface with datasets built in memory and saved with save_to_disk (image
and text columns): exact rows, zero-copy slices, small tasks for memory-mapped
data, streamed IterableDatasets, pushdown and errors.

``datasets`` cannot be installed beside the project's pinned packages (its hub
client needs a newer click), so these tests run in ``.ci/run-frameworks``'s own
virtual environment and are skipped elsewhere."""

from __future__ import annotations

import io
import os
import shutil

import cloudpickle
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

import dataflow as df
from dataflow.errors import SourceError
from dataflow.sources.huggingface import HuggingFaceDatasource

if os.environ.get("DATAFLOW_REQUIRE_DATASETS"):  # .ci/run-frameworks: never skip there
    import datasets
else:
    datasets = pytest.importorskip("datasets")


def _png(seed: int) -> tuple[np.ndarray, bytes]:
    arr = np.random.default_rng(seed).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return arr, buf.getvalue()


N = 300


@pytest.fixture(scope="module")
def hf_dataset():
    pngs = [_png(i) for i in range(N)]
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["neg", "pos"]),
            "image": datasets.Image(),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "text": [f"review number {i}" for i in range(N)],
            "label": [i % 2 for i in range(N)],
            "image": [{"bytes": b, "path": None} for _, b in pngs],
        },
        features=features,
    )
    return ds, [a for a, _ in pngs]


@pytest.fixture(autouse=True)
def inline_backend():
    df.init(backend="inline")
    yield
    df.shutdown()


def _want(ds) -> list[dict]:
    return ds.with_format("arrow")[:].to_pylist()


def test_in_memory_dataset_rows_are_exact_and_zero_copy(hf_dataset):
    ds, arrays = hf_dataset
    out = df.from_huggingface(ds)
    rows = out.take_all()
    assert rows == _want(ds)
    assert [r["text"] for r in rows] == [f"review number {i}" for i in range(N)]
    assert [r["label"] for r in rows] == [i % 2 for i in range(N)]
    decoded = [np.asarray(Image.open(io.BytesIO(r["image"]["bytes"]))) for r in rows[:3]]
    assert all(np.array_equal(d, arrays[i]) for i, d in enumerate(decoded))
    assert out.count() == N and out.schema().field("image").type == pa.struct(
        [("bytes", pa.binary()), ("path", pa.string())]
    )
    # A task's block views the dataset's own Arrow buffers: no copy, no row conversion.
    (task, *_) = HuggingFaceDatasource(ds).get_read_tasks(4)
    (block,) = list(task())
    source = ds.data.table.column("text").chunk(0).buffers()[2].address
    assert block.column("text").chunk(0).buffers()[2].address == source


def test_saved_dataset_is_read_memory_mapped_with_small_tasks(hf_dataset, tmp_path):
    ds, _ = hf_dataset
    ds.save_to_disk(str(tmp_path / "saved"))
    loaded = datasets.load_from_disk(str(tmp_path / "saved"))
    tasks = HuggingFaceDatasource(loaded).get_read_tasks(3)
    assert [t.metadata.num_rows for t in tasks] == [100, 100, 100]
    assert all(len(cloudpickle.dumps(t)) < 20_000 for t in tasks)  # file names, not rows
    assert loaded.data.nbytes > 50_000
    rows = [
        r for t in tasks for b in cloudpickle.loads(cloudpickle.dumps(t))() for r in b.to_pylist()
    ]
    assert rows == _want(ds)
    df.shutdown()
    df.init(backend="local", num_cpus=2)  # worker processes map the cache files themselves
    got = df.from_huggingface(loaded).map_batches(lambda b: b, batch_format="pyarrow").take_all()
    assert sorted(got, key=lambda r: r["text"]) == sorted(_want(ds), key=lambda r: r["text"])

    shuffled = loaded.shuffle(seed=0).select(range(0, N, 2))  # an indices mapping
    got = df.from_huggingface(shuffled, override_num_blocks=4).take_all()
    assert len(got) == N // 2
    assert sorted(got, key=lambda r: r["text"]) == sorted(_want(shuffled), key=lambda r: r["text"])


def test_iterable_dataset_streams_by_shard_with_pushdown(hf_dataset, capsys):
    ds, _ = hf_dataset
    it = ds.to_iterable_dataset(num_shards=4)
    src = HuggingFaceDatasource(it)
    assert len(src.get_read_tasks(8)) == 4
    rows = df.from_huggingface(it).take_all()
    assert sorted(r["text"] for r in rows) == sorted(r["text"] for r in _want(ds))
    q = df.from_huggingface(it).select_columns(["label"]).limit(5)
    q.explain()
    text = capsys.readouterr().out
    assert "read_huggingface columns=[label] limit=5" in text
    assert "iterable, streamed by shards; select_columns(label) on the dataset; take(5)" in text
    assert len(q.take_all()) == 5 and set(q.take_all()[0]) == {"label"}
    head = df.from_huggingface(ds).select_columns(["text"]).limit(2).take_all()
    assert head == [{"text": "review number 0"}, {"text": "review number 1"}]


def test_errors(hf_dataset, tmp_path):
    ds, _ = hf_dataset
    with pytest.raises(df.PlanError, match="DatasetDict with splits \\['train', 'test'\\]"):
        df.from_huggingface(datasets.DatasetDict({"train": ds, "test": ds}))
    with pytest.raises(df.PlanError, match="expected a datasets.Dataset"):
        df.from_huggingface({"text": ["a"]})
    ds.save_to_disk(str(tmp_path / "gone"))
    loaded = datasets.load_from_disk(str(tmp_path / "gone"))
    (task,) = HuggingFaceDatasource(loaded).get_read_tasks(1)
    moved = cloudpickle.dumps(task)
    shutil.rmtree(tmp_path / "gone")
    with pytest.raises(SourceError, match="a cache file of") as info:
        list(cloudpickle.loads(moved)())
    assert str(tmp_path / "gone") in info.value.path
