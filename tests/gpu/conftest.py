"""Every test here needs a CUDA device: each module is marked ``gpu`` (deselected by
default; run them with ``pytest -m gpu tests/gpu``) and skipped, not failed, where
torch sees no device."""

from __future__ import annotations

import functools

import pytest

import dataflow as df


@functools.cache
def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if not _cuda_available():
        pytest.skip("needs a CUDA device")


@pytest.fixture
def gpu_backend():
    """The local backend with this machine's GPUs (detected) and two CPUs."""
    yield df.init("local", num_cpus=2)
    df.shutdown()
