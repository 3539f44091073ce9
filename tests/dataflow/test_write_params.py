"""Ray Data's writer parameters (dataflow/dataset_write_files.py) and
write_images: each asserts the files written, row for row."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

import dataflow as df
from dataflow.errors import PlanError
from dataflow.plan.logical import FusedMap, Write
from dataflow.plan.optimizer import optimize
from dataflow.sources.sinks import FilenameProvider


@pytest.fixture(autouse=True)
def _inline():
    df.init("inline", num_cpus=2)
    yield
    df.shutdown()


def manifest(path):
    with open(os.path.join(path, "_SUCCESS")) as f:
        return json.load(f)["files"]


def ids(path):
    return sorted(r["id"] for r in df.read_parquet(str(path)).take_all())


def test_max_rows_per_file_cuts_files_and_keeps_every_row(tmp_path):
    df.range(10, override_num_blocks=2).write_parquet(str(tmp_path), max_rows_per_file=3)
    assert [(f["path"], f["num_rows"]) for f in manifest(tmp_path)] == [
        ("part-00000-0000.parquet", 3),
        ("part-00000-0001.parquet", 2),
        ("part-00001-0000.parquet", 3),
        ("part-00001-0001.parquet", 2),
    ]
    assert ids(tmp_path) == list(range(10))
    out = tmp_path / "csv"
    df.range(7).write_csv(str(out), max_rows_per_file=2)  # a keyword of every writer here
    assert sorted(f["num_rows"] for f in manifest(out)) == [1, 2, 2, 2]


def test_min_rows_per_file_bundles_small_blocks_into_one_task(tmp_path):
    df.range(10, override_num_blocks=5).write_csv(str(tmp_path), min_rows_per_file=4)
    assert [f["num_rows"] for f in manifest(tmp_path)] == [4, 4, 2]
    out = tmp_path / "old"
    df.range(10, override_num_blocks=5).write_json(str(out), num_rows_per_file=6)
    assert [f["num_rows"] for f in manifest(out)] == [6, 4]
    with pytest.raises(PlanError, match="num_rows_per_file is Ray's older name"):
        df.range(3).write_json(str(tmp_path / "x"), num_rows_per_file=2, min_rows_per_file=3)
    with pytest.raises(ValueError, match="min_rows_per_file=5 is more than max_rows_per_file=2"):
        df.range(3).write_parquet(str(tmp_path / "y"), min_rows_per_file=5, max_rows_per_file=2)


def test_write_settings_keep_the_write_out_of_the_previous_task():
    plan = df.range(10).map_batches(lambda b: b)._plan
    default = optimize(Write(datasink=None, inputs=(plan,)), None)
    assert isinstance(default, FusedMap) and isinstance(default.stages[-1], Write)
    own = optimize(Write(datasink=None, min_rows_per_task=4, inputs=(plan,)), None)
    assert isinstance(own, Write) and own.min_rows_per_task == 4


def test_mode_defaults_to_append_like_ray_and_ignore_and_error(tmp_path):
    df.range(3).write_parquet(str(tmp_path))
    df.range(3, override_num_blocks=1).write_parquet(str(tmp_path))
    names = [f["path"] for f in manifest(tmp_path)]
    assert names[0] == "part-00000-0000.parquet" and names[-1].startswith("part-")
    assert len(set(names)) == len(names)
    assert ids(tmp_path) == [0, 0, 1, 1, 2, 2]
    df.range(5).write_parquet(str(tmp_path), mode="ignore")
    assert ids(tmp_path) == [0, 0, 1, 1, 2, 2]
    with pytest.raises(FileExistsError, match="mode='overwrite'"):
        df.range(5).write_parquet(str(tmp_path), mode="error")
    df.range(2).write_parquet(str(tmp_path), mode="overwrite")
    assert ids(tmp_path) == [0, 1]


def test_try_create_dir_false_needs_the_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="try_create_dir=False"):
        df.range(3).write_csv(str(tmp_path / "missing"), try_create_dir=False)
    assert not (tmp_path / "missing").exists()
    df.range(3, override_num_blocks=1).write_csv(str(tmp_path), try_create_dir=False)
    assert [f["num_rows"] for f in manifest(tmp_path)] == [3]


def test_filename_provider_names_the_files(tmp_path):
    class Prefixed(FilenameProvider):
        def get_filename_for_task(self, write_uuid, task_index):
            return f"ids_{task_index:03}.parquet"

    df.range(10, override_num_blocks=2).write_parquet(
        str(tmp_path), filename_provider=Prefixed(), max_rows_per_file=4
    )
    assert sorted(os.listdir(tmp_path)) == [
        "_SUCCESS",
        "ids_000.parquet",
        "ids_000_000001.parquet",
        "ids_001.parquet",
        "ids_001_000001.parquet",
    ]
    assert ids(tmp_path) == list(range(10))
    with pytest.raises(TypeError, match="filename_provider must have get_filename_for_task"):
        df.range(3).write_parquet(str(tmp_path / "z"), filename_provider="name")


def test_args_fn_open_stream_args_and_remote_args(tmp_path):
    df.range(10, override_num_blocks=1).write_parquet(
        str(tmp_path),
        arrow_parquet_args_fn=lambda: {"compression": "snappy", "row_group_size": 4},
        compression="zstd",
        concurrency=1,
        ray_remote_args={"num_cpus": 1},
    )
    (f,) = manifest(tmp_path)
    meta = pq.ParquetFile(tmp_path / f["path"]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"  # the direct keyword wins
    out = tmp_path / "gz"
    df.range(4, override_num_blocks=1).write_csv(
        str(out), arrow_open_stream_args={"compression": "gzip"}
    )
    (g,) = manifest(out)
    with open(out / g["path"], "rb") as fh:
        assert fh.read(2) == b"\x1f\x8b"
    with pytest.raises(PlanError, match="concurrency must be a positive int"):
        df.range(3).write_csv(str(tmp_path / "c"), concurrency=0)
    with pytest.raises(PlanError, match="ray_remote_args max_retries=2"):
        df.range(3).write_csv(str(tmp_path / "c"), ray_remote_args={"max_retries": 2})
    with pytest.raises(PlanError, match="min_bytes_per_file is not supported"):
        df.range(3).write_parquet(str(tmp_path / "c"), min_bytes_per_file=10)


def test_write_images_one_file_per_row_read_back(tmp_path):
    pytest.importorskip("PIL")
    rows = [{"image": np.full((4, 5, 3), 10 * i, np.uint8), "i": i} for i in range(5)]
    df.from_items(rows, override_num_blocks=1).write_images(str(tmp_path), column="image")
    assert sorted(os.listdir(tmp_path)) == ["_SUCCESS"] + [
        f"part-00000-000000-00000{r}.png" for r in range(5)
    ]
    back = df.read_images(str(tmp_path)).take_all()
    assert [int(r["image"][0, 0, 0]) for r in back] == [0, 10, 20, 30, 40]
    assert back[0]["image"].shape == (4, 5, 3)

    class Named(FilenameProvider):
        def get_filename_for_task(self, write_uuid, task_index):
            return f"img_{task_index}.jpg"

    out = tmp_path / "jpg"
    df.from_items(rows[:2], override_num_blocks=1).write_images(
        str(out), column="image", file_format="jpeg", filename_provider=Named()
    )
    assert sorted(os.listdir(out)) == [
        "_SUCCESS",
        "img_0_000000_000000.jpeg",
        "img_0_000000_000001.jpeg",
    ]
    with pytest.raises(ValueError, match="write_images: Pillow cannot write file_format='nope'"):
        df.from_items(rows).write_images(str(tmp_path / "n"), column="image", file_format="nope")
    with pytest.raises(Exception, match="column 'img' is not in"):
        df.from_items(rows).write_images(str(tmp_path / "m"), column="img")
    assert not (tmp_path / "m").exists()


def test_write_datasink_and_write_sql_take_concurrency_and_ray_remote_args(tmp_path):
    import sqlite3

    db = str(tmp_path / "app.db")
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (id INTEGER)")
    df.range(20, override_num_blocks=4).write_sql(
        "INSERT INTO t VALUES (?)",
        lambda: sqlite3.connect(db),
        ray_remote_args={"num_cpus": 1},
        concurrency=1,
    )
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), SUM(id) FROM t").fetchone() == (20, 190)
    with pytest.raises(PlanError, match="write_sql: concurrency must be a positive int"):
        df.range(3).write_sql("INSERT INTO t VALUES (?)", lambda: None, concurrency=-1)
    from dataflow.sources.sinks import CSVDatasink

    df.range(6).write_datasink(CSVDatasink(str(tmp_path / "s")), concurrency=2)
    assert sum(f["num_rows"] for f in manifest(tmp_path / "s")) == 6
    with pytest.raises(PlanError, match="write_datasink: ray_remote_args placement_group"):
        df.range(3).write_datasink(
            CSVDatasink(str(tmp_path / "t")), ray_remote_args={"placement_group": 1}
        )


def test_connector_writers_refuse_what_they_cannot_honour(tmp_path):
    with pytest.raises(PlanError, match="write_delta: catalog="):
        df.range(3).write_delta(str(tmp_path / "d"), catalog=object())
    with pytest.raises(PlanError, match="write_delta: schema_mode is not supported"):
        df.range(3).write_delta(str(tmp_path / "d"), schema_mode="merge")
    with pytest.raises(PlanError, match="write_iceberg: overwrite_filter is not supported"):
        df.range(3).write_iceberg("db.t", {}, None, None, "append", "id > 1")
    with pytest.raises(PlanError, match="write_lance: table_id names a table"):
        df.range(3).write_lance(str(tmp_path / "l"), table_id=["a"])
