"""TFRecord files of ``tf.train.Example`` records, read and written without TensorFlow.

A TFRecord file is a sequence of records, each framed as::

    uint64 length | uint32 masked_crc32c(length) | bytes data[length] | uint32 masked_crc32c(data)

(little-endian; ``masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8``). Every
CRC is checked, so a truncated or corrupted file fails naming the record and
byte offset. CRC-32C comes from the ``crc32c`` package (extra
``dataflow[tfrecords]``) or, without it, from a table-driven fallback here.

The records are ``tf.train.Example`` protobufs, decoded and encoded by hand
from the wire format (no protobuf runtime)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }       // entries: key = 1, value = 2
    Feature  { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1 [packed]; }
    Int64List { repeated int64 value = 1 [packed]; }

Columns follow Ray Data: a feature holding one value per record becomes a
scalar column (``int64``, ``float32`` or ``binary``), one holding several
becomes a list column; a feature missing from a record is null. ``schema=``
(a ``pyarrow.Schema``) fixes the columns and their types instead.

>>> frame_record(b"abc")[:8] == (3).to_bytes(8, "little")
True
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from dataflow.sources.file_based import FileBasedDatasource
from dataflow.sources.paths import FileSystems
from dataflow.sources.sinks import FileDatasink

_MASK_DELTA = 0xA282EAD8
_RECORDS_PER_BLOCK = 8192
_KIND_TYPES = {"bytes": pa.binary(), "float": pa.float32(), "int": pa.int64()}
_FIELD_KIND = {1: "bytes", 2: "float", 3: "int"}

# -- CRC-32C (Castagnoli) ----------------------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE: list[int] = []


def _crc32c_python(data: bytes | memoryview) -> int:
    if not _TABLE:
        _TABLE.extend(_crc_table())
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _crc32c_fn() -> Any:
    try:
        import crc32c
    except ImportError:
        return _crc32c_python
    return crc32c.crc32c


def masked_crc32c(data: bytes | memoryview, crc_fn: Any = None) -> int:
    """The TFRecord checksum of ``data``: CRC-32C, rotated and offset.

    >>> hex(masked_crc32c(b""))
    '0xa282ead8'
    """
    crc = (crc_fn or _crc32c_fn())(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
    crc = _crc32c_fn()
    header = struct.pack("<Q", len(data))
    return b"".join(
        (
            header,
            struct.pack("<I", masked_crc32c(header, crc)),
            data,
            struct.pack("<I", masked_crc32c(data, crc)),
        )
    )


def iter_records(stream: Any, verify: bool = True) -> Iterator[bytes]:
    """The records of a TFRecord stream (anything with ``read(n)``), CRCs checked.

    A truncated file or a CRC mismatch raises ``ValueError`` naming the record
    number and its byte offset.
    """
    crc = _crc32c_fn()
    offset = index = 0
    while True:
        header = stream.read(12)
        if not header:
            return
        if len(header) < 12:
            raise ValueError(f"truncated record header (record {index} at byte {offset})")
        (length,) = struct.unpack_from("<Q", header)
        if verify and struct.unpack_from("<I", header, 8)[0] != masked_crc32c(header[:8], crc):
            raise ValueError(
                f"corrupt record length, CRC mismatch (record {index} at byte {offset}); "
                "is this a TFRecord file?"
            )
        body = stream.read(length + 4)
        if len(body) < length + 4:
            raise ValueError(
                f"truncated record {index} at byte {offset}: {length} bytes announced, "
                f"{max(0, len(body) - 4)} present"
            )
        data = body[:length]
        if verify and struct.unpack_from("<I", body, length)[0] != masked_crc32c(data, crc):
            raise ValueError(f"corrupt record data, CRC mismatch (record {index} at byte {offset})")
        yield data
        offset += 16 + length
        index += 1


# -- tf.train.Example wire format ------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    pos += 1
    if b < 0x80:
        return b, pos
    result, shift = b & 0x7F, 7
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint (more than 10 bytes)")


def _skip(buf: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 2:
        n, pos = _varint(buf, pos)
        return pos + n
    if wire == 5:
        return pos + 4
    raise ValueError(f"unsupported protobuf wire type {wire}")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field number, wire type, value start, value end)`` of one message;
    for length-delimited fields the value span excludes the length prefix."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 2:
            n, pos = _varint(buf, pos)
            yield number, wire, pos, pos + n
            pos += n
        else:
            nxt = _skip(buf, pos, wire)
            yield number, wire, pos, nxt
            pos = nxt
    if pos != end:
        raise ValueError("truncated protobuf message")


def _list_values(buf: bytes, kind: str, start: int, end: int) -> list:
    out: list = []
    for number, wire, a, b in _fields(buf, start, end):
        if number != 1:
            continue
        if kind == "bytes":
            out.append(buf[a:b])
        elif kind == "float":
            if wire == 2:  # packed
                out.extend(struct.unpack_from(f"<{(b - a) // 4}f", buf, a))
            else:
                out.append(struct.unpack_from("<f", buf, a)[0])
        elif wire == 2:  # packed int64s
            pos = a
            while pos < b:
                v, pos = _varint(buf, pos)
                out.append(v - (1 << 64) if v >> 63 else v)
        else:
            v = _varint(buf, a)[0]
            out.append(v - (1 << 64) if v >> 63 else v)
    return out


def decode_example(
    record: bytes, wanted: frozenset[str] | None = None
) -> dict[str, tuple[str | None, list]]:
    """``{feature: (kind, values)}`` of one serialized ``tf.train.Example``
    (kind is "bytes", "float", "int", or None for a feature with no list set);
    only the features in ``wanted`` are decoded when it is given.

    >>> decode_example(encode_example({"x": ("int", [1, -2])}))
    {'x': ('int', [1, -2])}
    """
    buf = bytes(record)
    out: dict[str, tuple[str | None, list]] = {}
    for number, wire, a, b in _fields(buf, 0, len(buf)):
        if number != 1 or wire != 2:
            continue
        for fnum, fwire, fa, fb in _fields(buf, a, b):  # Features
            if fnum != 1 or fwire != 2:
                continue
            key, value = None, None
            for enum, ewire, ea, eb in _fields(buf, fa, fb):  # map entry
                if enum == 1 and ewire == 2:
                    key = buf[ea:eb].decode("utf-8")
                elif enum == 2 and ewire == 2:
                    value = (ea, eb)
            if key is None or (wanted is not None and key not in wanted):
                continue
            kind, values = None, []
            if value is not None:
                for knum, kwire, ka, kb in _fields(buf, *value):  # Feature (oneof: last wins)
                    if knum in _FIELD_KIND and kwire == 2:
                        kind = _FIELD_KIND[knum]
                        values = _list_values(buf, kind, ka, kb)
            out[key] = (kind, values)
    return out


def _encode_varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _len_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def encode_feature(kind: str, values: Sequence[Any]) -> bytes:
    """A serialized ``tf.train.Feature`` (lists packed, as TensorFlow writes them)."""
    if kind == "bytes":
        body = b"".join(_len_field(1, v) for v in values)
        return _len_field(1, body)
    if kind == "float":
        packed = struct.pack(f"<{len(values)}f", *values)
        return _len_field(2, _len_field(1, packed) if values else b"")
    packed = b"".join(_encode_varint(int(v)) for v in values)
    return _len_field(3, _len_field(1, packed) if values else b"")


def encode_example(features: dict[str, tuple[str, Sequence[Any]]]) -> bytes:
    """A serialized ``tf.train.Example`` of ``{feature: (kind, values)}``."""
    entries = b"".join(
        _len_field(1, _len_field(1, name.encode()) + _len_field(2, encode_feature(kind, values)))
        for name, (kind, values) in features.items()
    )
    return _len_field(1, entries)


# -- reading -------------------------------------------------------------------------


def _column(
    name: str, cells: list[tuple[str | None, list] | None], field: pa.Field | None
) -> pa.Array:
    kinds = {c[0] for c in cells if c is not None and c[0] is not None}
    if len(kinds) > 1:
        raise ValueError(
            f"feature {name!r} holds {' and '.join(sorted(kinds))} lists in different records"
        )
    value_type = _KIND_TYPES[kinds.pop()] if kinds else pa.null()
    if field is not None:
        as_list = pa.types.is_list(field.type) or pa.types.is_large_list(field.type)
    else:  # Ray Data's rule: one value a record is a scalar, anything else a list
        as_list = any(c is not None and len(c[1]) != 1 for c in cells)
    if as_list:
        arr = pa.array([None if c is None else c[1] for c in cells], pa.list_(value_type))
    else:
        for c in cells:
            if c is not None and len(c[1]) > 1:
                raise ValueError(
                    f"feature {name!r} has {len(c[1])} values in a record but schema= gives "
                    f"it the scalar type {field.type if field else value_type}; use a list type"
                )
        arr = pa.array([c[1][0] if c is not None and c[1] else None for c in cells], value_type)
    if field is not None and arr.type != field.type:
        arr = arr.cast(field.type)
    return arr


def examples_to_table(
    examples: list[dict[str, tuple[str | None, list]]], schema: pa.Schema | None = None
) -> pa.Table:
    """Decoded examples as one block: one column per feature (first-seen order,
    or ``schema``'s columns and types)."""
    if schema is not None:
        names = list(schema.names)
    else:
        seen: dict[str, None] = {}
        for ex in examples:
            seen.update(dict.fromkeys(ex))
        names = list(seen)
    columns = {
        n: _column(n, [ex.get(n) for ex in examples], schema.field(n) if schema else None)
        for n in names
    }
    if not columns:  # records with no (wanted) feature: rows without columns
        return pa.table({"_": pa.nulls(len(examples))}).drop_columns(["_"])
    return pa.table(columns)


class TFRecordDatasource(FileBasedDatasource):
    """``tf.train.Example`` records of TFRecord files (``verify_crc=True`` checks every
    record's CRCs). Projection pushdown decodes only the selected features;
    limit pushdown stops reading a file once the task has its rows."""

    where = "read_tfrecords"
    expansion = 1.2
    sequential = True
    supports_projection_pushdown = True
    supports_limit_pushdown = True

    def __init__(
        self,
        paths: Any,
        *,
        schema: pa.Schema | None = None,
        verify_crc: bool = True,
        **file_kwargs: Any,
    ) -> None:
        if schema is not None and not isinstance(schema, pa.Schema):
            raise TypeError(
                f"read_tfrecords: schema must be a pyarrow.Schema, got {type(schema).__name__}"
            )
        super().__init__(paths, **file_kwargs)
        self.tf_schema = schema
        self.verify_crc = verify_crc

    def schema(self) -> pa.Schema | None:
        return self.tf_schema

    def read_file(self, fs: FileSystems, path: str) -> Iterator[pa.Table]:
        wanted = frozenset(self.columns) if self.columns is not None else None
        schema = self.tf_schema
        if schema is not None and wanted is not None:
            schema = pa.schema([f for f in schema if f.name in wanted])
        with fs.arrow.open_input_stream(path, compression="detect") as f:
            batch: list[dict] = []
            for i, record in enumerate(iter_records(f, self.verify_crc)):
                try:
                    batch.append(decode_example(record, wanted))
                except (ValueError, IndexError, struct.error, UnicodeDecodeError) as e:
                    raise ValueError(
                        f"record {i} is not a tf.train.Example ({e}); read_tfrecords reads "
                        "Example records only"
                    ) from e
                if len(batch) >= _RECORDS_PER_BLOCK:
                    yield examples_to_table(batch, schema)
                    batch = []
            if batch or schema is not None:
                yield examples_to_table(batch, schema)


# -- writing -------------------------------------------------------------------------


def _feature_kind(name: str, t: pa.DataType) -> tuple[str, bool]:
    """(kind, is_list) of an Arrow column type, or a ValueError naming the column."""
    is_list = False
    if isinstance(t, pa.FixedShapeTensorType):
        t, is_list = t.value_type, True
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t, is_list = t.value_type, True
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        return "int", is_list
    if pa.types.is_floating(t):
        return "float", is_list
    if any(
        check(t) for check in (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_string)
    ) or pa.types.is_large_string(t):
        return "bytes", is_list
    raise ValueError(
        f"write_tfrecords: column {name!r} has type {t}, which a tf.train.Feature cannot hold "
        "(int64, float or bytes lists); cast or encode it first"
    )


def _cells(column: pa.ChunkedArray, kind: str) -> list[list | None]:
    """Per row, the values of the feature (None for a null cell)."""
    t = column.type
    if isinstance(t, pa.FixedShapeTensorType):
        arr = column.combine_chunks().to_numpy_ndarray()
        return [row.tolist() for row in arr.reshape(len(arr), -1)]
    py = column.to_pylist()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        rows = py
    else:
        rows = [None if v is None else [v] for v in py]
    if kind == "bytes":
        return [
            None if r is None else [v.encode() if isinstance(v, str) else v for v in r]
            for r in rows
        ]
    if kind == "int":
        return [None if r is None else [int(v) for v in r] for r in rows]
    return rows


class TFRecordDatasink(FileDatasink):
    """``tf.train.Example`` records: integers (and booleans) as Int64List, floats as
    FloatList (float32), strings and binary as BytesList; list and tensor columns
    become multi-value lists (tensors flattened row-major); a null cell leaves the
    feature out of that record."""

    where = "write_tfrecords"
    extension = "tfrecords"

    def open_file(self, stream: Any, schema: pa.Schema) -> list[tuple[str, str]]:
        return [(f.name, _feature_kind(f.name, f.type)[0]) for f in schema]

    def write_table(self, state: list[tuple[str, str]], stream: Any, table: pa.Table) -> None:
        columns = [(name, kind, _cells(table.column(name), kind)) for name, kind in state]
        for i in range(table.num_rows):
            feats = {
                name: (kind, cells[i]) for name, kind, cells in columns if cells[i] is not None
            }
            for name, (kind, values) in feats.items():
                if kind == "int" and any(v >= 1 << 63 or v < -(1 << 63) for v in values):
                    raise ValueError(
                        f"write_tfrecords: column {name!r} row {i} holds a value outside int64"
                    )
            stream.write(frame_record(encode_example(feats)))


__all__ = [
    "TFRecordDatasink",
    "TFRecordDatasource",
    "decode_example",
    "encode_example",
    "frame_record",
    "iter_records",
    "masked_crc32c",
]
