"""Block = ``pa.Table``: batch-format conversion, slicing, sizing and tensor columns.

Tensor columns (embeddings, images) are Arrow fixed-shape tensor columns; in the
``numpy`` format they are N-d arrays whose first axis is the row.

>>> t = from_batch({"x": np.arange(3), "emb": np.zeros((3, 2, 2))})
>>> to_batch(t, "numpy")["emb"].shape
(3, 2, 2)
"""

from __future__ import annotations

import operator
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from runtime.store import table_nbytes

if TYPE_CHECKING:
    import pandas as pd

Block = pa.Table

BATCH_FORMATS = ("default", "numpy", "pandas", "pyarrow", "cupy")


def check_batch_format(batch_format: str | None, where: str) -> str:
    """Normalise ``batch_format`` (None = numpy), raising a clear error on a bad one."""
    fmt = "numpy" if batch_format in (None, "default") else batch_format
    if fmt not in BATCH_FORMATS:
        raise ValueError(
            f"{where}: unknown batch_format {batch_format!r}; "
            f"use one of {', '.join(repr(f) for f in BATCH_FORMATS)}"
        )
    return fmt


# -- columns -------------------------------------------------------------------


def column_to_numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """One column as numpy: zero-copy for null-free primitives, N-d for tensors."""
    if isinstance(col, pa.ChunkedArray):
        if col.num_chunks == 0:  # combine_chunks() of nothing imports pandas
            col = pa.nulls(0, col.type)
        else:
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    dtype = _NUMPY_TYPES.get(col.type.id)
    if dtype is not None and col.null_count == 0:  # the common case first: a view
        return _primitive_view(col, dtype)
    if isinstance(col.type, pa.FixedShapeTensorType):
        return col.to_numpy_ndarray()
    if pa.types.is_fixed_size_list(col.type) and col.null_count == 0:
        inner = column_to_numpy(col.flatten())
        return (
            inner.reshape(len(col), -1, *inner.shape[1:])
            if inner.ndim > 1
            else (inner.reshape(len(col), col.type.list_size))
        )
    if col.null_count == 0:
        if pa.types.is_boolean(col.type):
            data = col.buffers()[1]
            if data is None:
                return np.zeros(0, bool)
            bits = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
            return bits[col.offset : col.offset + len(col)].astype(bool)
    return col.to_numpy(zero_copy_only=False)


# Arrow type id -> numpy dtype of the null-free primitives viewed in place.
# (pyarrow's own to_numpy first asks whether pandas is installed, which imports
# it: ~0.5 s of a run that never uses pandas.)
_NUMPY_TYPES = {
    pa.int8().id: np.dtype(np.int8),
    pa.int16().id: np.dtype(np.int16),
    pa.int32().id: np.dtype(np.int32),
    pa.int64().id: np.dtype(np.int64),
    pa.uint8().id: np.dtype(np.uint8),
    pa.uint16().id: np.dtype(np.uint16),
    pa.uint32().id: np.dtype(np.uint32),
    pa.uint64().id: np.dtype(np.uint64),
    pa.float16().id: np.dtype(np.float16),
    pa.float32().id: np.dtype(np.float32),
    pa.float64().id: np.dtype(np.float64),
}


_ARROW_TYPES = {dtype: pa.type_for_alias(str(dtype)) for dtype in _NUMPY_TYPES.values()}


def binary_array(values: Sequence[bytes], arrow_type: pa.DataType | None = None) -> pa.Array:
    """A ``binary`` (or ``string``, with ``arrow_type=pa.string()``) array of
    ``values`` built from its buffers: pyarrow's conversion of Python values
    imports pandas first (~0.3 s in each process)."""
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum([len(v) for v in values], out=offsets[1:])
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(values))]
    return pa.Array.from_buffers(arrow_type or pa.binary(), len(values), buffers)


def fill_nulls(col: pa.Array | pa.ChunkedArray, value: Any) -> pa.Array | pa.ChunkedArray:
    """``pc.fill_null(col, value)``, skipped when ``col`` has no nulls: making
    the Arrow scalar from a Python value imports pandas (~0.3 s per process)."""
    if col.null_count == 0:
        return col
    import pyarrow.compute as pc

    return pc.fill_null(col, value)


def _primitive_view(col: pa.Array, dtype: np.dtype) -> np.ndarray:
    """A read-only numpy view of a null-free primitive array's data buffer."""
    data = col.buffers()[1]
    if data is None:  # an empty array may have no buffer
        return np.empty(0, dtype)
    view = np.frombuffer(data, dtype=dtype, count=len(col), offset=col.offset * dtype.itemsize)
    view.flags.writeable = False
    return view


def array_from_numpy(arr: Any, name: str = "", mask: np.ndarray | None = None) -> pa.Array:
    """A numpy (or list-like) column as Arrow; ndim > 1 becomes a fixed-shape tensor.
    ``mask`` (1-d primitives only): True where the value is null."""
    if isinstance(arr, (pa.Array, pa.ChunkedArray)):
        return arr
    a = np.asarray(arr) if not isinstance(arr, np.ndarray) else arr
    if mask is not None and mask.any():
        arrow_type = _ARROW_TYPES.get(a.dtype)
        if a.ndim != 1 or arrow_type is None:
            return pa.array(a, mask=mask)
        validity = pa.py_buffer(np.packbits(~mask, bitorder="little"))
        data = pa.py_buffer(np.ascontiguousarray(a))
        return pa.Array.from_buffers(arrow_type, len(a), [validity, data], int(mask.sum()))
    if a.ndim > 1:
        # A size-1 axis may carry a zero stride (e.g. ``x[None]``), which numpy
        # still calls contiguous but Arrow rejects; a fresh copy has real strides.
        if not a.flags.c_contiguous or 0 in a.strides:
            a = a.copy(order="C")
        return pa.FixedShapeTensorArray.from_numpy_ndarray(a)
    if a.dtype == object:
        return pa.array(list(a))
    if a.dtype == bool:
        bits = pa.py_buffer(np.packbits(a, bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), len(a), [None, bits])
    arrow_type = _ARROW_TYPES.get(a.dtype)
    if arrow_type is not None and a.flags.c_contiguous:
        # The buffer as it is: pa.array would first ask whether pandas is
        # installed (importing it) and check every value for NaN-as-null.
        return pa.Array.from_buffers(arrow_type, len(a), [None, pa.py_buffer(a)])
    if a.dtype.kind in "US":
        return _fixed_width_strings(a)
    try:
        return pa.array(a)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise TypeError(f"column {name!r}: cannot convert {a.dtype} values to Arrow: {e}") from e


def _fixed_width_strings(a: np.ndarray) -> pa.Array:
    """A 1-d numpy ``U`` (str) or ``S`` (bytes) array as Arrow string or binary.
    ``pa.array`` first imports pandas (0.43 s) to ask whether this is a pandas
    object; ASCII text and bytes are cut from the array's own buffer instead.
    numpy pads each value with NULs to the dtype's width (its values never
    end in NUL), so a value is its cells up to the last non-NUL one."""
    n = len(a)
    if a.dtype.kind == "U":
        cells = np.ascontiguousarray(a).view(np.uint32).reshape(n, a.dtype.itemsize // 4)
        if cells.size and int(cells.max()) >= 128:
            return pa.array(a)  # non-ASCII: pyarrow's UTF-32 -> UTF-8 conversion
        cells, arrow_type = cells.astype(np.uint8), pa.string()
    else:
        cells = np.ascontiguousarray(a).view(np.uint8).reshape(n, a.dtype.itemsize)
        arrow_type = pa.binary()
    width = cells.shape[1]
    filled = cells != 0
    lengths = np.where(filled.any(axis=1), width - np.argmax(filled[:, ::-1], axis=1), 0)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] >= 2**31:
        arrow_type = pa.large_string() if arrow_type == pa.string() else pa.large_binary()
    else:
        offsets = offsets.astype(np.int32)
    data = cells[np.arange(width) < lengths[:, None]]  # row-major: values in order
    return pa.Array.from_buffers(arrow_type, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


# -- batches -------------------------------------------------------------------


def to_batch(table: pa.Table, batch_format: str) -> Any:
    """Convert a block to ``batch_format`` ("numpy"/"default", "pandas", "pyarrow")."""
    if batch_format in ("numpy", "default", None):
        batches = table.to_batches()
        if len(batches) == 1:  # one chunk a column: its arrays directly (~10 us less a batch)
            return {
                n: column_to_numpy(c) for n, c in zip(batches[0].schema.names, batches[0].columns)
            }
        return {name: column_to_numpy(table.column(i)) for i, name in enumerate(table.column_names)}
    if batch_format == "pandas":
        return table_to_pandas(table)
    if batch_format == "pyarrow":
        return table
    raise ValueError(f"unknown batch_format {batch_format!r}")


def table_to_pandas(table: pa.Table) -> pd.DataFrame:
    """A block as a DataFrame; tensor columns become a column of N-d arrays per row."""
    tensor_cols = [
        n
        for n, t in zip(table.column_names, table.schema.types)
        if isinstance(t, pa.FixedShapeTensorType)
    ]
    if not tensor_cols:
        return table.to_pandas()
    plain = table.drop_columns(tensor_cols).to_pandas()
    for name in tensor_cols:
        arr = column_to_numpy(table.column(name))
        plain[name] = list(arr)
    return plain[table.column_names]


def from_batch(batch: Any, where: str = "") -> pa.Table:
    """Convert what a UDF returned (numpy dict, DataFrame, Arrow table) to a block.

    ``where`` names the caller (e.g. ``map_batches(normalize)``) in error messages.
    """
    if isinstance(batch, pa.Table):
        return batch
    if isinstance(batch, pa.RecordBatch):
        return pa.Table.from_batches([batch])
    # pandas is imported only when used (it doubles `import dataflow` and worker
    # start-up): a batch can only be a DataFrame once pandas has its DataFrame
    # (while another thread imports it, sys.modules holds it half-built).
    frame_type = getattr(sys.modules.get("pandas"), "DataFrame", None)
    if frame_type is not None and isinstance(batch, frame_type):
        return pandas_to_table(batch)
    if isinstance(batch, Mapping):
        columns = {str(k): array_from_numpy(_to_host(v), str(k)) for k, v in batch.items()}
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"{where or 'batch'}: columns have different lengths {lengths}; "
                "every column of a batch must have one value per row"
            )
        if not columns:
            return pa.table({})
        return pa.Table.from_arrays(list(columns.values()), list(columns))
    raise TypeError(
        f"{where or 'batch'}: returned {type(batch).__name__}; a batch must be a "
        "dict of numpy arrays, a pandas.DataFrame or a pyarrow.Table"
    )


def pandas_to_table(df: pd.DataFrame) -> pa.Table:
    """DataFrame -> block; columns of equal-shape ndarrays become tensor columns."""
    tensor_cols = [
        c
        for c in df.columns
        if df[c].dtype == object and len(df) and isinstance(df[c].iloc[0], np.ndarray)
    ]
    if not tensor_cols:
        return _without_pandas_metadata(pa.Table.from_pandas(df, preserve_index=False))
    table = pa.Table.from_pandas(df.drop(columns=tensor_cols), preserve_index=False)
    for c in tensor_cols:
        table = table.append_column(str(c), array_from_numpy(np.stack(df[c].to_numpy()), str(c)))
    return _without_pandas_metadata(table.select([str(c) for c in df.columns]))


def _without_pandas_metadata(table: pa.Table) -> pa.Table:
    """pandas' own schema metadata (its index and dtypes) would follow the block
    into written files and later ``to_pandas`` calls: drop it, keep the rest."""
    meta = table.schema.metadata
    if not meta or b"pandas" not in meta:
        return table
    rest = {k: v for k, v in meta.items() if k != b"pandas"}
    return table.replace_schema_metadata(rest or None)


def keep_types(table: pa.Table, like: pa.Schema) -> pa.Table:
    """``table`` (a UDF's pandas or numpy batch, converted back) with each column
    that the round trip retyped cast back to the type the same-named column has
    in ``like`` (the batch's input schema), where that is lossless.

    Only changes that the batch format makes, never ones a UDF asks for, are
    undone: pandas' ``str`` dtype is ``large_string`` and its ``category`` a
    dictionary of ``large_string`` with int8 indices; numpy drops dictionaries and
    time zones; pandas turns list cells into tensors. A UDF that computes floats
    from ints keeps its floats. A cast that fails (e.g. > 2 GiB of strings for
    ``string``) leaves the column as it is.

    >>> t = pa.table({"s": pa.array(["a"], pa.large_string())})
    >>> keep_types(t, pa.schema([("s", pa.string())])).schema.field("s").type
    DataType(string)
    """
    retype = _retypes(table.schema, like)
    if not retype:
        return table
    columns = table.columns
    changed = False
    for i, want in retype:
        try:
            column, have = columns[i], columns[i].type
            if isinstance(have, pa.FixedShapeTensorType):
                column = pa.chunked_array([c.storage for c in column.chunks], have.storage_type)
            columns[i] = column.cast(want)
            changed = True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            continue
    if not changed:
        return table
    fields = [table.schema.field(i).with_type(c.type) for i, c in enumerate(columns)]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, table.schema.metadata))


_RECENT_RETYPES: list[tuple[pa.Schema, pa.Schema, tuple]] = []


def _retypes(have: pa.Schema, like: pa.Schema) -> tuple[tuple[int, pa.DataType], ...]:
    """(column index, type to cast back to) for each column of a ``have`` batch
    that the format round trip retyped. Every batch of a UDF has the same pair
    of schemas, so the answer is kept for the last few pairs, found by schema
    equality (~0.1 us; hashing a schema takes ~8 us, checking ~10 us a column)."""
    global _RECENT_RETYPES
    recent = _RECENT_RETYPES
    for seen_have, seen_like, answer in recent:
        if have == seen_have and like == seen_like:
            return answer
    answer = _find_retypes(have, like)
    # A new list, not the old one changed: driver threads may be reading it.
    _RECENT_RETYPES = [(have, like, answer), *recent[:7]]
    return answer


def _find_retypes(have: pa.Schema, like: pa.Schema) -> tuple[tuple[int, pa.DataType], ...]:
    if have.equals(like):
        return ()
    out = []
    for i, field in enumerate(have):
        index = like.get_field_index(field.name)
        if index < 0:
            continue
        want = like.field(index).type
        if want != field.type and _format_changed(want, field.type):
            out.append((i, want))
    return tuple(out)


_STRINGS = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
_BINARIES = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)
_LISTS = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)


def _same_family(a: pa.DataType, b: pa.DataType) -> bool:
    """Both string-like, or both binary-like (any offset width or view)."""
    return any(
        is_a(a) and any(is_b(b) for is_b in family)
        for family in (_STRINGS, _BINARIES)
        for is_a in family
    )


def _format_changed(want: pa.DataType, have: pa.DataType) -> bool:
    """Whether ``have`` is what a pandas / numpy round trip makes of ``want``."""
    if _same_family(want, have):
        return True
    if pa.types.is_dictionary(want):
        value = have.value_type if pa.types.is_dictionary(have) else have
        return value == want.value_type or _same_family(want.value_type, value)
    if pa.types.is_timestamp(want) and pa.types.is_timestamp(have):
        return want.tz is not None and have.tz is None
    if isinstance(have, pa.FixedShapeTensorType) and len(have.shape) == 1:
        return any(is_list(want) for is_list in _LISTS) and want.value_type == have.value_type
    return False


def _to_host(value: Any) -> Any:
    """cupy / torch arrays come back to host memory; anything else passes."""
    if hasattr(value, "__cuda_array_interface__") and hasattr(value, "get"):
        return value.get()
    if type(value).__module__.startswith("torch"):
        return value.detach().cpu().numpy()
    return value


# -- rows ----------------------------------------------------------------------


def rows_to_table(rows: list[Mapping[str, Any]], where: str = "") -> pa.Table:
    """Row dicts -> block (columns in first-seen order; N-d array values become tensors)."""
    if not rows:
        return pa.table({})
    first = rows[0]
    width = len(first) if isinstance(first, dict) else -1
    columns: dict[str, Any] | None = None
    # Fast path, C loops only: when every row holds the first row's keys, rows
    # whose lengths add up to width x rows have exactly those keys.
    if width >= 0:
        try:
            if sum(map(len, rows)) == width * len(rows):
                columns = {n: list(map(operator.itemgetter(n), rows)) for n in first}
        except (KeyError, TypeError, IndexError):  # other keys, or not a mapping
            columns = None
    if columns is None:
        names: dict[str, None] = {}
        for r in rows:
            if not isinstance(r, Mapping):
                raise TypeError(
                    f"{where or 'row'}: expected a dict per row, got {type(r).__name__}"
                )
            names.update(dict.fromkeys(r))
        columns = {n: [r.get(n) for r in rows] for n in names}
    for n, values in columns.items():
        if isinstance(values[0], np.ndarray) and values[0].ndim >= 1:
            columns[n] = array_from_numpy(np.stack(values), n)
        else:
            columns[n] = pa.array(values)
    return pa.table(columns)


def iter_rows(table: pa.Table) -> Iterator[dict[str, Any]]:
    """Rows of a block as dicts (tensor cells as numpy arrays)."""
    tensor = {
        n
        for n, t in zip(table.column_names, table.schema.types)
        if isinstance(t, pa.FixedShapeTensorType)
    }
    if not tensor:
        # A list iterator, not a generator: per-row UDFs pull millions of rows
        # and a generator resume per row costs a few % of a cheap UDF.
        return iter(table.to_pylist())
    return _iter_tensor_rows(table, tensor)


def _iter_tensor_rows(table: pa.Table, tensor: set[str]) -> Iterator[dict[str, Any]]:
    arrays: dict[str, Any] = {n: column_to_numpy(table.column(n)) for n in tensor}
    for n in tensor:  # a null tensor cell is None, not the zeros under it
        if table.column(n).null_count:
            valid = table.column(n).is_valid().to_numpy(zero_copy_only=False)
            arrays[n] = [a if ok else None for a, ok in zip(arrays[n], valid)]
    plain = (
        table.drop_columns(list(tensor)).to_pylist()
        if table.num_columns > len(tensor)
        else ([{} for _ in range(table.num_rows)])
    )
    for i, row in enumerate(plain):
        row.update({n: arrays[n][i] for n in tensor})
        yield {n: row[n] for n in table.column_names}


# -- sizing and slicing ---------------------------------------------------------


def split_to_max_size(table: pa.Table, max_bytes: int) -> Iterator[pa.Table]:
    """Slices of ``table`` of at most ~``max_bytes`` each (zero-copy)."""
    nbytes = table_nbytes(table)
    if nbytes <= max_bytes or table.num_rows <= 1:
        yield table
        return
    pieces = -(-nbytes // max_bytes)
    step = -(-table.num_rows // pieces)
    for start in range(0, table.num_rows, step):
        yield table.slice(start, step)


def concat(tables: Iterable[pa.Table]) -> pa.Table:
    """Concatenate blocks, unifying schemas (nulls fill missing columns)."""
    tables = [t for t in tables]
    if not tables:
        return pa.table({})
    if len(tables) == 1:
        return tables[0]
    non_empty = [t for t in tables if t.num_columns] or tables[:1]
    return pa.concat_tables(non_empty, promote_options="default")


def rebatch(tables: Iterable[pa.Table], batch_size: int | None) -> Iterator[pa.Table]:
    """Re-slice a stream of blocks into batches of exactly ``batch_size`` rows
    (the last may be smaller); ``None`` passes blocks through whole."""
    if batch_size is None:
        for t in tables:
            if t.num_rows:
                yield t
        return
    pending: list[pa.Table] = []
    have = 0
    for t in tables:
        # Slices of the block itself, not of shrinking remainders: each slice
        # of a table costs O(columns x chunks), and a remainder is one more.
        start, rows = 0, t.num_rows
        while start < rows:
            take = min(batch_size - have, rows - start)
            pending.append(t.slice(start, take))
            have += take
            start += take
            if have == batch_size:
                yield concat(pending) if len(pending) > 1 else pending[0]
                pending, have = [], 0
    if have:
        yield concat(pending) if len(pending) > 1 else pending[0]
