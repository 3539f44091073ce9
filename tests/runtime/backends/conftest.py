"""The Ray backend tests run on the session's one local Ray (``ray_session`` in
tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.backends.ray import RayBackend


@pytest.fixture
def backend(ray_session: None) -> Iterator[RayBackend]:
    """A fresh RayBackend on the session's Ray (its shutdown leaves Ray running)."""
    b = RayBackend()
    yield b
    b.shutdown()
