"""Engine adapters: how each system is set up before a run and torn down after it.

One module per system. Setup (imports, ``ray.init``, a process pool) is not
timed, except by workloads with ``timing="process"`` (``startup``), which do
everything themselves, and in cold runs (``run --cold``), which time the whole
process. A peer whose package is missing is skipped with a note.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Engine:
    """A system under test: the package it needs and its untimed setup and teardown.

    ``cold_setup`` is what a user's script does itself when the harness times
    the whole process (``run --cold``): e.g. dataflow starts no workers ahead
    there, as a script that never calls ``init`` does. None: ``setup``."""

    name: str
    package: str
    setup: Callable[[], Any]
    teardown: Callable[[Any], None]
    cold_setup: Callable[[], Any] | None = None

    def missing(self) -> str | None:
        """Why this engine cannot run here (a sentence with the install hint), or None."""
        if importlib.util.find_spec(self.package) is None:
            return (
                f"engine {self.name!r} skipped: package {self.package!r} is not installed "
                "(pip install -e '.[bench]')"
            )
        return None

    def version(self) -> str:
        """The installed version of the engine's package."""
        return str(getattr(importlib.import_module(self.package), "__version__", "unknown"))


STORE_ENV = "DATAFLOW_BENCH_STORE_BYTES"
"""Set by the harness for a workload that fixes the object store size (``Workload.store_mib``)."""


def store_bytes() -> int | None:
    """The object store size this run's engine starts with, or None for its default."""
    value = os.environ.get(STORE_ENV, "")
    return int(value) if value.isdigit() else None


_MODULES = (
    "dataflow_engine",
    "daft_engine",
    "ray_engine",
    "pyarrow_engine",
    "webdataset_engine",
)
_engines: dict[str, Engine] = {}
engines: Mapping[str, Engine] = MappingProxyType(_engines)


def _load() -> None:
    if not _engines:
        for module in _MODULES:
            for engine in importlib.import_module(f"{__name__}.{module}").ENGINES:
                _engines[engine.name] = engine


def names() -> list[str]:
    """Engine names in the default run order: dataflow first, then its peers."""
    _load()
    return list(_engines)


def get(name: str) -> Engine:
    """The engine ``name``; an unknown name lists the known ones."""
    _load()
    try:
        return _engines[name]
    except KeyError:
        raise KeyError(f"unknown engine {name!r}; known: {', '.join(_engines)}") from None
