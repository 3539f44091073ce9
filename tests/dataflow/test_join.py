"""Dataset.join against pandas.merge (inner/left/right/outer, multi-key, types)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import dataflow as df


def _canon(frame, cols):
    return sorted(map(tuple, frame[cols].astype("Float64").fillna(-1).to_numpy().tolist()))


@pytest.mark.parametrize("how", ["inner", "left", "right", "outer"])
def test_join_matches_pandas(backend, make_ds, how):
    rng = np.random.default_rng(3)
    left = pa.table(
        {"k1": rng.integers(0, 20, 600), "k2": rng.integers(0, 2, 600), "a": np.arange(600)}
    )
    right = pa.table(
        {"k1": rng.integers(10, 30, 300), "k2": rng.integers(0, 2, 300), "b": np.arange(300)}
    )
    got = make_ds(left).join(
        df.from_arrow([right.slice(0, 150), right.slice(150)]), on=["k1", "k2"], how=how
    )
    got = got.to_pandas()
    exp = left.to_pandas().merge(right.to_pandas(), on=["k1", "k2"], how=how)
    assert len(got) == len(exp) > 0
    assert _canon(got, ["k1", "k2", "a", "b"]) == _canon(exp, ["k1", "k2", "a", "b"])


def test_join_right_on_suffix_and_null_keys(backend):
    left = df.from_arrow([pa.table({"id": pa.array([1, 2, None]), "v": [10, 20, 30]})])
    right = df.from_arrow([pa.table({"rid": pa.array([1, None], pa.int32()), "v": [100, 300]})])
    got = left.join(right, on="id", right_on="rid", how="inner").take_all()
    assert got == [{"id": 1, "v": 10, "v_right": 100}]  # null keys never match
    outer = left.join(right, on="id", right_on="rid", how="outer").to_pandas()
    assert len(outer) == 4


def test_join_bad_arguments():
    ds = df.from_arrow([pa.table({"k": [1]})])
    with pytest.raises(ValueError, match="join: how must be one of inner, left, right, outer"):
        ds.join(ds, on="k", how="cross")
    with pytest.raises(df.PlanError, match="join \\(right side\\): unknown column 'z'"):
        ds.join(ds, on="k", right_on="z")
    with pytest.raises(df.PlanError, match="join: expected Dataset arguments, got list"):
        ds.join([1], on="k")
