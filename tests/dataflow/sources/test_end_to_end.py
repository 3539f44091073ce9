"""read_* and write_* through the Dataset API (inline backend: in-process, fast)."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import dataflow as df
from dataflow import read_api
from dataflow.errors import SourceError, UserCodeError
from dataflow.expressions import col
from dataflow.plan.logical import Write
from dataflow.plan.optimizer import optimize
from dataflow.sources.sinks import ParquetDatasink


@pytest.fixture(autouse=True)
def inline_backend():
    df.init(backend="inline")
    yield
    df.shutdown()


@pytest.fixture
def parquet_dir(tmp_path):
    for i in range(4):
        ids = np.arange(i * 1000, (i + 1) * 1000)
        pq.write_table(
            pa.table({"a": ids, "b": ids % 7}), tmp_path / f"f{i}.parquet", row_group_size=250
        )
    return tmp_path


def test_read_parquet_filter_columns_count_schema(parquet_dir):
    ds = read_api.read_parquet(str(parquet_dir), columns=["b"], filter=col("a") >= 3995)
    assert ds.take_all() == [{"b": i % 7} for i in range(3995, 4000)]
    ds = read_api.read_parquet(str(parquet_dir), filter="a < 3 or a >= 3998")
    assert ds.take_all() == [{"a": i, "b": i % 7} for i in (0, 1, 2, 3998, 3999)]
    assert read_api.read_parquet(str(parquet_dir)).count() == 4000
    assert read_api.read_parquet(str(parquet_dir)).schema() == pa.schema(
        [("a", pa.int64()), ("b", pa.int64())]
    )
    with pytest.raises(df.PlanError, match="filter must be a dataflow expression"):
        read_api.read_parquet(str(parquet_dir), filter=lambda r: True)


def test_write_then_read_partitioned(parquet_dir, tmp_path):
    out = tmp_path / "out"
    read_api.read_parquet(str(parquet_dir)).write_parquet(str(out), partition_cols=["b"])
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert manifest["num_rows"] == 4000
    assert sorted(d for d in os.listdir(out) if not d.startswith("_")) == [
        f"b={i}" for i in range(7)
    ]
    back = read_api.read_parquet(str(out), filter=col("b") == 3).take_all()
    assert sorted(r["a"] for r in back) == [i for i in range(4000) if i % 7 == 3]


def test_failing_udf_on_7th_block_leaves_destination_unchanged(tmp_path):
    out = tmp_path / "out"
    df.from_items([{"x": i} for i in range(10)]).write_parquet(str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fail_on_7th(batch):
        if batch["id"][0] == 6:
            raise ValueError("bad block 7")
        return batch

    with pytest.raises(UserCodeError, match="bad block 7"):
        df.range(10, override_num_blocks=10).map_batches(fail_on_7th).write_parquet(
            str(out), mode="overwrite"
        )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_other_formats_through_the_api(tmp_path):
    (tmp_path / "a.csv").write_text("x,y\n1,a\n2,b\n")
    assert read_api.read_csv(str(tmp_path / "a.csv")).take_all() == [
        {"x": 1, "y": "a"},
        {"x": 2, "y": "b"},
    ]
    (tmp_path / "a.jsonl").write_text('{"k": 1}\n{"k": 2}\n')
    assert read_api.read_json(str(tmp_path / "a.jsonl")).take_all() == [{"k": 1}, {"k": 2}]
    (tmp_path / "t.txt").write_text("l1\nl2\n")
    assert read_api.read_text(str(tmp_path / "t.txt")).take_all() == [
        {"text": "l1"},
        {"text": "l2"},
    ]
    assert read_api.read_binary_files(str(tmp_path / "t.txt")).take_all() == [
        {"bytes": b"l1\nl2\n"}
    ]
    np.save(tmp_path / "v.npy", np.arange(3))
    assert read_api.read_numpy(str(tmp_path / "v.npy")).take_all() == [
        {"data": 0},
        {"data": 1},
        {"data": 2},
    ]


def test_corrupt_file_surfaces_source_error_with_path(parquet_dir):
    (parquet_dir / "zz.parquet").write_bytes(b"junk")
    with pytest.raises(SourceError) as info:
        read_api.read_parquet(str(parquet_dir)).take_all()
    assert info.value.path == str(parquet_dir / "zz.parquet")


def test_read_map_filter_write_is_one_task_per_read_task(parquet_dir, tmp_path, monkeypatch):
    """The write fuses into the read chain: one task (and one file) per read
    task, whatever the map's batch size; each file holds one row group."""
    monkeypatch.setattr(df.DataContext.get_current(), "target_min_block_size", 1)
    ds = (
        df.read_parquet(str(parquet_dir), override_num_blocks=2)
        .map_batches(
            lambda t: t.append_column("c", pc.multiply(t["a"], 2)),
            batch_size=100,
            batch_format="pyarrow",
        )
        .filter(expr="b < 3")
    )
    ds.write_parquet(str(tmp_path / "out"))
    files = sorted(p for p in os.listdir(tmp_path / "out") if p.endswith(".parquet"))
    assert files == ["part-00000-0000.parquet", "part-00001-0000.parquet"]
    for name in files:
        assert pq.ParquetFile(tmp_path / "out" / name).metadata.num_row_groups == 1
    got = pq.read_table(tmp_path / "out").sort_by("a")
    expected = [a for a in range(4000) if a % 7 < 3]
    assert got.column("a").to_pylist() == expected
    assert got.column("c").to_pylist() == [2 * a for a in expected]
    sink = ParquetDatasink(str(tmp_path / "plan"))
    fused = optimize(Write(sink, inputs=(ds._plan,)))
    assert fused.name == "read_parquet->map_batches(<lambda>)->filter(b < 3)->write_parquet"
    assert not fused.inputs
