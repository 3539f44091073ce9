"""The backend contract on the session's local Ray (``ray_session`` in tests/conftest.py)."""

from __future__ import annotations

import pytest

from .backend_contract import BackendContract

pytestmark = pytest.mark.usefixtures("ray_session")


class TestRay(BackendContract):
    backend_name = "ray"
