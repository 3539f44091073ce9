"""The backend contract on a local Ray, started once for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.backends.ray import RayBackend

from .backend_contract import BackendContract


@pytest.fixture(scope="session", autouse=True)
def ray_session() -> Iterator[None]:
    """Start Ray on 127.0.0.1 (as tests/runtime/backends/conftest.py does, same
    resources) before the suite's backends, which then reuse it."""
    owner = RayBackend(num_cpus=2, resources={"slot": 2})
    yield
    owner.shutdown()


class TestRay(BackendContract):
    backend_name = "ray"
