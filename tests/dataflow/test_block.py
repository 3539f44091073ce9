"""Block conversions: batch formats both ways, tensor columns, rows, slicing and re-batching."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from dataflow.block import (
    array_from_numpy,
    check_batch_format,
    column_to_numpy,
    concat,
    from_batch,
    iter_rows,
    rebatch,
    rows_to_table,
    split_to_max_size,
    to_batch,
)


def _table() -> pa.Table:
    emb = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    return from_batch(
        {"id": np.arange(3), "s": np.array(["a", "b", "c"], dtype=object), "emb": emb}
    )


def test_numpy_round_trip_keeps_values_and_tensor_shape():
    batch = to_batch(_table(), "numpy")
    assert batch["id"].tolist() == [0, 1, 2]
    assert batch["s"].tolist() == ["a", "b", "c"]
    assert batch["emb"].shape == (3, 2, 2)
    assert batch["emb"][2].tolist() == [[8.0, 9.0], [10.0, 11.0]]
    again = from_batch(batch)
    assert again.equals(_table())


def test_numpy_column_is_zero_copy_for_null_free_primitives():
    table = pa.table({"a": np.arange(1000, dtype=np.float64)})
    arr = column_to_numpy(table.column("a"))
    assert arr.ctypes.data == table.column("a").chunk(0).buffers()[1].address


def test_pandas_round_trip_with_tensor_column():
    df = to_batch(_table(), "pandas")
    assert list(df.columns) == ["id", "s", "emb"]
    assert df["emb"].iloc[1].tolist() == [[4.0, 5.0], [6.0, 7.0]]
    back = from_batch(df)
    assert back.column("emb").combine_chunks().to_numpy_ndarray().tolist() == (
        _table().column("emb").combine_chunks().to_numpy_ndarray().tolist()
    )
    assert back.column("id").to_pylist() == [0, 1, 2]


def test_pyarrow_format_is_identity():
    t = _table()
    assert to_batch(t, "pyarrow") is t
    assert from_batch(t) is t


def test_zero_stride_and_broadcast_arrays_become_tensor_columns():
    x = np.arange(6.0).reshape(2, 3)
    assert from_batch({"x": x[None]}).column("x").combine_chunks().to_numpy_ndarray().shape == (
        1,
        2,
        3,
    )
    b = np.broadcast_to(np.arange(3.0), (4, 3))
    got = from_batch({"b": b}).column("b").combine_chunks().to_numpy_ndarray()
    assert got.tolist() == [[0.0, 1.0, 2.0]] * 4


def test_bad_batches_name_the_caller():
    with pytest.raises(ValueError, match=r"map_batches\(f\): columns have different lengths"):
        from_batch({"a": np.arange(3), "b": np.arange(2)}, where="map_batches(f)")
    with pytest.raises(TypeError, match=r"map_batches\(f\): returned list"):
        from_batch([1, 2], where="map_batches(f)")
    with pytest.raises(ValueError, match="unknown batch_format 'arrow'"):
        check_batch_format("arrow", "iter_batches")
    assert check_batch_format(None, "x") == "numpy"


def test_rows_round_trip_with_tensor_cells():
    rows = list(iter_rows(_table()))
    assert [r["id"] for r in rows] == [0, 1, 2]
    assert rows[0]["emb"].tolist() == [[0.0, 1.0], [2.0, 3.0]]
    back = rows_to_table(rows)
    assert back.column("s").to_pylist() == ["a", "b", "c"]
    assert back.column("emb").combine_chunks().to_numpy_ndarray().shape == (3, 2, 2)
    with pytest.raises(TypeError, match=r"map\(f\): expected a dict per row, got int"):
        rows_to_table([1], where="map(f)")


def test_rows_with_other_keys_than_the_first_fill_nulls():
    # Lengths that add up as if every row had the first row's keys must not
    # hide a row with another key.
    table = rows_to_table([{"a": 1, "b": 2}, {"a": 3}, {"a": 5, "b": 6, "c": 7}])
    assert table.to_pydict() == {"a": [1, 3, 5], "b": [2, None, 6], "c": [None, None, 7]}
    assert rows_to_table([{"a": 1, "b": 2}, {"a": 3, "c": 4}]).to_pydict() == {
        "a": [1, 3],
        "b": [2, None],
        "c": [None, 4],
    }
    with pytest.raises(TypeError, match=r"map\(f\): expected a dict per row, got int"):
        rows_to_table([{"a": 1}, 5], where="map(f)")


def test_rebatch_gives_exact_sizes_across_block_boundaries():
    blocks = [pa.table({"x": np.arange(i * 7, i * 7 + 7)}) for i in range(5)]
    batches = list(rebatch(iter(blocks), 10))
    assert [b.num_rows for b in batches] == [10, 10, 10, 5]
    assert concat(batches).column("x").to_pylist() == list(range(35))
    assert [b.num_rows for b in rebatch(iter(blocks), None)] == [7] * 5


def test_split_to_max_size_is_zero_copy_and_covers_all_rows():
    t = pa.table({"x": np.arange(100_000, dtype=np.int64)})  # 800 kB
    parts = list(split_to_max_size(t, 100_000))
    assert len(parts) == 8
    assert all(p.nbytes <= 100_000 for p in parts)
    assert concat(parts).column("x").to_pylist() == list(range(100_000))


def test_concat_unifies_missing_columns_with_nulls():
    out = concat([pa.table({"a": [1]}), pa.table({"a": [2], "b": ["x"]})])
    assert out.to_pydict() == {"a": [1, 2], "b": [None, "x"]}


def test_from_pandas_frame_with_string_dtype():
    df = pd.DataFrame({"s": pd.array(["x", None], dtype="string"), "n": [1.5, 2.5]})
    t = from_batch(df)
    assert t.to_pydict() == {"s": ["x", None], "n": [1.5, 2.5]}


# -- column types through pandas / numpy batches --------------------------------


def _typed(fmt: str) -> pa.Table:
    table = pa.table(
        {
            "s": pa.array(["a", "b", None], pa.string()),
            "b": pa.array([b"x", b"y", b"z"], pa.binary()),
            "cat": pa.array(["u", "v", "u"]).dictionary_encode(),
            "ts": pa.array([0, 1_000_000, None], pa.timestamp("us", tz="Europe/Paris")),
            "l": pa.array([[1, 2], [3, 4], [5, 6]], pa.list_(pa.int32())),
            "i": pa.array([1, 2, 3], pa.int32()),
        }
    )
    # pyarrow 25 converts a pandas 3.1 tz-aware column through a deprecated
    # pandas API (a Pandas4Warning): pandas batches keep time zones themselves.
    return table.drop_columns(["ts"]) if fmt == "pandas" else table


@pytest.mark.parametrize("fmt", ["pandas", "numpy"])
def test_keep_types_undoes_what_the_batch_format_changed(fmt):
    from dataflow.block import keep_types

    table = _typed(fmt)
    back = from_batch(to_batch(table, fmt))
    assert not back.schema.equals(table.schema)  # the round trip alone retypes columns
    kept = keep_types(back, table.schema)
    assert kept.schema.equals(table.schema)
    assert kept.to_pydict() == table.to_pydict()
    assert kept.schema.metadata is None  # pandas' own metadata does not leak into blocks


def test_keep_types_leaves_what_the_udf_changed():
    from dataflow.block import keep_types

    like = pa.schema([("i", pa.int64()), ("s", pa.string()), ("ts", pa.timestamp("us"))])
    out = pa.table(
        {
            "i": pa.array([0.5, 1.0]),  # the UDF computed floats from ints
            "s": pa.array([1, 2]),  # ... or replaced strings by numbers
            "ts": pa.array([1, 2], pa.timestamp("ms")),  # ... or picked another unit
            "new": pa.array(["x", "y"], pa.large_string()),  # a column of its own
        }
    )
    assert keep_types(out, like).schema.equals(out.schema)


def test_keep_types_keeps_a_column_whose_cast_would_fail():
    from dataflow.block import keep_types

    out = pa.table({"s": pa.array(["a", "b"], pa.large_string()), "x": [1, 2]})
    like = pa.schema([("s", pa.dictionary(pa.int8(), pa.int64())), ("x", pa.int64())])
    kept = keep_types(out, like)
    assert kept.schema.field("s").type == pa.large_string()
    assert kept.column("s").to_pylist() == ["a", "b"]


@pytest.mark.parametrize(
    "values",
    [
        np.array(["a", "bc", "", "héllo wörld", "日本"]),  # non-ASCII: pyarrow converts
        np.array(["id-1", "", "a\x00b", "xyz"]),  # ASCII from the buffer, inner NUL kept
        np.array([b"x", b"", b"\x00y", b"abc"]),  # a leading NUL is kept
        np.array(["ab", "c", "def", "g"])[::2],  # strided
        np.array([], dtype="U3"),
        np.zeros(3, dtype="S1"),  # all empty
    ],
)
def test_numpy_strings_and_bytes_cross_to_arrow_exactly(values):
    got = array_from_numpy(values, "s")
    assert got.type == (pa.string() if values.dtype.kind == "U" else pa.binary())
    assert got.to_pylist() == values.tolist()


def test_from_batch_while_another_thread_imports_pandas(monkeypatch):
    """A module half-built by an import in another thread has no DataFrame yet:
    a numpy batch still converts (it raised AttributeError in a DataLoader run)."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "pandas", types.ModuleType("pandas"))
    table = from_batch({"x": np.arange(3)})
    assert table.column("x").to_pylist() == [0, 1, 2]
