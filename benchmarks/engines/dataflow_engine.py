"""dataflow: the embedded local backend, started before the timer like the peers' runtimes."""

from __future__ import annotations

from typing import Any

from benchmarks.engines import Engine


def _setup() -> Any:
    import dataflow

    dataflow.init()
    return None


def _teardown(_: Any) -> None:
    import dataflow

    dataflow.shutdown()


ENGINES = (Engine("dataflow", "dataflow", _setup, _teardown),)
