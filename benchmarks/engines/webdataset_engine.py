"""webdataset's own loader (``webdataset.WebDataset`` in a torch ``DataLoader``): the
peer of ``read_webdataset``. Setup only imports it (and torch) before the timer."""

from __future__ import annotations

from typing import Any

from benchmarks.engines import Engine


def _setup() -> Any:
    import torch  # noqa: F401
    import webdataset  # noqa: F401

    return None


def _teardown(_: Any) -> None:
    return None


ENGINES = (Engine("webdataset", "webdataset", _setup, _teardown),)
