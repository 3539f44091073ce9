"""Ray Data on a local Ray started bound to loopback, progress bars off."""

from __future__ import annotations

import shutil
from typing import Any

from benchmarks.engines import Engine, store_bytes


def start(**options: Any) -> str | None:
    """Start a new loopback-only local Ray with quiet Ray Data (also used by
    ``startup``); returns its private temp directory. Started as dataflow's ray
    backend starts it: a plain ``ray.init`` may attach to another Ray on the host
    or listen on every interface."""
    import ray.data

    from runtime.backends.ray import start_local_ray

    temp_dir = start_local_ray(log_to_driver=False, **options)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return temp_dir


def stop(temp_dir: str | None) -> None:
    import ray

    ray.shutdown()
    if temp_dir is not None:
        shutil.rmtree(temp_dir, ignore_errors=True)


def store_options() -> dict[str, Any]:
    """``ray.init`` options for this run's object store size (none: Ray's default)."""
    size = store_bytes()
    return {} if size is None else {"object_store_memory": size}


def _setup() -> Any:
    return start(**store_options())


def _teardown(temp_dir: Any) -> None:
    stop(temp_dir)


ENGINES = (Engine("ray", "ray", _setup, _teardown),)
