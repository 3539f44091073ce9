"""Dataset.groupby(...) aggregations, map_groups, aggregate and unique against pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import dataflow as df
from dataflow.aggregate import AggregateFn, Count, Max, Mean, Std, Sum, Unique


def _table(n: int = 3000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "k": pa.array(
                list(np.array(["a", "b", "c", "d"])[rng.integers(0, 4, n)]),
                mask=rng.random(n) < 0.05,
            ),
            "j": rng.integers(0, 3, n),
            "v": pa.array(rng.integers(-100, 100, n), mask=rng.random(n) < 0.1),
            "x": rng.normal(5.0, 2.0, n),
        }
    )


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys, na_position="last").reset_index(drop=True)


def test_groupby_builtins_match_pandas(backend, make_ds):
    t = _table()
    ds = make_ds(t, num_blocks=4)
    g = t.to_pandas().groupby(["k", "j"], dropna=False)
    got = _sorted(ds.groupby(["k", "j"]).count().to_pandas(), ["k", "j"])
    assert got["count()"].tolist() == _sorted(g.size().reset_index(), ["k", "j"])[0].tolist()
    got = _sorted(ds.groupby(["k", "j"]).sum("v").to_pandas(), ["k", "j"])
    exp = _sorted(g["v"].sum(min_count=1).reset_index(), ["k", "j"])
    assert got["sum(v)"].tolist() == exp["v"].astype("int64").tolist()
    got = _sorted(
        ds.groupby("k")
        .aggregate(Mean("x"), Std("x"), Max("v"), Count("v", ignore_nulls=True))
        .to_pandas(),
        ["k"],
    )
    gk = t.to_pandas().groupby("k", dropna=False)
    exp = _sorted(
        gk.agg(m=("x", "mean"), s=("x", "std"), mx=("v", "max"), c=("v", "count")).reset_index(),
        ["k"],
    )
    assert got["k"].tolist()[:4] == ["a", "b", "c", "d"] and got["k"].isna().iloc[4]
    np.testing.assert_allclose(got["mean(x)"], exp["m"], rtol=1e-12)
    np.testing.assert_allclose(got["std(x)"], exp["s"], rtol=1e-10)
    assert got["max(v)"].tolist() == exp["mx"].astype("int64").tolist()
    assert got["count(v)"].tolist() == exp["c"].tolist()


def test_groupby_min_max_mean_std_of_several_columns(backend):
    t = pa.table({"k": [1, 1, 2], "a": [1.0, 3.0, 5.0], "b": [2, 4, 6]})
    ds = df.from_arrow([t])
    assert _sorted(ds.groupby("k").mean().to_pandas(), ["k"]).to_dict("list") == {
        "k": [1, 2],
        "mean(a)": [2.0, 5.0],
        "mean(b)": [3.0, 6.0],
    }
    assert ds.groupby("k").min(["a", "b"]).sort("k").take_all() == [
        {"k": 1, "min(a)": 1.0, "min(b)": 2},
        {"k": 2, "min(a)": 5.0, "min(b)": 6},
    ]


def test_custom_aggregate_fn(backend):
    t = _table(1000)
    ds = df.from_arrow([t.slice(0, 400), t.slice(400)])
    prod_sign = AggregateFn(
        init=lambda key: 0,
        accumulate_block=lambda acc, block: (
            acc + int(np.nansum(block["v"].to_numpy(zero_copy_only=False).astype(float) > 0))
        ),
        merge=lambda a, b: a + b,
        name="positives",
    )
    got = _sorted(ds.groupby("k").aggregate(prod_sign).to_pandas(), ["k"])
    pdf = t.to_pandas()
    exp = _sorted(
        (pdf.assign(p=pdf["v"] > 0).groupby("k", dropna=False)["p"].sum()).reset_index(), ["k"]
    )
    assert got["positives"].tolist() == exp["p"].tolist()


def test_map_groups(backend, make_ds):
    t = _table(1200)

    def top(df_: pd.DataFrame) -> pd.DataFrame:
        return df_.nlargest(2, "x")[["j", "x"]]

    got = make_ds(t).groupby("j").map_groups(top, batch_format="pandas").to_pandas()
    pdf = t.to_pandas()
    exp = [x for j in range(3) for x in pdf[pdf["j"] == j].nlargest(2, "x")["x"]]
    assert sorted(got["x"]) == sorted(exp)
    assert sorted(got["j"]) == [0, 0, 1, 1, 2, 2]


def test_map_groups_error_names_function(backend):
    def explode(batch):
        raise RuntimeError("no thanks")

    ds = df.from_arrow([_table(100)])
    with pytest.raises(df.UserCodeError, match="map_groups\\(explode\\).*no thanks"):
        ds.groupby("j").map_groups(explode).take_all()


def test_global_aggregate_and_unique(backend):
    t = _table(500)
    ds = df.from_arrow([t.slice(0, 200), t.slice(200)])
    got = ds.aggregate(Count(), Sum("v"), Mean("x"))
    pdf = t.to_pandas()
    assert got["count()"] == 500 and got["sum(v)"] == int(pdf["v"].sum())
    assert got["mean(x)"] == pytest.approx(pdf["x"].mean(), rel=1e-12)
    assert sorted(ds.unique("j")) == [0, 1, 2]
    keys = ds.unique("k")
    assert None in keys and sorted(k for k in keys if k) == ["a", "b", "c", "d"]
    assert None not in ds.unique("k", ignore_nulls=True)
    empty = df.from_arrow([pa.table({"v": pa.array([], pa.int64())})])
    assert empty.aggregate(Count(), Sum("v")) == {"count()": 0, "sum(v)": None}


def test_global_aggregate_of_every_builtin_matches_pandas(backend):
    # Keyless aggregates (also Dataset.sum/min/...) run scalar kernels; Unique
    # has none in Arrow and used to fail without a key.
    t = _table(500)
    ds = df.from_arrow([t.slice(0, 200), t.slice(200)])
    pdf = t.to_pandas()
    got = ds.aggregate(
        Unique("j"), Unique("k", ignore_nulls=True), Count("v", ignore_nulls=True), Std("x")
    )
    assert sorted(got["unique(j)"]) == [0, 1, 2]
    assert sorted(got["unique(k)"]) == ["a", "b", "c", "d"]
    assert got["count(v)"] == int(pdf["v"].count())
    assert got["std(x)"] == pytest.approx(pdf["x"].std(), rel=1e-12)
    assert ds.min("v") == pdf["v"].min() and ds.max(["x"]) == {"max(x)": pdf["x"].max()}
    assert ds.mean("v") == pytest.approx(pdf["v"].mean(), rel=1e-12)


def test_groupby_bad_arguments():
    ds = df.from_arrow([pa.table({"k": [1], "v": [2]})])
    with pytest.raises(df.PlanError, match="groupby: unknown column 'nope'"):
        ds.groupby("nope")
    with pytest.raises(df.PlanError, match="unknown column 'w'"):
        ds.groupby("k").sum("w")
    with pytest.raises(df.PlanError, match="expected AggregateFn"):
        ds.groupby("k").aggregate("sum")
    with pytest.raises(df.PlanError, match="map_groups: fn must be a function or a callable class"):
        ds.groupby("k").map_groups(3)


def test_small_groupby_result_is_one_block_sorted_by_key(backend, make_ds):
    rng = np.random.default_rng(3)
    keys = [f"k{i:02d}" for i in rng.permutation(40)]
    t = pa.table({"k": np.array(keys, dtype=object)[rng.integers(0, 40, 4000)], "v": np.ones(4000)})
    ds = make_ds(t, num_blocks=8).groupby("k").sum("v")
    blocks = list(ds.iterator().iter_blocks())
    assert len(blocks) == 1  # one reduce: the partial aggregates are tiny
    out = blocks[0].to_pydict()
    assert out["k"] == sorted(set(keys))
    assert out["sum(v)"] == [float((t["k"].to_numpy() == k).sum()) for k in out["k"]]


class _Scale:
    """A callable class for map_groups: built once per reduce task."""

    def __init__(self, factor: int) -> None:
        self.factor = factor

    def __call__(self, batch: dict) -> dict:
        batch["v"] *= self.factor  # zero_copy_batch=False: writable arrays
        return batch


def _count_then_marker(batch: dict):
    yield {"k": batch["k"][:1], "n": np.array([len(batch["v"])])}
    yield {"k": batch["k"][:1], "n": np.array([-1])}


def test_map_groups_ray_parameters(backend):
    from dataflow.errors import PlanError

    ds = df.from_items([{"k": i % 3, "v": i} for i in range(9)])
    scaled = ds.groupby("k").map_groups(_Scale, fn_constructor_args=(10,), zero_copy_batch=False)
    assert sorted(r["v"] for r in scaled.take_all()) == [10 * i for i in range(9)]
    both = ds.groupby("k").map_groups(_count_then_marker, num_gpus=0, ray_remote_args={"memory": 1})
    assert sorted((r["k"], r["n"]) for r in both.take_all()) == [
        (k, n) for k in range(3) for n in (-1, 3)
    ]
    node = both._plan
    assert (node.resources.cpu, node.resources.memory) == (1, 1)
    with pytest.raises(PlanError, match=r"map_groups\(_count_then_marker\): concurrency=2 sizes"):
        ds.groupby("k").map_groups(_count_then_marker, concurrency=2)
    with pytest.raises(
        PlanError, match="fn_constructor_args/kwargs need fn to be a callable class"
    ):
        ds.groupby("k").map_groups(_count_then_marker, fn_constructor_args=(1,))
    with pytest.raises(PlanError, match="ray_remote_args_fn"):
        ds.groupby("k").map_groups(_count_then_marker, ray_remote_args_fn=dict)


def test_grouped_with_column_adds_an_expression_column_per_group(backend):
    from dataflow.errors import PlanError

    ds = df.from_items([{"g": i % 2, "v": i} for i in range(6)])
    out = ds.groupby("g").with_column("twice", df.col("v") * 2).sort(["g", "v"])
    assert out.take_all() == [
        {"g": g, "v": v, "twice": 2 * v} for g in (0, 1) for v in range(6) if v % 2 == g
    ]
    same = ds.groupby("g").with_column("v", "v + 100", num_cpus=1).sort("v")
    assert [r["v"] for r in same.take_all()] == [100 + i for i in range(6)]
    with pytest.raises(PlanError, match=r"groupby\(\).with_column\(x\).*'nope'"):
        ds.groupby("g").with_column("x", df.col("nope") + 1)


def _explained(ds) -> str:
    from dataflow.context import DataContext
    from dataflow.plan.explain import explain_plan

    return explain_plan(ds._plan, DataContext.get_current())


def test_string_keys_read_dictionary_encoded_give_plain_exact_groups(backend, tmp_path):
    """groupby right over read_parquet reads its string keys as dictionaries
    (each file its own dictionary); the result has the keys as plain strings
    and the same groups as pandas, with built-in, Python and high-cardinality
    aggregations and with a predicate (plain strings then)."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    frames = []
    for i in range(4):  # files with different key subsets: different dictionaries
        n = 3000
        keys = np.array([f"k{j:02d}" for j in range(i, i + 12)])[rng.integers(0, 12, n)]
        frame = pd.DataFrame({"cat": keys, "a": rng.normal(size=n), "id": np.arange(n) + i * n})
        frames.append(frame)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path / f"{i}.parquet")
    whole = pd.concat(frames, ignore_index=True)
    ds = df.read_parquet(str(tmp_path), columns=["cat", "a"])
    assert "read_parquet columns=[cat, a] dictionary=[cat]" in _explained(
        ds.groupby("cat").sum("a")
    )

    got = ds.groupby("cat").aggregate(Sum("a"), Count(), Mean("a")).to_arrow().sort_by("cat")
    assert got.schema.field("cat").type == pa.string()
    want = whole.groupby("cat")["a"].agg(["sum", "count", "mean"]).sort_index()
    assert got.column("cat").to_pylist() == list(want.index)
    np.testing.assert_allclose(got.column("sum(a)").to_numpy(), want["sum"], rtol=1e-12)
    assert got.column("count()").to_pylist() == list(want["count"])
    np.testing.assert_allclose(got.column("mean(a)").to_numpy(), want["mean"], rtol=1e-12)

    rows = AggregateFn(
        init=lambda k: 0, accumulate_row=lambda n, r: n + 1, merge=int.__add__, name="n"
    )
    py = ds.groupby("cat").aggregate(rows).to_arrow().sort_by("cat")
    assert py.schema.field("cat").type == pa.string()
    assert py.column("n").to_pylist() == list(want["count"])

    # Keys barely repeat: map tasks pass rows on (decoded), reduces aggregate them.
    ids = df.read_parquet(str(tmp_path), columns=["id", "a"]).with_column("s", df.col("id") % 5000)
    hc = ids.groupby("s").sum("a").to_arrow().sort_by("s")
    want_hc = whole.assign(s=whole["id"] % 5000).groupby("s")["a"].sum().sort_index()
    assert hc.column("s").to_pylist() == list(want_hc.index)
    np.testing.assert_allclose(hc.column("sum(a)").to_numpy(), want_hc.to_numpy(), rtol=1e-12)

    filtered = df.read_parquet(str(tmp_path), columns=["cat", "a"], filter=df.col("cat") == "k05")
    assert "dictionary=" not in _explained(filtered.groupby("cat").count())
    assert filtered.groupby("cat").count().take_all() == [
        {"cat": "k05", "count()": int((whole["cat"] == "k05").sum())}
    ]


def test_dictionary_key_columns_of_user_data_group_by_value(backend):
    """Categorical keys (pandas) in blocks with different dictionaries group by
    value; the keys come back as plain values."""
    blocks = [
        pd.DataFrame({"k": pd.Categorical(["x", "y", "x"]), "v": [1, 2, 3]}),
        pd.DataFrame({"k": pd.Categorical(["z", "x"]), "v": [4, 5]}),
    ]
    got = df.from_pandas(blocks).groupby("k").sum("v").to_arrow().sort_by("k")
    assert got.to_pydict() == {"k": ["x", "y", "z"], "sum(v)": [9, 2, 4]}
