"""Block-level partitioning for the exchange: pure functions over ``pa.Table``.

Each all-to-all operation cuts every input block into partitions on the map
side and rebuilds one output per partition on the reduce side:

* ``hash_partition``: rows with equal keys land in the same partition, on
  every block and in every process (groupby, join, map_groups). Key types are
  normalised first (any integer width hashes as int64, strings by value), so
  an int32 key on one side of a join meets an int64 key on the other.
* ``range_partition``: rows cut by sampled ``boundaries`` so that partition
  ``i`` sorts before partition ``i + 1`` (sort); ``top_k`` keeps a block's
  first rows when only they are needed (sort then limit).
* ``random_keys``: a 64-bit key per row derived only from the seed, the
  block's id and the row's position; sorting by it is the shuffle, so the
  permutation does not depend on the number of partitions or workers.

>>> t = pa.table({"k": ["a", "b", "a"], "v": [1, 2, 3]})
>>> [p.num_rows for p in hash_partition(t, ["k"], 1)]
[3]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataflow.block import array_from_numpy, column_to_numpy, fill_nulls

SortKey = Sequence[tuple[str, str, str]]
"""pyarrow sort keys: ``[(column, "ascending" | "descending", "at_end"), ...]``."""

_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a bijective, well-spread mix of uint64 values."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        return x ^ (x >> np.uint64(31))


_SPREAD = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is invertible mod 2**64
_SPREAD_INV = np.uint64(pow(int(_SPREAD), -1, 1 << 64))


def _spread(x: np.ndarray) -> np.ndarray:
    """Fold the high half into the low half, then multiply by an odd constant:
    a bijection that gives whole-number doubles (all-zero low bits) well-spread
    low bits, undone in two steps by ``_unspread`` (splitmix's inverse needed
    loops: 30% of a 1M-key groupby)."""
    with np.errstate(over="ignore"):
        return (x ^ (x >> np.uint64(32))) * _SPREAD


def _unspread(y: np.ndarray) -> np.ndarray:
    """The inverse of ``_spread`` (the high half survives the fold unchanged)."""
    with np.errstate(over="ignore"):
        x = y * _SPREAD_INV
        return x ^ (x >> np.uint64(32))


def spread_float_keys(table: pa.Table, keys: Sequence[str]) -> tuple[pa.Table, dict]:
    """``table`` with its float key columns replaced by a bijective int64 mix of
    their bits, and what ``restore_float_keys`` needs to undo it.

    pyarrow's hash tables degrade badly on float keys holding whole numbers
    (their low bits are all zero): ``group_by`` over 1M distinct such doubles
    takes ~40x longer than over 1M integers. Spread bits hash well. -0.0 and
    0.0, and every NaN, are made one key first, as ``group_by`` treats them.
    """
    types = {}
    for name in keys:
        t = table.schema.field(name).type
        if pa.types.is_float32(t) or pa.types.is_float64(t):
            col = table.column(name)
            zero, nan = pa.scalar(0.0, t), pa.scalar(float("nan"), t)
            col = pc.if_else(pc.is_nan(col), nan, pc.add(col, zero))
            table = table.set_column(
                table.schema.get_field_index(name), name, _map_bits(col, t, pa.int64())
            )
            types[name] = t
    return table, types


def restore_float_keys(table: pa.Table, types: dict) -> pa.Table:
    """Undo ``spread_float_keys`` on the key columns of ``table``."""
    for name, t in types.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, _map_bits(table.column(name), pa.int64(), t))
    return table


def _map_bits(col: pa.ChunkedArray, src: pa.DataType, dst: pa.DataType) -> pa.ChunkedArray:
    """Float bits -> mixed int64 (``dst`` int64) or back; validity is kept as is."""
    width = {4: np.uint32, 8: np.uint64}
    if col.num_chunks > 1:
        # Chunks of one operator's output share a buffer at growing offsets:
        # mapping each from its buffer's start would be quadratic (31 chunks of
        # a 1M-row group_by output: 0.26 s, combined: 0.014 s).
        col = pa.chunked_array([col.combine_chunks()])
    chunks = []
    for chunk in col.chunks:
        validity, data = chunk.buffers()
        n = chunk.offset + len(chunk)
        raw = np.frombuffer(data, dtype=width[src.byte_width], count=n)
        if pa.types.is_integer(dst):
            values = _spread(raw.astype(np.uint64))
        else:
            values = _unspread(raw).astype(width[dst.byte_width])
        chunks.append(
            pa.Array.from_buffers(
                dst, len(chunk), [validity, pa.py_buffer(values)], chunk.null_count, chunk.offset
            )
        )
    return pa.chunked_array(chunks, dst)


# -- hashing -----------------------------------------------------------------------


def _column_hash(col: pa.ChunkedArray, name: str) -> np.ndarray:
    """A uint64 per row that depends only on the value (nulls hash alike)."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    t = arr.type
    if pa.types.is_dictionary(t):
        arr = arr.dictionary_decode()
        t = arr.type
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        values = column_to_numpy(fill_nulls(arr.cast(pa.int64(), safe=False), 0))
        h = _mix64(values.view(np.uint64))
    elif pa.types.is_floating(t):
        # -0.0 == 0.0 and every NaN is one group, as in pyarrow's group_by.
        values = column_to_numpy(fill_nulls(arr.cast(pa.float64()), 0.0)) + 0.0
        values[np.isnan(values)] = np.nan
        h = _mix64(values.view(np.uint64))
    elif pa.types.is_temporal(t):
        int_type = pa.int32() if t.bit_width == 32 else pa.int64()
        values = column_to_numpy(fill_nulls(arr.view(int_type), 0))
        h = _mix64(values.astype(np.int64).view(np.uint64))
    elif (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or (pa.types.is_large_binary(t) or pa.types.is_string_view(t) or pa.types.is_binary_view(t))
    ):
        # Hash each distinct value once, then spread to rows through the codes.
        encoded = arr.dictionary_encode()
        per_value = bytes_hash(encoded.dictionary)
        codes = column_to_numpy(fill_nulls(encoded.indices, 0))
        h = per_value[codes] if len(per_value) else np.zeros(len(arr), np.uint64)
    else:
        raise TypeError(
            f"cannot partition by column {name!r} of type {t}: group, join and "
            "map_groups keys must be numbers, booleans, strings, binary or dates/times"
        )
    if arr.null_count:
        h = np.where(column_to_numpy(arr.is_null()), _NULL_HASH, h)
    return h


_POLY = np.uint64(0x100000001B3)  # FNV-1's 64-bit prime: odd, so powers never vanish
_HASH_CHUNK_BYTES = 1 << 22  # bounds the per-byte temporaries (8 bytes per byte)


def bytes_hash(arr: pa.Array) -> np.ndarray:
    """A uint64 per string/binary value, the same in every process: a polynomial
    hash of its bytes (mod 2**64), mixed with its length. Vectorized over the
    value buffer with numpy, so no Python per value (pandas' siphash needed
    pandas' import, ~0.3 s of every worker that grouped by a string)."""
    t = arr.type
    if pa.types.is_string(t):
        arr, width = arr.view(pa.binary()), np.int32
    elif pa.types.is_binary(t):
        width = np.int32
    elif pa.types.is_large_string(t):
        arr, width = arr.view(pa.large_binary()), np.int64
    else:  # large binary, or a view type (cast: views have no offsets buffer)
        arr, width = arr.cast(pa.large_binary()), np.int64
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=width)[arr.offset : arr.offset + len(arr) + 1]
    offsets = offsets.astype(np.int64)
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    lengths = np.diff(offsets)
    out = np.empty(len(arr), dtype=np.uint64)
    row = 0
    while row < len(arr):
        # The most rows from ``row`` whose bytes fit a chunk (at least one).
        end = int(np.searchsorted(offsets, offsets[row] + _HASH_CHUNK_BYTES, "right")) - 1
        end = min(max(end, row + 1), len(arr))
        base = offsets[row]
        starts, stops = offsets[row:end] - base, offsets[row + 1 : end + 1] - base
        body = data[base : base + stops[-1]].astype(np.uint64)
        # Byte j of the chunk weighs P**j; a value's sum, times P**-start, is
        # its own polynomial hash (P is odd, so invertible mod 2**64).
        powers, inverses = _powers(len(body) + 1)
        sums = np.concatenate([np.zeros(1, np.uint64), np.cumsum(body * powers[:-1])])
        out[row:end] = (sums[stops] - sums[starts]) * inverses[starts]
        row = end
    return _mix64(out + lengths.astype(np.uint64) * _MIX1)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """``_POLY ** k`` and ``_POLY ** -k`` mod 2**64 for k < n (uint64 arithmetic wraps)."""
    inverse = np.uint64(pow(int(_POLY), -1, 1 << 64))
    powers = np.cumprod(np.full(n, _POLY, dtype=np.uint64))
    inverses = np.cumprod(np.full(n, inverse, dtype=np.uint64))
    powers[1:], inverses[1:] = powers[:-1], inverses[:-1]
    powers[0] = inverses[0] = 1
    return powers, inverses


def hash_rows(table: pa.Table, keys: Sequence[str]) -> np.ndarray:
    """A uint64 hash per row of the ``keys`` columns (order-sensitive combination)."""
    h = np.zeros(table.num_rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for name in keys:
            h = _mix64(h * np.uint64(31) + _column_hash(table.column(name), name))
    return h


def split_by_partition(table: pa.Table, part: np.ndarray, n: int) -> list[pa.Table]:
    """Cut ``table`` into ``n`` tables: row ``i`` goes to partition ``part[i]``.

    Rows keep their relative order inside a partition (a stable grouping)."""
    if n == 1:
        return [table]
    # Stable sort of small integers: numpy uses a linear-time radix sort.
    small = part.astype(np.uint8 if n <= 256 else np.uint16) if n <= 65536 else part
    order = np.argsort(small, kind="stable")
    counts = np.bincount(part, minlength=n)
    grouped = table.take(array_from_numpy(order))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [grouped.slice(int(bounds[i]), int(counts[i])) for i in range(n)]


def hash_partition(table: pa.Table, keys: Sequence[str], n: int) -> list[pa.Table]:
    """Cut ``table`` into ``n`` partitions by the hash of its ``keys`` columns."""
    if n == 1 or table.num_rows == 0:
        return [table] + [table.slice(0, 0)] * (n - 1)
    part = (hash_rows(table, keys) % np.uint64(n)).astype(np.int64)
    return split_by_partition(table, part, n)


# -- random shuffle ----------------------------------------------------------------


def block_seed(seed: int, block_id: Sequence[int]) -> np.uint64:
    """A 64-bit stream id for one block, from the shuffle seed and the block's id."""
    state = _mix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
    with np.errstate(over="ignore"):
        for part in block_id:
            state = _mix64(state + np.uint64(part & 0xFFFFFFFFFFFFFFFF) + _NULL_HASH)
    return state[0]


def random_keys(seed: int, block_id: Sequence[int], num_rows: int) -> np.ndarray:
    """The shuffle key of each row of a block: a counter-based random uint64."""
    with np.errstate(over="ignore"):
        counter = np.arange(num_rows, dtype=np.uint64) * _NULL_HASH + block_seed(seed, block_id)
    return _mix64(counter)


def key_range_partition(keys: np.ndarray, n: int) -> np.ndarray:
    """Partition of each uint64 key when ``[0, 2**64)`` is cut into ``n`` equal
    ranges (monotone in the key, so partitions concatenate in key order)."""
    return (((keys >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32)).astype(np.int64)


def key_order(keys: pa.ChunkedArray) -> np.ndarray:
    """The stable ascending order of uint64 shuffle keys. Random 64-bit keys
    almost never tie, so an unstable sort (several times faster) gives the
    same order; a stable sort runs only when there is a tie."""
    values = column_to_numpy(keys)
    order = np.argsort(values)
    ordered = values[order]
    if np.any(ordered[1:] == ordered[:-1]):
        order = np.argsort(values, kind="stable")
    return order


# -- sort --------------------------------------------------------------------------


def sort_keys(keys: Sequence[str], descending: Sequence[bool]) -> list[tuple[str, str, str]]:
    """pyarrow sort keys with nulls last in either direction, as pandas sorts."""
    return [(k, "descending" if d else "ascending", "at_end") for k, d in zip(keys, descending)]


def sort_table(table: pa.Table, key: SortKey) -> pa.Table:
    """Sort by ``key`` (see ``sort_keys``); NaN sorts after numbers, before nulls."""
    if table.num_rows <= 1:
        return table
    return table.take(pc.sort_indices(table, sort_keys=list(key)))


def sample_rows(table: pa.Table, columns: Sequence[str], k: int, seed: int) -> pa.Table:
    """Up to ``k`` rows of ``columns``, drawn without replacement (seeded)."""
    n = table.num_rows
    picked = table.select(list(columns))
    if n <= k:
        return picked
    idx = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    return picked.take(array_from_numpy(idx))


def boundaries_from_samples(samples: pa.Table, key: SortKey, n: int) -> pa.Table:
    """``n - 1`` rows cutting the sorted ``samples`` into ``n`` equal runs."""
    if n <= 1 or samples.num_rows == 0:
        return samples.slice(0, 0)
    ordered = sort_table(samples, key)
    m = ordered.num_rows
    picks = np.minimum(m - 1, (np.arange(1, n) * m) // n)
    return ordered.take(array_from_numpy(picks))


def range_partition(table: pa.Table, key: SortKey, boundaries: pa.Table) -> list[pa.Table]:
    """Cut ``table`` at ``boundaries`` into ``len(boundaries) + 1`` partitions such
    that partition ``i`` sorts before partition ``i + 1``; a partition's rows are
    not necessarily sorted (the reduce side sorts them).

    A row equal to boundary ``j`` goes to partition ``j`` on every block, so
    ties resolve the same way everywhere. One numeric or temporal key takes a
    vectorized binary search (rows keep their order); other keys sort the block
    together with the boundary rows (stable, boundaries last among equals)."""
    n = boundaries.num_rows + 1
    if n == 1 or table.num_rows == 0:
        return [sort_table(table, key)] + [table.slice(0, 0)] * (n - 1)
    part = _searchsorted_partition(table, key, boundaries)
    if part is not None:
        return split_by_partition(table, part, n)
    names = [k[0] for k in key]
    probe = table.select(names)
    combined = pa.concat_tables(
        [probe, boundaries.select(names).cast(probe.schema)], promote_options="none"
    )
    order = column_to_numpy(pc.sort_indices(combined, sort_keys=list(key)))
    is_boundary = order >= table.num_rows
    part_of_row = np.cumsum(is_boundary)[~is_boundary]
    counts = np.bincount(part_of_row, minlength=n)
    ordered = table.take(array_from_numpy(order[~is_boundary]))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [ordered.slice(int(bounds[i]), int(counts[i])) for i in range(n)]


def _as_numbers(arr: pa.Array) -> np.ndarray | None:
    """``arr``'s values as a numpy array that orders like Arrow (nulls filled
    with 0), or None for types without such a view."""
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return column_to_numpy(fill_nulls(arr, 0))
    if pa.types.is_timestamp(t) or pa.types.is_date(t) or pa.types.is_duration(t):
        int_type = pa.int32() if t.bit_width == 32 else pa.int64()
        return column_to_numpy(fill_nulls(arr.view(int_type), 0))
    return None


def _searchsorted_partition(
    table: pa.Table, key: SortKey, boundaries: pa.Table
) -> np.ndarray | None:
    """The partition of each row by one numeric key: the number of boundaries
    that sort strictly before it. None when the fast path does not apply (several
    keys, another type, a null or NaN boundary)."""
    if len(key) != 1:
        return None
    name, order, _ = key[0]
    col = table.column(name)
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    bounds_arr = boundaries.column(name).combine_chunks()
    if bounds_arr.type != arr.type:
        bounds_arr = bounds_arr.cast(arr.type)
    values, bounds = _as_numbers(arr), _as_numbers(bounds_arr)
    if values is None or bounds_arr.null_count or np.isnan(bounds.astype(np.float64)).any():
        return None
    n = len(bounds) + 1
    if order == "ascending":
        part = np.searchsorted(bounds, values, side="left")
    else:  # boundaries descend: count those greater than the row
        part = len(bounds) - np.searchsorted(bounds[::-1], values, side="right")
    # Nulls and NaN sort after every value in either direction ("at_end").
    if pa.types.is_floating(arr.type):
        part[np.isnan(values)] = n - 1
    if arr.null_count:
        part[column_to_numpy(arr.is_null())] = n - 1
    return part


def top_k(table: pa.Table, key: SortKey, k: int) -> pa.Table:
    """The first ``k`` rows of ``sort_table(table, key)`` without sorting the
    whole table (ties keep row order, as the stable sort does).

    >>> top_k(pa.table({"a": [3, 1, 2, 1]}), sort_keys(["a"], [False]), 2).to_pydict()
    {'a': [1, 1]}
    """
    if table.num_rows <= k:
        return sort_table(table, key)
    names = [name for name, _, _ in key]
    row = "__dataflow_row"
    while row in names:
        row += "_"
    probe = table.select(names).append_column(row, array_from_numpy(np.arange(table.num_rows)))
    # select_k orders NaN then nulls last in either direction, as "at_end" does.
    order = [(name, direction) for name, direction, _ in key] + [(row, "ascending")]
    return table.take(pc.select_k_unstable(probe, k, order))


# -- groups ------------------------------------------------------------------------


def group_starts(table: pa.Table, keys: Sequence[str]) -> np.ndarray:
    """Start row of each run of equal keys in a key-sorted table (nulls equal
    nulls, NaN equals NaN), plus ``num_rows`` at the end."""
    n = table.num_rows
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    changed = np.zeros(n - 1, dtype=bool)
    for name in keys:
        col = table.column(name)
        a, b = col.slice(1), col.slice(0, n - 1)
        same = fill_nulls(pc.equal(a, b), False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        same = pc.or_(same, both_null)
        if pa.types.is_floating(col.type):
            same = pc.or_(same, fill_nulls(pc.and_(pc.is_nan(a), pc.is_nan(b)), False))
        changed |= ~column_to_numpy(same)
    return np.concatenate([[0], np.flatnonzero(changed) + 1, [n]]).astype(np.int64)
