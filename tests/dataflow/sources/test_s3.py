"""Reads and writes against a real S3 endpoint (moto's server on 127.0.0.1)."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dataflow.errors import SourceError
from dataflow.sources.parquet import ParquetDatasource
from dataflow.sources.sinks import ParquetDatasink
from dataflow.sources.text import TextDatasource


def put_parquet(fs, path, table, **kwargs):
    buf = io.BytesIO()
    pq.write_table(table, buf, **kwargs)
    fs.pipe(path, buf.getvalue())


def test_s3_partitioned_read_with_pushdown(s3, read_all):
    fs, bucket = s3
    for y in (2020, 2021):
        ids = np.arange(1000) + (y - 2020) * 1000
        put_parquet(
            fs,
            f"{bucket}/events/year={y}/part-0.parquet",
            pa.table({"id": ids, "v": ids * 2}),
            row_group_size=100,
        )
    fs.pipe(f"{bucket}/events/_SUCCESS", b"{}")

    src = ParquetDatasource(f"s3://{bucket}/events/", filesystem=fs)
    assert src.num_rows() == 2000
    assert src.schema().names == ["id", "v", "year"]
    expr = (pc.field("year") == 2021) & (pc.field("id") >= 1950)
    tasks = list(src.iter_read_tasks(4, columns=["v"], filter=expr))
    assert {f for t in tasks for f in t.metadata.input_files} == {
        f"{bucket}/events/year=2021/part-0.parquet"
    }
    out = read_all(src, 4, columns=["v"], filter=expr)
    assert out.to_pydict() == {"v": [2 * i for i in range(1950, 2000)]}


def test_s3_url_without_filesystem_and_errors(s3, read_all):
    fs, bucket = s3
    fs.pipe(f"{bucket}/t/a.txt", b"hello\nworld\n")
    assert read_all(TextDatasource(f"s3://{bucket}/t/")).column("text").to_pylist() == [
        "hello",
        "world",
    ]
    with pytest.raises(SourceError, match="no such file") as info:
        ParquetDatasource(f"s3://{bucket}/missing/", filesystem=fs).num_rows()
    assert info.value.path == f"{bucket}/missing"
    fs.pipe(f"{bucket}/bad/x.parquet", b"garbage")
    with pytest.raises(SourceError) as info:
        read_all(ParquetDatasource(f"s3://{bucket}/bad/", filesystem=fs))
    assert info.value.path == f"{bucket}/bad/x.parquet"


def test_s3_write_atomic_commit(s3, read_all):
    fs, bucket = s3
    dest = f"s3://{bucket}/out"
    blocks = [
        pa.table({"k": [i % 3] * 10, "x": list(range(i * 10, i * 10 + 10))}) for i in range(6)
    ]

    sink = ParquetDatasink(dest, filesystem=fs, partition_cols=["k"])
    sink.on_write_start()
    results = [sink.write(iter(blocks[:3]), 0), sink.write(iter(blocks[3:]), 1)]
    assert not fs.exists(f"{bucket}/out/k=0")  # staged only until commit
    manifest = sink.on_write_complete(results)
    listed = sorted(p.removeprefix(f"{bucket}/out/") for p in fs.find(f"{bucket}/out"))
    assert listed == ["_SUCCESS"] + sorted(f["path"] for f in manifest["files"])
    assert len(manifest["files"]) == 6  # 3 partitions x 2 tasks
    assert json.loads(fs.cat(f"{bucket}/out/_SUCCESS"))["num_rows"] == 60
    back = read_all(ParquetDatasource(dest, filesystem=fs)).sort_by("x")
    assert back.column("x").to_pylist() == list(range(60))
    assert back.column("k").to_pylist() == [i // 10 % 3 for i in range(60)]

    def failing():
        yield blocks[0]
        raise RuntimeError("boom")

    before = {p: fs.cat(p) for p in fs.find(f"{bucket}/out")}
    sink = ParquetDatasink(dest, filesystem=fs, mode="overwrite")
    sink.on_write_start()
    done = sink.write(iter(blocks), 0)
    with pytest.raises(RuntimeError, match="boom"):
        sink.write(failing(), 1)
    sink.on_write_failed(RuntimeError("boom"))
    assert done.num_rows == 60
    assert {p: fs.cat(p) for p in fs.find(f"{bucket}/out")} == before
