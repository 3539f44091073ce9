"""split, split_at_indices and train_test_split."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import dataflow as df


def _ds(n: int = 100, blocks: int = 3) -> df.Dataset:
    bounds = [n * i // blocks for i in range(blocks + 1)]
    return df.from_arrow([pa.table({"id": np.arange(a, b)}) for a, b in zip(bounds, bounds[1:])])


def _ids(ds: df.Dataset) -> list[int]:
    return [r["id"] for r in ds.take_all()]


def test_split_at_indices_and_split(backend):
    parts = _ds().split_at_indices([10, 50, 50, 200])
    assert [_ids(p) for p in parts] == [
        list(range(10)),
        list(range(10, 50)),
        [],
        list(range(50, 100)),
        [],
    ]
    assert parts[2].columns() == ["id"]  # an empty split keeps the schema
    near = _ds(10).split(3)
    assert [p.count() for p in near] == [3, 3, 4]
    assert sum((_ids(p) for p in near), []) == list(range(10))
    equal = _ds(10).split(3, equal=True)
    assert [_ids(p) for p in equal] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_train_test_split(backend):
    train, test = _ds().train_test_split(0.25)
    assert _ids(train) == list(range(75)) and _ids(test) == list(range(75, 100))
    train, test = _ds().train_test_split(10, shuffle=True, seed=4)
    a, b = _ids(train), _ids(test)
    assert len(a) == 90 and len(b) == 10 and sorted(a + b) == list(range(100))
    train2, test2 = _ds().train_test_split(10, shuffle=True, seed=4)
    assert _ids(test2) == b and a != list(range(90))


def test_split_bad_arguments():
    with pytest.raises(ValueError, match="split: n must be an int >= 1"):
        _ds().split(0)
    with pytest.raises(ValueError, match="split_at_indices: indices must be sorted"):
        _ds().split_at_indices([5, 2])
    with pytest.raises(
        ValueError, match="train_test_split: a float test_size must be in \\(0, 1\\)"
    ):
        _ds().train_test_split(1.5)
    with pytest.raises(ValueError, match="an int in \\[1, 100\\]"):
        _ds().train_test_split(101)
