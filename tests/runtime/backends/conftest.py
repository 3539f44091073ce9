"""One local Ray for the whole test session: it takes seconds to start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.backends.ray import RayBackend


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Start Ray on 127.0.0.1 with 2 CPUs and 2 units of the custom resource ``slot``.

    Reuses Ray when another test module started it first (the backend contract
    suite), and stops it at the end only when this fixture started it.
    """
    owner = RayBackend(num_cpus=2, resources={"slot": 2})
    yield
    owner.shutdown()


@pytest.fixture
def backend(ray_session: None) -> Iterator[RayBackend]:
    """A fresh RayBackend on the session's Ray (its shutdown leaves Ray running)."""
    b = RayBackend()
    yield b
    b.shutdown()
