"""iter_torch_batches onto a CUDA device (skipped without CUDA)."""

from __future__ import annotations

import pytest
import torch

import dataflow as df

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("pin_memory", [False, True])
def test_batches_land_on_the_gpu_with_the_right_values(pin_memory):
    ds = df.range(1000, override_num_blocks=4)
    batches = list(
        ds.iter_torch_batches(
            batch_size=256, device="cuda", dtypes=torch.float32, pin_memory=pin_memory
        )
    )
    assert all(b["id"].device.type == "cuda" for b in batches)
    assert sum(b["id"].sum().item() for b in batches) == sum(range(1000))
