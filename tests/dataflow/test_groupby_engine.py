"""Partial aggregation (map side) + merge/finalize (reduce side) against pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from dataflow.aggregate import AggregateFn, Count, Max, Mean, Min, Std, Sum, Unique
from dataflow.errors import PlanError
from dataflow.exec.exchange.aggregation import final_aggregate, partial_aggregate
from dataflow.exec.exchange.partition import hash_partition
from dataflow.validate import check_aggs


def _data(n: int = 4000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "k": pa.array(
                list(np.array(["x", "y", "z", "w"])[rng.integers(0, 4, n)]),
                mask=rng.random(n) < 0.05,
            ),
            "j": rng.integers(0, 3, n),
            # A large offset: a naive sum-of-squares std would lose all digits.
            "a": pa.array(rng.normal(1e9, 2.0, n), mask=rng.random(n) < 0.1),
            "b": pa.array(rng.integers(-50, 50, n), mask=rng.random(n) < 0.1),
        }
    )


def _run(
    table: pa.Table, keys: list[str], aggs, num_blocks: int = 5, num_parts: int = 3
) -> pa.Table:
    """Map: partial per block, hash-partitioned; reduce: merge per partition."""
    step = -(-table.num_rows // num_blocks)
    parts: list[list[pa.Table]] = [[] for _ in range(num_parts)]
    for start in range(0, table.num_rows, step):
        partial = partial_aggregate(table.slice(start, step), keys, aggs)
        for p, piece in enumerate(hash_partition(partial, keys, num_parts) if keys else [partial]):
            parts[p].append(piece)
    outs = [final_aggregate(p, keys, aggs) for p in parts if p]
    return pa.concat_tables(outs)


def test_builtin_aggregations_match_pandas_with_nulls_and_multi_keys():
    t = _data()
    aggs = [
        Count(),
        Sum("b"),
        Min("b"),
        Max("b"),
        Mean("a"),
        Std("a"),
        Count("b", ignore_nulls=True),
    ]
    got = _run(t, ["k", "j"], aggs).to_pandas().sort_values(["k", "j"], na_position="last")
    g = t.to_pandas().groupby(["k", "j"], dropna=False)
    expected = (
        pd.DataFrame(
            {
                "count()": g.size(),
                "sum(b)": g["b"].sum(min_count=1),
                "min(b)": g["b"].min(),
                "max(b)": g["b"].max(),
                "mean(a)": g["a"].mean(),
                "std(a)": g["a"].std(),
                "count(b)": g["b"].count(),
            }
        )
        .reset_index()
        .sort_values(["k", "j"], na_position="last")
    )
    assert list(got.columns) == ["k", "j", *[a.name for a in aggs]]
    assert len(got) == len(expected) == 15  # 5 k values (null included) x 3 j values
    got, expected = got.reset_index(drop=True), expected.reset_index(drop=True)
    assert got["k"].tolist()[:12] == expected["k"].tolist()[:12]
    np.testing.assert_array_equal(got["count()"], expected["count()"])
    np.testing.assert_array_equal(got["sum(b)"], expected["sum(b)"])
    np.testing.assert_array_equal(got["min(b)"], expected["min(b)"])
    np.testing.assert_array_equal(got["max(b)"], expected["max(b)"])
    np.testing.assert_array_equal(got["count(b)"], expected["count(b)"])
    np.testing.assert_allclose(got["mean(a)"], expected["mean(a)"], rtol=1e-14)
    np.testing.assert_allclose(got["std(a)"], expected["std(a)"], rtol=1e-7)


def test_global_aggregation_and_all_null_groups():
    t = pa.table({"k": [1, 1, 2], "a": pa.array([None, None, 3.0], pa.float64())})
    got = _run(t, ["k"], [Sum("a"), Mean("a"), Std("a"), Min("a"), Count("a")], 3, 1).to_pydict()
    assert got["k"] == [1, 2]
    assert got["sum(a)"] == [None, 3.0]
    assert got["mean(a)"] == [None, 3.0]
    assert got["std(a)"][0] is None and np.isnan(got["std(a)"][1])  # N - ddof = 0 -> NaN
    assert got["min(a)"] == [None, 3.0]
    assert got["count(a)"] == [2, 1]  # Count(on) counts nulls unless ignore_nulls
    total = _run(t, [], [Sum("a"), Count(), Max("a")], 3).to_pydict()
    assert total == {"sum(a)": [3.0], "count()": [3], "max(a)": [3.0]}
    empty = final_aggregate([], [], [Sum("a"), Count()]).to_pydict()
    assert empty == {"sum(a)": [None], "count()": [0]}


def test_ignore_nulls_false_propagates_nulls():
    t = pa.table({"k": [1, 1, 2, 2], "a": [1.0, None, 2.0, 4.0]})
    got = _run(t, ["k"], [Sum("a", ignore_nulls=False), Std("a", ignore_nulls=False)], 4, 2)
    got = got.sort_by("k").to_pydict()
    assert got["sum(a)"] == [None, 6.0]
    assert got["std(a)"][0] is None and got["std(a)"][1] == pytest.approx(np.std([2, 4], ddof=1))


def test_unique_and_string_min_max():
    t = pa.table({"k": ["a", "b", "a", "a", "b"], "v": ["q", None, "p", "q", "r"]})
    got = _run(t, ["k"], [Unique("v"), Min("v"), Max("v")], 3, 2).sort_by("k").to_pydict()
    assert got["unique(v)"] == [["p", "q"], ["r", None]]
    assert got["min(v)"] == ["p", "r"] and got["max(v)"] == ["q", "r"]
    ignored = _run(t, ["k"], [Unique("v", ignore_nulls=True)], 5, 1).to_pydict()
    assert ignored["unique(v)"] == [["p", "q"], ["r"]]


def test_custom_aggregate_fn_with_merge_alongside_builtins():
    calls = []

    def init(key):
        calls.append(key)
        return (0, 1)

    product = AggregateFn(
        init=init,
        accumulate_block=lambda acc, block: (
            acc[0] + block.num_rows,
            acc[1] * int(np.prod(block["b"].to_numpy())),
        ),
        merge=lambda x, y: (x[0] + y[0], x[1] * y[1]),
        finalize=lambda acc: f"{acc[0]}:{acc[1]}",
        name="rows:prod",
    )
    rows = AggregateFn(
        init=lambda k: [],
        accumulate_row=lambda acc, r: acc + [r["b"]],
        merge=lambda x, y: sorted(x + y),
        name="all(b)",
    )
    t = pa.table({"k": ["a", "b", "a", "b", "a", None], "b": [1, 2, 3, 4, 5, 6]})
    got = _run(t, ["k"], [product, Sum("b"), rows], 3, 2).sort_by("k").to_pydict()
    assert got["k"] == ["a", "b", None]
    assert got["rows:prod"] == ["3:15", "2:8", "1:6"]
    assert got["sum(b)"] == [9, 6, 6]
    assert got["all(b)"] == [[1, 3, 5], [2, 4], [6]]
    assert {"a", "b", None} <= set(calls)


def test_bad_aggregations_and_columns_are_named():
    with pytest.raises(PlanError, match="give at least one aggregation"):
        check_aggs([], "groupby(k).aggregate")
    with pytest.raises(PlanError, match="got str"):
        check_aggs(["sum"], "groupby(k).aggregate")
    with pytest.raises(PlanError, match="'sum\\(a\\)'.*alias_name"):
        check_aggs([Sum("a"), Sum("a")], "aggregate")
    with pytest.raises(ValueError, match="exactly one of accumulate_row"):
        AggregateFn(init=lambda k: 0, merge=lambda a, b: a, name="x")
    with pytest.raises(PlanError, match="sum\\(nope\\): unknown column 'nope'"):
        partial_aggregate(pa.table({"k": [1]}), ["k"], [Sum("nope")])
    with pytest.raises(PlanError, match="groupby: unknown column 'kk'"):
        partial_aggregate(pa.table({"k": [1]}), ["kk"], [Count()])


def _run_spec(table: pa.Table, keys: list[str], aggs, modes: list, num_parts: int = 3) -> pa.Table:
    """The exchange's aggregation as the operator runs it: map task ``i`` runs in
    ``modes[i]`` (None: partial aggregation, "raw": rows passed on)."""
    from dataflow.exec.exchange.tasks import AggregateSpec

    spec = AggregateSpec(keys, aggs)
    step = -(-table.num_rows // len(modes))
    parts: list[list[pa.Table]] = [[] for _ in range(num_parts)]
    for i, mode in enumerate(modes):
        pieces = spec.map(table.slice(i * step, step), 0, (i,), num_parts, mode)
        for p, piece in enumerate(pieces):
            parts[p].append(piece)
    return pa.concat_tables([t for p in parts for t in spec.reduce([p], None)])


@pytest.mark.parametrize(
    "modes", [[None] * 4, ["raw"] * 4, [None, "raw", None, "raw"]], ids=["partial", "raw", "mixed"]
)
def test_raw_map_tasks_give_the_same_groups_as_partial_ones(modes):
    t = _data(3000, seed=3)
    # Float keys with NaN, -0.0 and 0.0 (one group each for NaN and zero).
    f = np.random.default_rng(4).integers(0, 40, t.num_rows).astype(np.float64)
    f[::97], f[1::97], f[2::97] = np.nan, -0.0, 0.0
    t = t.append_column("f", pa.array(f))
    aggs = [Count(), Sum("b"), Min("b"), Max("a"), Mean("a"), Std("a"), Unique("j")]
    got = _run_spec(t, ["k", "f"], aggs, modes).to_pandas()
    got = got.sort_values(["k", "f"], na_position="last").reset_index(drop=True)
    g = t.to_pandas().groupby(["k", "f"], dropna=False)
    want = pd.DataFrame(
        {
            "count()": g.size(),
            "sum(b)": g["b"].sum(min_count=1),
            "min(b)": g["b"].min(),
            "max(a)": g["a"].max(),
            "mean(a)": g["a"].mean(),
            "std(a)": g["a"].std(),
        }
    )
    want = want.reset_index().sort_values(["k", "f"], na_position="last").reset_index(drop=True)
    assert len(got) == len(want) > 190  # of 5 k values x (40 whole numbers + NaN)
    np.testing.assert_array_equal(got["f"], want["f"])
    for name in ["count()", "sum(b)", "min(b)", "max(a)"]:
        np.testing.assert_array_equal(got[name], want[name])
    np.testing.assert_allclose(got["mean(a)"], want["mean(a)"], rtol=1e-13)
    np.testing.assert_allclose(got["std(a)"], want["std(a)"], rtol=1e-6)
    uniques = t.to_pandas().groupby(["k", "f"], dropna=False)["j"].unique()
    assert [sorted(u) for u in got["unique(j)"]] == [sorted(u) for u in uniques]


def test_map_side_stops_partial_aggregation_only_when_blocks_do_not_shrink():
    from dataflow.exec.exchange.tasks import AggregateSpec

    spec = AggregateSpec(["k"], [Sum("a")])
    assert spec.map_extra(None, 0, 0) is None  # nothing measured yet: aggregate
    assert spec.map_extra(None, 1000, 100) is None  # keys repeat: keep aggregating
    assert spec.map_extra(None, 1000, 900) == "raw"  # barely shrinks: pass rows on
    assert AggregateSpec([], [Sum("a")]).map_extra(None, 1000, 1000) is None  # global
    custom = AggregateFn(
        init=lambda k: 0, accumulate_row=lambda a, r: a + 1, merge=int.__add__, name="n"
    )
    assert AggregateSpec(["k"], [custom]).map_extra(None, 1000, 1000) is None
    # A raw map task passes on only the columns the aggregation reads.
    raw = spec.map(pa.table({"k": [1, 2], "a": [1.0, 2.0], "x": ["p", "q"]}), 0, (0,), 1, "raw")
    assert raw[0].to_pydict() == {"k": [1, 2], "a": [1.0, 2.0]}
    with pytest.raises(PlanError, match="sum\\(a\\): unknown column 'a'"):
        spec.map(pa.table({"k": [1]}), 0, (0,), 1, "raw")
