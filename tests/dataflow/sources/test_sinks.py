from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataflow.sources.csv import CSVDatasource
from dataflow.sources.json import JSONDatasource
from dataflow.sources.npy import NumpyDatasource
from dataflow.sources.parquet import ParquetDatasource
from dataflow.sources.sinks import CSVDatasink, JSONDatasink, NumpyDatasink, ParquetDatasink


def blocks(n_blocks, rows=100, parts=None):
    for i in range(n_blocks):
        ids = np.arange(i * rows, (i + 1) * rows)
        cols = {"id": ids, "v": ids * 0.5}
        if parts:
            cols["p"] = ids % parts
        yield pa.table(cols)


def run_write(sink, tasks):
    """Drive the Datasink protocol as the executor does; returns the manifest."""
    sink.on_write_start()
    try:
        results = [sink.write(task_blocks, i) for i, task_blocks in enumerate(tasks)]
    except BaseException as e:
        sink.on_write_failed(e)
        raise
    return sink.on_write_complete(results)


def snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_parquet_write_commits_files_and_manifest(tmp_path, read_all):
    out = tmp_path / "out"
    manifest = run_write(ParquetDatasink(str(out)), [blocks(3), blocks(2)])
    names = sorted(os.listdir(out))
    assert names == ["_SUCCESS", "part-00000-0000.parquet", "part-00001-0000.parquet"]
    on_disk = json.loads((out / "_SUCCESS").read_text())
    assert on_disk == manifest
    assert on_disk["files"] == [
        {
            "path": "part-00000-0000.parquet",
            "num_rows": 300,
            "num_bytes": os.path.getsize(out / "part-00000-0000.parquet"),
        },
        {
            "path": "part-00001-0000.parquet",
            "num_rows": 200,
            "num_bytes": os.path.getsize(out / "part-00001-0000.parquet"),
        },
    ]
    assert on_disk["num_rows"] == 500
    back = read_all(ParquetDatasource(str(out)))
    ids = sorted(back.column("id").to_pylist())
    assert ids == sorted(list(range(300)) + list(range(200)))
    assert pq.ParquetFile(out / "part-00000-0000.parquet").metadata.num_rows == 300


def test_partitioned_write_one_file_per_partition_and_size_rollover(tmp_path, read_all):
    out = tmp_path / "out"
    manifest = run_write(ParquetDatasink(str(out), partition_cols=["p"]), [blocks(50, parts=20)])
    by_partition = {}
    for f in manifest["files"]:
        by_partition.setdefault(f["path"].split("/")[0], []).append(f["path"])
    assert sorted(by_partition) == sorted(f"p={i}" for i in range(20))
    assert all(len(files) == 1 for files in by_partition.values())  # 50 blocks, 1 file each
    back = read_all(ParquetDatasource(str(out)))
    assert back.schema.names == ["id", "v", "p"]
    assert sorted(back.column("id").to_pylist()) == list(range(5000))
    assert all(r["id"] % 20 == r["p"] for r in back.to_pylist())

    # A byte target: each partition (100 rows in 20 writes) rolls over to a
    # new file once the current one passes 1.5 KB, never by row count.
    out2 = tmp_path / "out2"
    target = 1500
    manifest = run_write(
        ParquetDatasink(str(out2), partition_cols=["p"], target_file_size=target),
        [blocks(20, parts=20)],
    )
    per_part = {}
    for f in manifest["files"]:
        per_part.setdefault(f["path"].split("/")[0], []).append(f)
    for files in per_part.values():
        assert all(f["num_bytes"] >= target for f in files[:-1])
        assert sum(f["num_rows"] for f in files) == 100
        assert 1 < len(files) <= 20
    assert sorted(read_all(ParquetDatasource(str(out2))).column("id").to_pylist()) == list(
        range(2000)
    )


def failing_blocks(fail_at):
    for i, b in enumerate(blocks(10, parts=4)):
        if i == fail_at:
            raise RuntimeError("udf failed on block 7")
        yield b


def test_failure_mid_write_leaves_destination_unchanged(tmp_path):
    out = tmp_path / "out"
    run_write(ParquetDatasink(str(out)), [blocks(1)])
    before = snapshot(out)
    for mode in ("overwrite", "append"):
        with pytest.raises(RuntimeError, match="block 7"):
            run_write(ParquetDatasink(str(out), mode=mode), [blocks(3), failing_blocks(6)])
        assert snapshot(out) == before

    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="block 7"):
        run_write(ParquetDatasink(str(fresh), partition_cols=["p"]), [failing_blocks(6)])
    assert not fresh.exists()


def test_modes_error_overwrite_append(tmp_path, read_all):
    out = tmp_path / "out"
    run_write(ParquetDatasink(str(out)), [blocks(1)])
    with pytest.raises(FileExistsError, match="mode='overwrite'"):
        ParquetDatasink(str(out)).on_write_start()
    with pytest.raises(ValueError, match="mode must be one of"):
        ParquetDatasink(str(out), mode="replace")

    run_write(ParquetDatasink(str(out), mode="overwrite"), [blocks(2)])
    assert sorted(os.listdir(out)) == ["_SUCCESS", "part-00000-0000.parquet"]
    assert read_all(ParquetDatasource(str(out))).num_rows == 200

    sink = ParquetDatasink(str(out), mode="append")
    manifest = run_write(sink, [blocks(1)])
    assert sorted(os.listdir(out)) == sorted(
        ["_SUCCESS", "part-00000-0000.parquet", f"part-{sink.write_id}-00000-0000.parquet"]
    )
    assert [f["num_rows"] for f in manifest["files"]] == [200, 100]
    assert manifest["num_rows"] == 300
    assert read_all(ParquetDatasource(str(out))).num_rows == 300


def test_csv_json_numpy_sinks_round_trip(tmp_path, read_all):
    data = [pa.table({"id": [1, 2], "s": ["a", None]}), pa.table({"id": [3], "s": ["c"]})]
    run_write(CSVDatasink(str(tmp_path / "csv")), [iter(data)])
    # CSV has no null: pyarrow.csv reads an empty field back as "".
    assert read_all(CSVDatasource(str(tmp_path / "csv"))).to_pylist() == [
        {"id": 1, "s": "a"},
        {"id": 2, "s": ""},
        {"id": 3, "s": "c"},
    ]
    run_write(JSONDatasink(str(tmp_path / "json"), partition_cols=["id"]), [iter(data)])
    assert sorted(os.listdir(tmp_path / "json")) == ["_SUCCESS", "id=1", "id=2", "id=3"]
    back = read_all(JSONDatasource(str(tmp_path / "json"))).sort_by("id")
    assert back.to_pylist() == [{"s": "a", "id": 1}, {"s": None, "id": 2}, {"s": "c", "id": 3}]

    arrays = [
        pa.table(
            {"x": pa.FixedShapeTensorArray.from_numpy_ndarray(np.arange(12.0).reshape(3, 2, 2))}
        ),
        pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(np.ones((1, 2, 2)))}),
    ]
    run_write(NumpyDatasink(str(tmp_path / "npy"), column="x"), [iter(arrays)])
    (name,) = [n for n in os.listdir(tmp_path / "npy") if n.endswith(".npy")]
    saved = np.load(tmp_path / "npy" / name)
    assert saved.shape == (4, 2, 2)
    assert (
        saved.tolist()
        == np.concatenate([np.arange(12.0).reshape(3, 2, 2), np.ones((1, 2, 2))]).tolist()
    )
    assert read_all(NumpyDatasource(str(tmp_path / "npy"))).num_rows == 4

    with pytest.raises(ValueError, match="pass column= to pick one"):
        run_write(NumpyDatasink(str(tmp_path / "npy2")), [iter(data)])
    assert not (tmp_path / "npy2").exists()


def test_partition_values_with_nulls_and_special_characters(tmp_path, read_all):
    data = pa.table({"k": ["a/b", None, "c d", "a/b"], "v": [1, 2, 3, 4]})
    run_write(ParquetDatasink(str(tmp_path / "o"), partition_cols=["k"]), [iter([data])])
    assert sorted(os.listdir(tmp_path / "o")) == [
        "_SUCCESS",
        "k=__HIVE_DEFAULT_PARTITION__",
        "k=a%2Fb",
        "k=c%20d",
    ]
    back = read_all(ParquetDatasource(str(tmp_path / "o"))).sort_by("v")
    assert back.to_pylist() == [
        {"v": 1, "k": "a/b"},
        {"v": 2, "k": None},
        {"v": 3, "k": "c d"},
        {"v": 4, "k": "a/b"},
    ]
    with pytest.raises(KeyError, match=r"partition_cols \['nope'\]"):
        run_write(ParquetDatasink(str(tmp_path / "o2"), partition_cols=["nope"]), [iter([data])])


def test_parquet_small_blocks_fill_whole_row_groups(tmp_path, read_all):
    """Each ParquetWriter.write_table call ends a row group: 100-row blocks are
    buffered into one row group by default, into exact ``row_group_size`` ones."""
    run_write(ParquetDatasink(str(tmp_path / "a")), [blocks(10)])
    md = pq.ParquetFile(tmp_path / "a" / "part-00000-0000.parquet").metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [1000]
    run_write(ParquetDatasink(str(tmp_path / "b"), row_group_size=250), [blocks(9)])
    md = pq.ParquetFile(tmp_path / "b" / "part-00000-0000.parquet").metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [250, 250, 250, 150]
    got = read_all(ParquetDatasource(str(tmp_path / "b")))
    assert got.column("id").to_pylist() == list(range(900))


def _dictionary_encoded(path) -> dict[str, bool]:
    md = pq.ParquetFile(path).metadata
    group = md.row_group(0)
    return {
        group.column(i).path_in_schema: group.column(i).has_dictionary_page
        for i in range(md.num_columns)
    }


def test_parquet_dictionary_encodes_only_repeating_columns(tmp_path, read_all):
    n = 20_000
    rng = np.random.default_rng(0)
    table = pa.table(
        {
            "id": np.arange(n),
            "x": rng.normal(size=n),
            "cat": pa.array(["a", "b", "c", None] * (n // 4)),
            "small": rng.integers(0, 7, n).astype(np.int32),
        }
    )
    run_write(ParquetDatasink(str(tmp_path / "auto")), [[table]])
    file = tmp_path / "auto" / "part-00000-0000.parquet"
    assert _dictionary_encoded(file) == {"id": False, "x": False, "cat": True, "small": True}
    assert read_all(ParquetDatasource(str(file))).equals(table)
    # An explicit choice wins.
    run_write(ParquetDatasink(str(tmp_path / "all"), use_dictionary=True), [[table]])
    forced = _dictionary_encoded(tmp_path / "all" / "part-00000-0000.parquet")
    assert forced == dict.fromkeys(["id", "x", "cat", "small"], True)
