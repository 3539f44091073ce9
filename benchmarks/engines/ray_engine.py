"""Ray Data on a local Ray started bound to loopback, progress bars off."""

from __future__ import annotations

from typing import Any

from benchmarks.engines import Engine


def start() -> None:
    """Start a loopback-only local Ray with quiet Ray Data (also used by ``startup``)."""
    import ray
    import ray.data

    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def _setup() -> Any:
    start()
    return None


def _teardown(_: Any) -> None:
    import ray

    ray.shutdown()


ENGINES = (Engine("ray", "ray", _setup, _teardown),)
