"""The hand-written reference: pyarrow/numpy in one process, and over a process pool.

``pyarrow-mp`` hands its run functions a ``multiprocessing`` pool with one
process per core (fork: workers inherit the imported modules, as a
hand-written script would).
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

from benchmarks.engines import Engine


def _no_setup() -> Any:
    import pyarrow  # noqa: F401  (imported before the timer, as the peers' are)

    return None


def _no_teardown(_: Any) -> None:
    return None


def _pool_setup() -> Any:
    import pyarrow  # noqa: F401

    # The CPUs this process may run on (taskset), as the engines count them.
    return multiprocessing.get_context("fork").Pool(len(os.sched_getaffinity(0)))


def _pool_teardown(pool: Any) -> None:
    pool.close()
    pool.join()


ENGINES = (
    Engine("pyarrow", "pyarrow", _no_setup, _no_teardown),
    Engine("pyarrow-mp", "pyarrow", _pool_setup, _pool_teardown),
)
