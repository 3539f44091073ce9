"""Avro object container files through fastavro (extra ``dataflow[avro]``).

Each file's writer schema (in its header) is mapped to an Arrow schema, so
columns keep Avro's types exactly: ``int`` -> int32, ``float`` -> float32,
``fixed`` -> fixed-size binary, ``enum`` -> string, ``array`` -> list,
``map`` -> map, ``record`` -> struct, ``["null", T]`` -> nullable T, and the
logical types (``date``, ``time-*``, ``timestamp-*`` in UTC, ``local-timestamp-*``,
``decimal``, ``uuid``). A union of several non-null types has no Arrow
equivalent: such a file's types are inferred from its values instead.

Projection pushdown hands fastavro a reader schema of the selected fields, so
the others are skipped while decoding; limit pushdown stops reading a file once
the task has its rows.

>>> src = AvroDatasource("events/*.avro")   # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from dataflow.sources.file_based import FileBasedDatasource
from dataflow.sources.paths import FileSystems

_RECORDS_PER_BLOCK = 16_384
_PRIMITIVES = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}
_LOGICAL = {
    "date": pa.date32(),
    "time-millis": pa.time32("ms"),
    "time-micros": pa.time64("us"),
    "timestamp-millis": pa.timestamp("ms", tz="UTC"),
    "timestamp-micros": pa.timestamp("us", tz="UTC"),
    "local-timestamp-millis": pa.timestamp("ms"),
    "local-timestamp-micros": pa.timestamp("us"),
    "uuid": pa.string(),
}


class _NoArrowType(Exception):
    """An Avro type with no faithful Arrow type (a union of several types)."""


def _fastavro() -> Any:
    try:
        import fastavro
    except ImportError as e:
        raise ImportError(
            "read_avro needs fastavro: pip install 'dataflow[avro]' (or pip install fastavro)"
        ) from e
    return fastavro


def avro_to_arrow(schema: Any, names: dict[str, Any] | None = None) -> pa.DataType:
    """The Arrow type of a (fastavro-parsed) Avro schema.

    >>> avro_to_arrow({"type": "array", "items": ["null", "float"]})
    ListType(list<item: float>)
    """
    names = {} if names is None else names
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        if schema in names:
            return avro_to_arrow(names[schema], names)
        raise _NoArrowType(f"unknown named type {schema!r}")
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"]
        if len(branches) != 1:
            raise _NoArrowType(f"a union of {len(branches)} non-null types")
        return avro_to_arrow(branches[0], names)
    kind = schema.get("type")
    logical = schema.get("logicalType")
    if "name" in schema and kind in ("record", "enum", "fixed", "error"):
        names.setdefault(schema["name"], schema)
    if logical == "decimal" and kind in ("bytes", "fixed"):
        precision, scale = int(schema["precision"]), int(schema.get("scale", 0))
        return (
            pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
        )
    if logical in _LOGICAL:
        return _LOGICAL[logical]
    if kind in ("record", "error"):
        return pa.struct(
            [pa.field(f["name"], avro_to_arrow(f["type"], names)) for f in schema["fields"]]
        )
    if kind == "enum":
        return pa.string()
    if kind == "fixed":
        return pa.binary(int(schema["size"]))
    if kind == "array":
        return pa.list_(avro_to_arrow(schema["items"], names))
    if kind == "map":
        return pa.map_(pa.string(), avro_to_arrow(schema["values"], names))
    return avro_to_arrow(kind, names)


def _uuid_fields(schema: dict) -> list[str]:
    return [
        f["name"]
        for f in schema.get("fields", ())
        for t in (f["type"] if isinstance(f["type"], list) else [f["type"]])
        if isinstance(t, dict) and t.get("logicalType") == "uuid"
    ]


def _inline_names(schema: Any, names: dict[str, Any], defined: set[str]) -> Any:
    """``schema`` with each named type defined at its first use here (a reader
    schema of some fields may use a type the writer defined in another field)."""
    if isinstance(schema, str):
        if schema in names and schema not in defined:  # the dict branch defines it
            return _inline_names(copy.deepcopy(names[schema]), names, defined)
        return schema
    if isinstance(schema, list):
        return [_inline_names(b, names, defined) for b in schema]
    if isinstance(schema, dict):
        name = schema.get("name") if schema.get("type") in ("record", "enum", "fixed") else None
        if name is not None:
            if name in defined:
                return name
            defined.add(name)
        out = dict(schema)
        if "fields" in out:
            out["fields"] = [
                {**f, "type": _inline_names(f["type"], names, defined)} for f in out["fields"]
            ]
        for key in ("items", "values"):
            if key in out:
                out[key] = _inline_names(out[key], names, defined)
        return out
    return schema


def _collect_names(schema: Any, names: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for b in schema:
            _collect_names(b, names)
    elif isinstance(schema, dict):
        if schema.get("type") in ("record", "enum", "fixed", "error") and "name" in schema:
            names.setdefault(schema["name"], schema)
        for f in schema.get("fields", ()):
            _collect_names(f["type"], names)
        for key in ("items", "values"):
            if key in schema:
                _collect_names(schema[key], names)


def reader_schema(writer: dict, columns: list[str]) -> dict:
    """A reader schema of the ``columns`` fields of a writer's record schema."""
    names: dict[str, Any] = {}
    _collect_names(writer, names)
    keep = [f for f in writer["fields"] if f["name"] in set(columns)]
    defined = {writer["name"]}
    fields = [{**f, "type": _inline_names(f["type"], names, defined)} for f in keep]
    # Not fastavro's parse markers: the reader schema must be parsed afresh.
    return {**{k: v for k, v in writer.items() if not k.startswith("__")}, "fields": fields}


class AvroDatasource(FileBasedDatasource):
    """Records of Avro container files, one column per top-level field."""

    where = "read_avro"
    expansion = 2.0
    sequential = True
    supports_projection_pushdown = True
    supports_limit_pushdown = True

    def __init__(self, paths: Any, **file_kwargs: Any) -> None:
        _fastavro()  # fail here, not in a worker, when fastavro is missing
        super().__init__(paths, **file_kwargs)

    def read_file(self, fs: FileSystems, path: str) -> Iterator[pa.Table]:
        fastavro = _fastavro()
        with fs.arrow.open_input_file(path) as f:
            writer = fastavro.reader(f).writer_schema  # the header only
            if not isinstance(writer, dict) or writer.get("type") != "record":
                raise ValueError("read_avro reads files of records (the schema is not a record)")
            schema = writer
            if self.columns is not None:  # fastavro skips the fields a reader schema lacks
                schema = reader_schema(writer, list(self.columns))
            f.seek(0)
            records = fastavro.reader(f, reader_schema=schema if schema is not writer else None)
            names: dict[str, Any] = {}
            _collect_names(writer, names)
            try:
                arrow: pa.Schema | None = pa.schema(
                    [pa.field(x["name"], avro_to_arrow(x["type"], names)) for x in schema["fields"]]
                )
            except _NoArrowType:
                arrow = None
            uuids = _uuid_fields(schema)
            batch: list[dict] = []
            for record in records:
                batch.append(record)
                if len(batch) >= _RECORDS_PER_BLOCK:
                    yield _table(batch, arrow, uuids)
                    batch = []
            if batch or arrow is not None:
                yield _table(batch, arrow, uuids)


def _table(records: list[dict], schema: pa.Schema | None, uuids: list[str]) -> pa.Table:
    for name in uuids:
        for r in records:
            if r.get(name) is not None:
                r[name] = str(r[name])
    if schema is None:
        return pa.Table.from_pylist(records)
    return pa.Table.from_pylist(records, schema=schema)
