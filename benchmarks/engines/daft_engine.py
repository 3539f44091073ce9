"""Daft on its native (single-machine, multithreaded) runner: the fastest peer we know."""

from __future__ import annotations

from typing import Any

from benchmarks.engines import Engine


def _setup() -> Any:
    import daft

    daft.set_runner_native()
    return None


def _teardown(_: Any) -> None:
    return None


ENGINES = (Engine("daft", "daft", _setup, _teardown),)
