"""Block-level partitioning (map side of the exchange) against pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from dataflow.exec.exchange.partition import (
    boundaries_from_samples,
    group_starts,
    hash_partition,
    hash_rows,
    key_order,
    key_range_partition,
    random_keys,
    range_partition,
    restore_float_keys,
    sample_rows,
    sort_keys,
    sort_table,
    spread_float_keys,
    top_k,
)


def _mixed_table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    ints = rng.integers(0, 7, n)
    strs = np.array(["a", "bb", "", "ccc", "d"], dtype=object)[rng.integers(0, 5, n)]
    return pa.table(
        {
            "i": pa.array(ints, mask=rng.random(n) < 0.1),
            "s": pa.array(list(strs), mask=rng.random(n) < 0.1),
            "f": pa.array(rng.normal(size=n).round(1), mask=rng.random(n) < 0.1),
            "row": np.arange(n),
        }
    )


def test_hash_partition_puts_equal_keys_together_across_blocks_and_types():
    t = _mixed_table(2000, 0)
    blocks = [t.slice(0, 700), t.slice(700, 1300)]
    # The same keys with a narrower int type must land in the same partitions.
    blocks.append(t.slice(0, 500).set_column(0, "i", t.column("i").slice(0, 500).cast(pa.int32())))
    where: dict[tuple, set[int]] = {}
    total = 0
    for b in blocks:
        parts = hash_partition(b, ["i", "s"], 5)
        assert len(parts) == 5
        for p, part in enumerate(parts):
            total += part.num_rows
            for i, s in zip(part.column("i").to_pylist(), part.column("s").to_pylist()):
                where.setdefault((i, s), set()).add(p)
    assert total == 2500
    assert all(len(ps) == 1 for ps in where.values())
    assert (None, None) in where  # null keys are a group like any other
    assert len({next(iter(ps)) for ps in where.values()}) == 5  # every partition used


def test_hash_partition_keeps_row_order_within_a_partition():
    t = _mixed_table(500, 1)
    for part in hash_partition(t, ["s"], 3):
        rows = part.column("row").to_numpy()
        assert np.all(np.diff(rows) > 0)


def test_hash_rows_is_value_based_for_floats_and_strings():
    a = pa.table({"f": [0.0, float("nan"), 1.5], "s": ["x", "y", None]})
    b = pa.table(
        {"f": [-0.0, float("nan"), 1.5], "s": pa.array(["x", "y", None], pa.large_string())}
    )
    np.testing.assert_array_equal(hash_rows(a, ["f", "s"]), hash_rows(b, ["f", "s"]))


def test_hash_partition_rejects_unhashable_key_type():
    t = pa.table({"l": [[1], [2]]})
    with pytest.raises(TypeError, match="column 'l'.*list"):
        hash_partition(t, ["l"], 2)


@pytest.mark.parametrize(
    "keys,descending",
    [
        (["i"], [False]),
        (["i"], [True]),
        (["s", "f"], [False, True]),
        (["f", "i", "s"], [True, False, True]),
    ],
)
def test_range_partition_then_sort_equals_pandas_sort(keys, descending):
    t = _mixed_table(3000, 2)
    blocks = [t.slice(i, 500) for i in range(0, 3000, 500)]
    key = sort_keys(keys, descending)
    samples = pa.concat_tables(sample_rows(b, keys, 20, seed=i) for i, b in enumerate(blocks))
    bounds = boundaries_from_samples(samples, key, 4)
    assert bounds.num_rows == 3
    parts = [range_partition(b, key, bounds) for b in blocks]
    out = pa.concat_tables(sort_table(pa.concat_tables(p[j] for p in parts), key) for j in range(4))
    expected = t.to_pandas().sort_values(
        keys, ascending=[not d for d in descending], na_position="last", kind="stable"
    )
    got = out.to_pandas()
    pd.testing.assert_frame_equal(
        got[keys].reset_index(drop=True), expected[keys].reset_index(drop=True)
    )
    assert sorted(got["row"]) == list(range(3000))
    assert all(p[j].num_rows < 3000 for p in parts for j in range(4))


def test_range_partition_handles_empty_block_and_no_boundaries():
    t = _mixed_table(10, 3)
    key = sort_keys(["i"], [False])
    parts = range_partition(t.slice(0, 0), key, boundaries_from_samples(t.select(["i"]), key, 3))
    assert [p.num_rows for p in parts] == [0, 0, 0]
    (only,) = range_partition(t, key, boundaries_from_samples(t.select(["i"]), key, 1))
    assert only.column("i").to_pylist() == sort_table(t, key).column("i").to_pylist()


def test_random_keys_are_deterministic_and_block_dependent():
    a = random_keys(42, (0,), 1000)
    np.testing.assert_array_equal(a, random_keys(42, (0,), 1000))
    assert len(np.unique(a)) == 1000
    assert not np.array_equal(a, random_keys(42, (1,), 1000))
    assert not np.array_equal(a, random_keys(43, (0,), 1000))
    part = key_range_partition(a, 4)
    # Monotone in the key: partition order is key order.
    order = np.argsort(a)
    assert np.all(np.diff(part[order]) >= 0)
    assert set(np.bincount(part)) and np.bincount(part).min() > 200


def test_group_starts_treats_nulls_and_nans_as_equal():
    t = pa.table(
        {
            "a": [1, 1, None, None, 2, 2],
            "f": [float("nan"), float("nan"), 1.0, 1.0, None, 3.0],
        }
    )
    assert group_starts(t, ["a", "f"]).tolist() == [0, 2, 4, 5, 6]
    assert group_starts(t.slice(0, 0), ["a"]).tolist() == [0]


def _numeric_keys(n: int, seed: int) -> pa.Table:
    """Float (NaN, nulls, heavy ties), int and timestamp keys with a row id."""
    rng = np.random.default_rng(seed)
    f = rng.integers(0, 9, n).astype(float)
    f[rng.random(n) < 0.05] = np.nan
    return pa.table(
        {
            "f": pa.array(f, mask=rng.random(n) < 0.05),
            "i": pa.array(rng.integers(-5, 5, n), pa.int16()),
            "t": pa.array(rng.integers(0, 50, n).astype("datetime64[s]")),
            "row": np.arange(n),
        }
    )


@pytest.mark.parametrize("name", ["f", "i", "t"])
@pytest.mark.parametrize("descending", [False, True])
def test_single_numeric_key_partitions_by_binary_search(name, descending):
    t = _numeric_keys(4000, 3)
    blocks = [t.slice(i, 1000) for i in range(0, 4000, 1000)]
    key = sort_keys([name], [descending])
    bounds = boundaries_from_samples(t.select([name]), key, 5)
    parts = [range_partition(b, key, bounds) for b in blocks]
    # Rows keep their order inside a piece (no sort on the map side).
    assert all(np.all(np.diff(p.column("row").to_numpy()) > 0) for ps in parts for p in ps)
    merged = [pa.concat_tables(ps[j] for ps in parts) for j in range(5)]
    # Equal keys never straddle two partitions, and partitions are in key order.
    where: dict = {}
    for j, part in enumerate(merged):
        for v in part.column(name).to_pylist():
            where.setdefault(repr(v), set()).add(j)
    assert all(len(js) == 1 for js in where.values())
    out = pa.concat_tables(sort_table(m, key) for m in merged)
    exp = t.to_pandas().sort_values(name, ascending=not descending, na_position="last")
    got = out.to_pandas()
    pd.testing.assert_series_equal(
        got[name].reset_index(drop=True), exp[name].reset_index(drop=True)
    )
    assert sorted(got["row"]) == list(range(4000))
    assert sum(m.num_rows > 0 for m in merged) >= 3  # really spread


@pytest.mark.parametrize(
    "keys,descending", [(["f"], [False]), (["f"], [True]), (["s", "i"], [True, False])]
)
def test_top_k_equals_the_head_of_a_stable_sort(keys, descending):
    t = _mixed_table(3000, 4)  # nulls, NaN-free ties: the stable order decides
    key = sort_keys(keys, descending)
    for k in (0, 1, 37, 3000, 5000):
        expected = sort_table(t, key).slice(0, k)
        assert top_k(t, key, k).to_pydict() == expected.to_pydict()
    nan = pa.table({"f": [np.nan, 1.0, None, 0.5, np.nan], "row": np.arange(5)})
    got = top_k(nan, sort_keys(["f"], [True]), 4).column("row").to_pylist()
    assert got == [1, 3, 0, 4]  # NaN after numbers, nulls last, even descending


def test_key_order_is_the_stable_order_with_or_without_ties():
    keys = random_keys(1, (0, 2), 5000)
    chunked = pa.chunked_array([keys[:1234], keys[1234:]])
    np.testing.assert_array_equal(key_order(chunked), np.argsort(keys, kind="stable"))
    ties = pa.chunked_array([np.array([5, 1, 5, 1, 0, 5], np.uint64)])
    assert key_order(ties).tolist() == [4, 1, 3, 0, 2, 5]


def test_spread_float_keys_round_trips_and_groups_like_pyarrow():
    values = [1.0, None, -0.0, float("nan"), 2.5, 3.0, 0.0, float("nan"), 1.0]
    table = pa.table(
        {
            "d": pa.chunked_array([pa.array(values[:5]), pa.array(values[5:])]),
            "f": pa.array(values, pa.float32()),
            "i": pa.array(range(9), pa.int8()),
        }
    ).slice(1)  # a non-zero offset
    spread, types = spread_float_keys(table, ["d", "f", "i"])
    assert spread.schema.types == [pa.int64(), pa.int64(), pa.int8()]
    assert types == {"d": pa.float64(), "f": pa.float32()}
    back = restore_float_keys(spread, types)
    assert back.schema == table.schema
    want = [None, 0.0, float("nan"), 2.5, 3.0, 0.0, float("nan"), 1.0]
    for name in ("d", "f"):
        got = back.column(name).to_pylist()
        assert [g is None for g in got] == [w is None for w in want]
        assert np.allclose(
            [g for g in got if g is not None], [w for w in want if w is not None], equal_nan=True
        )
    # -0.0 and 0.0 are one key, every NaN is one key, as in pyarrow's group_by.
    groups = spread.group_by(["d"]).aggregate([("i", "count")])
    assert groups.num_rows == len({None, 0.0, "nan", 2.5, 3.0, 1.0})


def test_group_by_on_whole_number_floats_is_exact():
    keys = (np.arange(200_000) % 50_000).astype(np.float64)
    table = pa.table({"k": keys, "a": np.ones(len(keys))})
    spread, types = spread_float_keys(table, ["k"])
    out = restore_float_keys(spread.group_by(["k"]).aggregate([("a", "sum")]), types)
    out = out.sort_by("k")
    assert out.column("k").to_pylist() == [float(i) for i in range(50_000)]
    assert set(out.column("a_sum").to_pylist()) == {4.0}


def test_bytes_hash_depends_only_on_the_value(monkeypatch):
    from dataflow.exec.exchange import partition

    values = ["", "a", "ab", "ba", "a", None, "xyz" * 1000, "", "é"]
    h = partition.bytes_hash(pa.array(values))
    assert h[1] == h[4] and h[0] == h[7] and len({h[1], h[2], h[3], h[6], h[8]}) == 5
    # The same values sliced, typed otherwise, or hashed in 2-byte chunks hash alike.
    padded = pa.array(["pad"] * 3 + values).slice(3)
    assert partition.bytes_hash(padded).tolist() == h.tolist()
    for arrow_type in (pa.large_string(), pa.string_view(), pa.binary(), pa.large_binary()):
        assert partition.bytes_hash(pa.array(values).cast(arrow_type)).tolist() == h.tolist()
    monkeypatch.setattr(partition, "_HASH_CHUNK_BYTES", 2)
    assert partition.bytes_hash(pa.array(values)).tolist() == h.tolist()
    # A fixed value: every worker process must agree (each hashes its own blocks).
    assert int(h[1]) == 9933592630516302547
    many = partition.bytes_hash(pa.array([str(i) for i in range(100_000)]))
    assert len(np.unique(many)) == 100_000
    assert np.bincount((many % np.uint64(16)).astype(np.int64)).min() > 100_000 / 16 * 0.9
