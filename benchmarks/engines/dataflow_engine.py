"""dataflow: the embedded local backend (``dataflow``) or the ray backend on a local Ray
(``dataflow-ray``), started before the timer like the peers' runtimes."""

from __future__ import annotations

from typing import Any

from benchmarks.engines import Engine, store_bytes


def _setup() -> Any:
    import dataflow
    import dataflow.plan.planner  # noqa: F401 - imports are setup for every engine
    import dataflow.sources.parquet  # noqa: F401

    # Workers boot before the timer, as ray.init starts Ray's workers and the
    # pyarrow-mp reference creates its pool before the timer.
    dataflow.init(prestart_workers=True, object_store_memory=store_bytes())
    return None


def _cold_setup() -> Any:
    """What a script does: import dataflow; workers start with the first plan that
    needs them (a script that sizes the store calls init for that, nothing more)."""
    import dataflow

    if store_bytes() is not None:
        dataflow.init(object_store_memory=store_bytes())
    return None


def _setup_unordered() -> Any:
    """``dataflow`` delivering blocks as tasks finish (``preserve_order=False``):
    the cost of ordering is the difference between the two."""
    import dataflow

    _setup()
    dataflow.DataContext.get_current().preserve_order = False
    return None


def _teardown(_: Any) -> None:
    import dataflow

    dataflow.shutdown()


def _setup_on_ray() -> Any:
    """dataflow's ray backend on a local Ray started exactly as the ``ray`` engine's."""
    import dataflow
    from benchmarks.engines.ray_engine import start, store_options

    temp_dir = start(**store_options())
    dataflow.init(backend="ray")  # attaches to the running Ray
    return temp_dir


def _teardown_on_ray(temp_dir: Any) -> None:
    import dataflow
    from benchmarks.engines.ray_engine import stop

    dataflow.shutdown()
    stop(temp_dir)


ENGINES = (
    Engine("dataflow", "dataflow", _setup, _teardown, cold_setup=_cold_setup),
    Engine("dataflow-unordered", "dataflow", _setup_unordered, _teardown),
    Engine("dataflow-ray", "ray", _setup_on_ray, _teardown_on_ray),
)
