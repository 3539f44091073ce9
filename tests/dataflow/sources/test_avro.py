"""read_avro on files written by fastavro: exact values and Arrow types, projection
through a reader schema, limit, unions without an Arrow type, and bad files."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pyarrow as pa
import pytest

import dataflow as df
from dataflow.errors import SourceError
from dataflow.sources.avro import AvroDatasource, avro_to_arrow

fastavro = pytest.importorskip("fastavro")

SCHEMA = {
    "type": "record",
    "name": "Event",
    "namespace": "app",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "small", "type": "int"},
        {"name": "ratio", "type": "float"},
        {"name": "note", "type": ["null", "string"]},
        {
            "name": "home",
            "type": {
                "type": "record",
                "name": "Addr",
                "fields": [{"name": "city", "type": "string"}],
            },
        },
        {"name": "work", "type": ["null", "Addr"]},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "counts", "type": {"type": "map", "values": "long"}},
        {"name": "color", "type": {"type": "enum", "name": "Color", "symbols": ["RED", "BLUE"]}},
        {"name": "digest", "type": {"type": "fixed", "name": "D4", "size": 4}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {
            "name": "price",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        },
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
    ],
}
UTC = datetime.timezone.utc


def _record(i: int) -> dict:
    return {
        "id": i,
        "small": -i,
        "ratio": i / 4,
        "note": None if i % 2 else f"n{i}",
        "home": {"city": f"c{i}"},
        "work": None if i % 3 == 0 else {"city": "w"},
        "tags": [f"t{j}" for j in range(i % 3)],
        "counts": {"a": i},
        "color": "BLUE" if i % 2 else "RED",
        "digest": bytes([i % 256]) * 4,
        "day": datetime.date(2024, 1, 1) + datetime.timedelta(days=i),
        "at": datetime.datetime(2024, 1, 1, tzinfo=UTC) + datetime.timedelta(microseconds=i),
        "price": decimal.Decimal(i) / 100,
        "uid": uuid.UUID(int=i),
    }


@pytest.fixture(autouse=True)
def inline_backend():
    df.init(backend="inline")
    yield
    df.shutdown()


@pytest.fixture
def avro_dir(tmp_path):
    parsed = fastavro.parse_schema(SCHEMA)
    for part, codec in enumerate(("null", "deflate")):
        with open(tmp_path / f"part-{part}.avro", "wb") as f:
            fastavro.writer(
                f, parsed, [_record(i) for i in range(part * 50, part * 50 + 50)], codec=codec
            )
    return tmp_path


def _expected(i: int) -> dict:
    r = _record(i)
    r["counts"] = [("a", i)]  # Arrow maps come back as key/value pairs
    r["uid"] = str(r["uid"])
    return r


def test_values_and_types_are_exact(avro_dir):
    ds = df.read_avro(str(avro_dir))
    rows = sorted(ds.take_all(), key=lambda r: r["id"])
    assert rows == [_expected(i) for i in range(100)]
    schema = ds.schema()
    assert schema.field("small").type == pa.int32()
    assert schema.field("ratio").type == pa.float32()
    assert schema.field("digest").type == pa.binary(4)
    assert schema.field("price").type == pa.decimal128(9, 2)
    assert schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("work").type == pa.struct([("city", pa.string())])
    assert ds.count() == 100


def test_projection_uses_a_reader_schema_and_limit_stops(avro_dir, capsys, read_all):
    out = read_all(AvroDatasource(str(avro_dir)), columns=["work", "id"])
    assert out.column_names == ["work", "id"]
    assert out.to_pylist() == [{"work": _record(i)["work"], "id": i} for i in range(100)]
    ds = df.read_avro(str(avro_dir)).select_columns(["price"]).limit(2)
    ds.explain()
    text = capsys.readouterr().out
    assert "read_avro columns=[price] limit=2" in text
    assert "read_avro: decodes only price; each task stops after 2 rows" in text
    assert len(ds.take_all()) == 2


def test_multi_type_union_falls_back_to_inferred_types(tmp_path):
    schema = {
        "type": "record",
        "name": "U",
        "fields": [{"name": "v", "type": ["null", "long", "string"]}, {"name": "k", "type": "int"}],
    }
    with open(tmp_path / "u.avro", "wb") as f:
        fastavro.writer(f, fastavro.parse_schema(schema), [{"v": 1, "k": 1}, {"v": None, "k": 2}])
    assert df.read_avro(str(tmp_path)).take_all() == [{"v": 1, "k": 1}, {"v": None, "k": 2}]
    with pytest.raises(Exception, match="union of 2 non-null types"):
        avro_to_arrow(schema["fields"][0]["type"])


def test_bad_files_name_the_file(tmp_path, avro_dir):
    bad = tmp_path / "bad.avro"
    bad.write_bytes(b"Obj\x01 not really avro")
    with pytest.raises(SourceError, match="read_avro: cannot read") as info:
        df.read_avro(str(bad)).take_all()
    assert info.value.path == str(bad)
    good = (avro_dir / "part-0.avro").read_bytes()
    cut = tmp_path / "cut.avro"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(SourceError) as info:
        df.read_avro(str(cut)).take_all()
    assert info.value.path == str(cut)
    with pytest.raises(SourceError, match="no such file or directory"):
        df.read_avro(str(tmp_path / "missing.avro")).take_all()
