"""Datasets on the Ray backend: the unchanged streaming executor drives Ray tasks and actors."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import dataflow as df
from dataflow.errors import UserCodeError
from runtime.backends.ray import RayBackend


@pytest.fixture
def ray_dataflow(ray_session: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[RayBackend]:
    """dataflow's runtime selected by DATAFLOW_BACKEND=ray, on the session's Ray."""
    monkeypatch.setenv("DATAFLOW_BACKEND", "ray")
    backend = df.init()
    assert isinstance(backend, RayBackend)
    yield backend
    df.shutdown()


def double(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"id": batch["id"] * 2}


def fail_on_seven(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if 7 in batch["id"]:
        raise ValueError("id 7 is not allowed")
    return batch


class AddOffset:
    def __init__(self, offset: int) -> None:
        self.offset = offset

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"id": batch["id"] + self.offset}


def test_map_filter_pipeline(ray_dataflow: RayBackend) -> None:
    ds = df.range(1000, override_num_blocks=4).map_batches(double).filter(expr="id % 3 == 0")
    ids = sorted(r["id"] for r in ds.take_all())  # blocks finish in any order
    assert ids == [i * 2 for i in range(1000) if (2 * i) % 3 == 0]
    assert ray_dataflow.store_stats().num_objects == 0  # every block freed
    # Every task ran in a Ray worker: the stats never claim driver threads.
    assert "ran on processes" in ds.stats() and "threads" not in ds.stats()


def test_actor_pool_and_shuffle_sort(ray_dataflow: RayBackend) -> None:
    ds = df.range(200, override_num_blocks=4).map_batches(
        AddOffset, fn_constructor_args=(1000,), concurrency=1
    )
    assert ds.sum("id") == sum(range(1000, 1200))
    shuffled = df.range(300, override_num_blocks=3).random_shuffle(seed=7)
    assert [r["id"] for r in shuffled.sort("id").take_all()] == list(range(300))


def test_user_error_names_the_operator(ray_dataflow: RayBackend) -> None:
    ds = df.range(20, override_num_blocks=2).map_batches(fail_on_seven)
    with pytest.raises(UserCodeError, match=r"map_batches\(fail_on_seven\)") as info:
        ds.take_all()
    assert "id 7 is not allowed" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)
