from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from dataflow.context import DataContext
from dataflow.errors import SourceError
from dataflow.sources.csv import CSVDatasource
from dataflow.sources.images import ImageDatasource
from dataflow.sources.json import JSONDatasource
from dataflow.sources.npy import NumpyDatasource
from dataflow.sources.text import BinaryDatasource, TextDatasource


def test_csv_directory_glob_gzip_and_options(tmp_path, read_all):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_text("x,y\n1,a\n2,b\n")
    with gzip.open(tmp_path / "d" / "b.csv.gz", "wt") as f:
        f.write("x,y\n3,c\n")
    (tmp_path / "d" / "_ignored.csv").write_text("x,y\n9,z\n")
    out = read_all(CSVDatasource(str(tmp_path / "d")))
    assert out.to_pydict() == {"x": [1, 2, 3], "y": ["a", "b", "c"]}

    (tmp_path / "semi.csv").write_text("x;y\n1;2\n")
    src = CSVDatasource(
        str(tmp_path / "semi*.csv"),
        parse_options=pacsv.ParseOptions(delimiter=";"),
        convert_options=pacsv.ConvertOptions(column_types={"y": pa.float64()}),
        include_paths=True,
    )
    out = read_all(src)
    assert out.to_pylist() == [{"x": 1, "y": 2.0, "path": str(tmp_path / "semi.csv")}]


def test_csv_type_widening_across_files_and_bad_file(tmp_path, read_all):
    (tmp_path / "1.csv").write_text("v\n1\n")
    (tmp_path / "2.csv").write_text("v\n2.5\n")
    assert read_all(CSVDatasource(str(tmp_path))).column("v").to_pylist() == [1.0, 2.5]

    (tmp_path / "3.csv").write_text("v\n1,2\n")
    with pytest.raises(SourceError, match="read_csv: cannot read") as info:
        read_all(CSVDatasource(str(tmp_path)))
    assert info.value.path == str(tmp_path / "3.csv")


def test_json_lines_and_arrays(tmp_path, read_all):
    (tmp_path / "a.jsonl").write_text('{"k": 1, "s": "x"}\n{"k": 2, "s": "y"}\n')
    (tmp_path / "b.json").write_text(json.dumps([{"k": 3, "s": "z"}, {"k": 4, "s": None}]))
    out = read_all(JSONDatasource(str(tmp_path)))
    assert out.to_pylist() == [
        {"k": 1, "s": "x"},
        {"k": 2, "s": "y"},
        {"k": 3, "s": "z"},
        {"k": 4, "s": None},
    ]

    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(SourceError, match="array file must hold objects") as info:
        read_all(JSONDatasource(str(tmp_path / "c.json")))
    assert info.value.path == str(tmp_path / "c.json")


def test_text_lines_and_binary_files(tmp_path, read_all):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_bytes(b"one\r\ntwo\n\nthree")
    (tmp_path / "t" / "b.txt").write_text("four\n")
    assert read_all(TextDatasource(str(tmp_path / "t"))).to_pydict() == {
        "text": ["one", "two", "three", "four"]
    }
    kept = read_all(TextDatasource(str(tmp_path / "t" / "a.txt"), drop_empty_lines=False))
    assert kept.column("text").to_pylist() == ["one", "two", "", "three"]

    blobs = read_all(BinaryDatasource(str(tmp_path / "t"), include_paths=True))
    assert blobs.to_pylist() == [
        {"bytes": b"one\r\ntwo\n\nthree", "path": str(tmp_path / "t" / "a.txt")},
        {"bytes": b"four\n", "path": str(tmp_path / "t" / "b.txt")},
    ]


def test_numpy_vectors_and_tensors(tmp_path, read_all):
    np.save(tmp_path / "a.npy", np.arange(6).reshape(3, 2))
    np.save(tmp_path / "b.npy", np.arange(6, 10).reshape(2, 2))
    (tmp_path / "notes.txt").write_text("skipped: not .npy")
    out = read_all(NumpyDatasource(str(tmp_path)))
    assert isinstance(out.schema.field("data").type, pa.FixedShapeTensorType)
    data = np.concatenate([c.to_numpy_ndarray() for c in out.column("data").chunks])
    assert data.tolist() == np.arange(10).reshape(5, 2).tolist()

    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SourceError) as info:
        read_all(NumpyDatasource(str(tmp_path / "obj.npy")))
    assert info.value.path == str(tmp_path / "obj.npy")


def test_images_resize_and_mode(tmp_path, read_all):
    from PIL import Image

    Image.fromarray(np.full((4, 6, 3), 200, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 8), 50, np.uint8)).save(tmp_path / "b.png")
    out = read_all(ImageDatasource(str(tmp_path), size=(2, 3), mode="RGB"))
    images = np.concatenate([c.to_numpy_ndarray() for c in out.column("image").chunks])
    assert images.shape == (2, 2, 3, 3) and images.dtype == np.uint8
    assert images[0].tolist() == np.full((2, 3, 3), 200).tolist()
    assert images[1].tolist() == np.full((2, 3, 3), 50).tolist()

    with pytest.raises(SourceError, match="incompatible with"):
        read_all(ImageDatasource(str(tmp_path)))  # 4x6x3 and 8x8x1 cannot share a block
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(SourceError) as info:
        read_all(ImageDatasource(str(tmp_path / "c.png")))
    assert info.value.path == str(tmp_path / "c.png")
    with pytest.raises(ValueError, match="size must be"):
        ImageDatasource(str(tmp_path), size=(0, 3))


def test_many_small_files_group_into_parallelism_tasks(tmp_path, monkeypatch, run_tasks):
    monkeypatch.setattr(DataContext.get_current(), "target_min_block_size", 1)
    for i in range(30):
        (tmp_path / f"{i:02d}.txt").write_text(f"line {i}\n")
    tasks = run_tasks(TextDatasource(str(tmp_path)), 3)
    assert len(tasks) == 3
    assert [len(t) for t in tasks] == [1, 1, 1]  # one coalesced block per task
    lines = [s for t in tasks for b in t for s in b.column("text").to_pylist()]
    assert lines == [f"line {i}" for i in range(30)]


def test_missing_paths_and_bad_arguments(tmp_path):
    with pytest.raises(SourceError, match="read_csv: no such file") as info:
        CSVDatasource(str(tmp_path / "nope.csv")).get_read_tasks(1)
    assert info.value.path == str(tmp_path / "nope.csv")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(SourceError, match=r"no files with extension \.npy"):
        NumpyDatasource(str(tmp_path)).get_read_tasks(1)
    with pytest.raises(TypeError, match="filesystem= must be an fsspec or pyarrow filesystem"):
        TextDatasource(str(tmp_path), filesystem="local")
    with pytest.raises(ValueError, match="no paths given"):
        TextDatasource([])


def test_a_limited_read_task_stops_opening_files_even_with_a_thread_pool(tmp_path, monkeypatch):
    from dataflow.sources import file_based

    for i in range(6):
        (tmp_path / f"part-{i}.txt").write_text("".join(f"{i}-{j}\n" for j in range(10)))
    monkeypatch.setattr(file_based, "LOCAL_TASK_THREADS", 4)  # as a remote filesystem reads
    opened: list[str] = []
    real = TextDatasource.read_file

    def spy(self, fs, path):
        opened.append(path.rsplit("/", 1)[-1])
        yield from real(self, fs, path)

    monkeypatch.setattr(TextDatasource, "read_file", spy)
    src = TextDatasource(str(tmp_path)).with_pushdown(limit=15)
    blocks = list(file_based._read_files(src, src.files(), pa.schema([]), 1 << 20))
    assert [t for b in blocks for t in b.column("text").to_pylist()] == [
        *(f"0-{j}" for j in range(10)),
        *(f"1-{j}" for j in range(5)),
    ]
    assert opened == ["part-0.txt", "part-1.txt"]
    opened.clear()
    src = TextDatasource(str(tmp_path))  # no limit: the pool reads every file
    assert (
        sum(b.num_rows for b in file_based._read_files(src, src.files(), pa.schema([]), 1 << 20))
        == 60
    )
    assert sorted(opened) == [f"part-{i}.txt" for i in range(6)]
