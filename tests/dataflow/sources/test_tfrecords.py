"""read_tfrecords / write_tfrecords: the framing and Example codec against hand-built
bytes and TensorFlow's own writer and reader (run in a subprocess: TensorFlow takes
seconds to import and keeps threads), round trips, pushdown and bad files."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

import dataflow as df
from dataflow.errors import SourceError
from dataflow.sources import tfrecords
from dataflow.sources.tfrecords import (
    TFRecordDatasource,
    decode_example,
    encode_example,
    frame_record,
    iter_records,
    masked_crc32c,
)


@pytest.fixture(autouse=True)
def inline_backend():
    df.init(backend="inline")
    yield
    df.shutdown()


def test_crc32c_known_values_and_fallback_agree():
    # CRC-32C check value (RFC 3720 B.4) through both implementations.
    assert tfrecords._crc32c_python(b"123456789") == 0xE3069283
    data = bytes(range(256)) * 3
    assert masked_crc32c(data, tfrecords._crc32c_python) == masked_crc32c(data)
    assert masked_crc32c(b"") == 0xA282EAD8


def test_example_codec_on_hand_built_bytes():
    # Example{features{feature{key:"n" value{int64_list{value:[1, -1] unpacked}}}
    #                  feature{key:"f" value{float_list{value:[0.5] unpacked}}}}}
    neg = b"\xff" * 9 + b"\x01"  # -1 as a 10-byte varint
    int_list = b"\x08\x01\x08" + neg
    ints = b"\x1a" + bytes([len(int_list)]) + int_list
    entry_n = b"\x0a\x01n\x12" + bytes([len(ints)]) + ints
    floats_list = b"\x0d" + struct.pack("<f", 0.5)
    floats = b"\x12" + bytes([len(floats_list)]) + floats_list
    entry_f = b"\x0a\x01f\x12" + bytes([len(floats)]) + floats
    features = b"\x0a" + bytes([len(entry_n)]) + entry_n + b"\x0a" + bytes([len(entry_f)]) + entry_f
    example = b"\x0a" + bytes([len(features)]) + features
    assert decode_example(example) == {"n": ("int", [1, -1]), "f": ("float", [0.5])}
    assert decode_example(example, frozenset({"f"})) == {"f": ("float", [0.5])}

    encoded = encode_example({"b": ("bytes", [b"x", b""]), "i": ("int", [2**63 - 1, -(2**63)])})
    assert decode_example(encoded) == {
        "b": ("bytes", [b"x", b""]),
        "i": ("int", [2**63 - 1, -(2**63)]),
    }
    record = frame_record(encoded)
    assert struct.unpack_from("<Q", record)[0] == len(encoded)
    assert struct.unpack_from("<I", record, 8)[0] == masked_crc32c(record[:8])
    assert struct.unpack_from("<I", record, 12 + len(encoded))[0] == masked_crc32c(encoded)


def test_round_trip_types_and_multi_value_features(tmp_path):
    table = pa.table(
        {
            "i": pa.array([1, -5, 2**40], pa.int64()),
            "f": pa.array([0.5, -1.25, 3.0], pa.float32()),
            "s": ["a", "bé", ""],
            "b": [b"\x00\x01", b"", b"z"],
            "li": pa.array([[1, 2], [], [3]], pa.list_(pa.int64())),
            "maybe": pa.array([7, None, 9], pa.int64()),
        }
    )
    df.from_arrow(table).write_tfrecords(str(tmp_path / "out"))
    back = df.read_tfrecords(str(tmp_path / "out")).take_all()
    assert back == [
        {"i": 1, "f": 0.5, "s": b"a", "b": b"\x00\x01", "li": [1, 2], "maybe": 7},
        {"i": -5, "f": -1.25, "s": "bé".encode(), "b": b"", "li": [], "maybe": None},
        {"i": 2**40, "f": 3.0, "s": b"", "b": b"z", "li": [3], "maybe": 9},
    ]
    schema = df.read_tfrecords(str(tmp_path / "out")).schema()
    assert schema.field("f").type == pa.float32() and schema.field("li").type == pa.list_(
        pa.int64()
    )

    emb = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    df.from_numpy(emb).write_tfrecords(str(tmp_path / "tensor"))
    rows = df.read_tfrecords(str(tmp_path / "tensor")).take_all()
    assert [r["data"] for r in rows] == emb.reshape(3, 4).tolist()  # flattened row-major


def test_schema_fixes_types_and_rejects_multi_values_for_scalars(tmp_path):
    df.from_items([{"x": 1, "y": [1.0, 2.0]}, {"x": 2, "y": [3.0, 4.0]}]).write_tfrecords(
        str(tmp_path)
    )
    schema = pa.schema([("x", pa.list_(pa.int64())), ("missing", pa.binary())])
    assert df.read_tfrecords(str(tmp_path), schema=schema).take_all() == [
        {"x": [1], "missing": None},
        {"x": [2], "missing": None},
    ]
    with pytest.raises(SourceError, match="'y' has 2 values in a record"):
        df.read_tfrecords(str(tmp_path), schema=pa.schema([("y", pa.float32())])).take_all()
    with pytest.raises(df.PlanError, match="tf_schema"):
        df.read_tfrecords(str(tmp_path), tf_schema=object())


def test_projection_and_limit_pushdown_show_in_explain(tmp_path, capsys, read_all):
    rows = [{"a": i, "b": f"row {i}".encode()} for i in range(100)]
    df.from_items(rows).write_tfrecords(str(tmp_path))
    ds = df.read_tfrecords(str(tmp_path)).select_columns(["a"]).limit(3)
    ds.explain()
    text = capsys.readouterr().out
    assert "read_tfrecords columns=[a] limit=3" in text
    assert "read_tfrecords: decodes only a; each task stops after 3 rows" in text
    assert ds.take_all() == [{"a": 0}, {"a": 1}, {"a": 2}]
    # The pushed projection is honoured by the source itself, not only by the plan above it.
    out = read_all(TFRecordDatasource(str(tmp_path)), columns=["b"], limit=2)
    assert out.to_pylist() == [{"b": b"row 0"}, {"b": b"row 1"}]


def test_corrupt_truncated_and_missing_files_name_the_file(tmp_path):
    df.from_items([{"a": i} for i in range(5)], override_num_blocks=1).write_tfrecords(
        str(tmp_path / "ok")
    )
    (good,) = sorted((tmp_path / "ok").glob("*.tfrecords"))
    data = bytearray(good.read_bytes())
    bad = tmp_path / "bad.tfrecords"
    data[20] ^= 0xFF  # inside the first record's payload
    bad.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="CRC mismatch \\(record 0 at byte 0\\)") as info:
        df.read_tfrecords(str(bad)).take_all()
    assert info.value.path == str(bad)

    cut = tmp_path / "cut.tfrecords"
    cut.write_bytes(good.read_bytes()[:-3])
    with pytest.raises(SourceError, match="truncated record 4") as info:
        df.read_tfrecords(str(cut)).take_all()
    assert info.value.path == str(cut)

    text = tmp_path / "text.tfrecords"
    text.write_bytes(b"hello, this is not a tfrecord file\n")
    with pytest.raises(SourceError, match="is this a TFRecord file"):
        df.read_tfrecords(str(text)).take_all()
    with pytest.raises(SourceError, match="no such file or directory"):
        df.read_tfrecords(str(tmp_path / "nope.tfrecords")).take_all()
    with open(good, "rb") as f:
        assert [decode_example(r) for r in iter_records(f)] == [
            {"a": ("int", [i])} for i in range(5)
        ]


_TF_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    ours, theirs = sys.argv[1], sys.argv[2]
    seen = []
    for raw in tf.data.TFRecordDataset(ours):  # checks our CRCs
        ex = tf.train.Example.FromString(raw.numpy())
        f = ex.features.feature
        seen.append({"id": list(f["id"].int64_list.value),
                     "x": [round(v, 6) for v in f["x"].float_list.value],
                     "tag": [v.decode() for v in f["tag"].bytes_list.value]})
    with tf.io.TFRecordWriter(theirs) as w:
        for i in range(3):
            feats = {"id": tf.train.Feature(int64_list=tf.train.Int64List(value=[i - 1])),
                     "vec": tf.train.Feature(float_list=tf.train.FloatList(value=[i, i / 2])),
                     "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"n%d" % i]))}
            w.write(tf.train.Example(features=tf.train.Features(feature=feats))
                    .SerializeToString())
    print(json.dumps(seen))
    """
)


@pytest.mark.slow  # TensorFlow's import alone takes 10-40 s on 2 cores
def test_tensorflow_reads_ours_and_we_read_tensorflows(tmp_path):
    pytest.importorskip("tensorflow")
    rows = [{"id": i, "x": i * 0.5, "tag": [f"t{i}", "z"]} for i in range(4)]
    df.from_items(rows, override_num_blocks=1).write_tfrecords(str(tmp_path / "ours"))
    (ours,) = sorted((tmp_path / "ours").glob("*.tfrecords"))
    theirs = tmp_path / "theirs.tfrecords"
    proc = subprocess.run(
        [sys.executable, "-c", _TF_SCRIPT, str(ours), str(theirs)],
        capture_output=True,
        text=True,
        timeout=240,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [
        {"id": [i], "x": [i * 0.5], "tag": [f"t{i}", "z"]} for i in range(4)
    ]
    assert df.read_tfrecords(str(theirs)).take_all() == [
        {"id": i - 1, "vec": [float(i), i / 2], "name": b"n%d" % i} for i in range(3)
    ]
