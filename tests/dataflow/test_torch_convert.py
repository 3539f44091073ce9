"""Arrow / numpy batches -> torch tensors (dataflow.torch_convert)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from dataflow.block import array_from_numpy, to_batch
from dataflow.torch_convert import check_torch_args, numpy_batch_to_torch, table_to_torch


def test_float64_column_shares_memory_with_the_block():
    table = pa.table({"x": np.arange(1000, dtype=np.float64)})
    out = table_to_torch(table)
    tensor = out["x"]
    assert tensor.dtype == torch.float64
    assert tensor.data_ptr() == table.column("x").chunk(0).buffers()[1].address
    assert tensor.sum().item() == 999 * 1000 / 2


def test_sliced_block_is_still_zero_copy():
    table = pa.table({"x": np.arange(100, dtype=np.int64)}).slice(10, 5)
    tensor = table_to_torch(table)["x"]
    assert tensor.tolist() == [10, 11, 12, 13, 14]
    assert tensor.data_ptr() == table.column("x").chunk(0).buffers()[1].address + 10 * 8


def test_tensor_column_becomes_nd_tensor():
    emb = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    table = pa.table({"id": [0, 1, 2, 3], "emb": array_from_numpy(emb)})
    out = table_to_torch(table)
    assert out["emb"].shape == (4, 2, 3)
    assert torch.equal(out["emb"], torch.from_numpy(emb))
    assert out["id"].tolist() == [0, 1, 2, 3]


def test_dtypes_one_for_all_or_per_column():
    table = pa.table({"a": [1, 2], "b": [0.5, 1.5], "flag": [True, False]})
    allf = table_to_torch(table, dtypes=torch.float32)
    assert {k: v.dtype for k, v in allf.items()} == {
        "a": torch.float32,
        "b": torch.float32,
        "flag": torch.float32,
    }
    per = table_to_torch(table, dtypes={"a": torch.int32})
    assert per["a"].dtype == torch.int32 and per["b"].dtype == torch.float64
    assert per["flag"].tolist() == [True, False]
    with pytest.raises(ValueError, match=r"dtypes names columns \['nope'\]"):
        table_to_torch(table, dtypes={"nope": torch.float32})


def test_collate_fn_receives_the_numpy_batch():
    table = pa.table({"a": [1, 2, 3], "s": ["x", "y", "z"]})
    seen = {}

    def collate(batch):
        seen.update(batch)
        return torch.tensor(batch["a"]) * 2, list(batch["s"])

    doubled, labels = table_to_torch(table, collate_fn=collate)
    assert isinstance(seen["a"], np.ndarray)
    assert doubled.tolist() == [2, 4, 6] and labels == ["x", "y", "z"]


def test_string_column_is_a_clear_error():
    with pytest.raises(TypeError, match="column 's' has dtype.*drop it"):
        table_to_torch(pa.table({"s": ["a", "b"]}))


def test_null_column_is_converted_by_copy():
    out = table_to_torch(pa.table({"x": pa.array([1.0, None, 3.0])}))
    assert out["x"][0].item() == 1.0 and torch.isnan(out["x"][1])


def test_non_contiguous_numpy_input():
    arr = np.arange(20, dtype=np.int32)[::2]
    out = numpy_batch_to_torch({"x": arr})
    assert out["x"].tolist() == list(range(0, 20, 2))
    assert numpy_batch_to_torch(to_batch(pa.table({"x": [1]}), "numpy"), device="cpu")[
        "x"
    ].device == torch.device("cpu")


def test_bad_torch_arguments():
    with pytest.raises(TypeError, match="dtypes must be a torch.dtype"):
        check_torch_args("float32", None, None)
    with pytest.raises(TypeError, match="dtypes values must be torch.dtype"):
        check_torch_args({"a": "float32"}, None, None)
    with pytest.raises(ValueError, match="bad device"):
        check_torch_args(None, "tpu:7", None)
    with pytest.raises(TypeError, match="collate_fn must be callable"):
        check_torch_args(None, None, 3)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            check_torch_args(None, "cuda", None)
