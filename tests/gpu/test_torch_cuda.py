"""iter_torch_batches onto a CUDA device."""

from __future__ import annotations

import pytest
import torch

import dataflow as df

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("pin_memory", [False, True])
def test_batches_land_on_the_gpu_with_the_right_values(pin_memory):
    ds = df.range(1000, override_num_blocks=4)
    batches = list(
        ds.iter_torch_batches(
            batch_size=256, device="cuda", dtypes=torch.float32, pin_memory=pin_memory
        )
    )
    assert all(b["id"].device.type == "cuda" for b in batches)
    assert [len(b["id"]) for b in batches] == [256, 256, 256, 232]
    assert sum(b["id"].sum().item() for b in batches) == sum(range(1000))


def test_tensor_columns_keep_their_shape_on_the_gpu():
    images = torch.arange(6 * 2 * 3, dtype=torch.uint8).reshape(6, 2, 3).numpy()
    ds = df.from_numpy(images)
    (batch,) = ds.iter_torch_batches(batch_size=6, device="cuda")
    assert batch["data"].device.type == "cuda" and batch["data"].shape == (6, 2, 3)
    assert torch.equal(batch["data"].cpu(), torch.from_numpy(images))
