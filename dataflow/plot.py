"""``plot_stats``: a PNG of a run's timeline (matplotlib, the ``plot`` extra).

Three panels over the run's seconds: rows/s out of each operator, running
tasks per operator, and memory (object store in use, resident memory of the
driver plus workers). The data is ``DatasetStats.timeline``, sampled by the
executor while the pipeline ran.

>>> ds = df.read_parquet("data/").map_batches(fn)  # doctest: +SKIP
>>> ds.materialize()                                # doctest: +SKIP
>>> df.plot_stats(ds, "run.png")                    # doctest: +SKIP
PosixPath('run.png')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


def plot_stats(ds_or_stats: Any, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
    """Write a PNG of rows/s per operator, running tasks and memory over time.

    ``ds_or_stats`` is a ``Dataset`` that has run (its last run is drawn), an
    ``OutputStream`` or a ``DatasetStats``. Returns the path written.

    >>> df.plot_stats(ds, "run.png")  # doctest: +SKIP
    PosixPath('run.png')
    """
    stats = _stats_of(ds_or_stats)
    timeline = stats.timeline
    if timeline is None or len(timeline.t) < 2:
        raise ValueError(
            "plot_stats: these stats have no timeline (the run did not start or was "
            "too short to sample); consume the dataset (e.g. materialize()) first"
        )
    out = Path(path)
    if not out.parent.is_dir():
        raise FileNotFoundError(
            f"plot_stats: directory {str(out.parent)!r} of {str(out)!r} does not exist"
        )
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plot_stats needs matplotlib: pip install 'dataflow[plot]'") from e

    # A bare Figure on the Agg canvas: no pyplot, so no global backend or state
    # of the user's session (a notebook's inline backend) is touched.
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    rates_ax, tasks_ax, mem_ax = fig.subplots(3, 1, sharex=True)
    t = timeline.t
    for i, name in enumerate(timeline.ops):
        label = _short(name)
        rates_ax.plot(t, timeline.rows_per_s(i), label=label)
        tasks_ax.step(t, timeline.running_tasks[i], where="post", label=label)
    rates_ax.set_ylabel("rows/s out")
    rates_ax.set_title(f"dataflow run: {stats.wall_s:.1f} s, {len(timeline.ops)} operators")
    rates_ax.legend(loc="upper right", fontsize="small")
    tasks_ax.set_ylabel("running tasks")
    mem_ax.plot(t, [b / MiB for b in timeline.store_bytes], label="object store in use")
    mem_ax.plot(t, [b / MiB for b in timeline.rss_bytes], label="RSS (driver + workers)")
    mem_ax.set_ylabel("MiB")
    mem_ax.set_xlabel("seconds since start")
    mem_ax.legend(loc="upper right", fontsize="small")
    for ax in (rates_ax, tasks_ax, mem_ax):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.savefig(out, dpi=dpi, format="png")
    return out


def _stats_of(obj: Any) -> Any:
    """The ``DatasetStats`` behind ``obj`` (duck-typed: ``dataflow.exec`` is the
    planner's to import)."""
    if hasattr(obj, "timeline"):
        return obj
    # A Dataset keeps its last run's stream; a stream hands out its stats.
    stream = getattr(obj, "_last_stream", obj)
    if stream is None:
        raise ValueError(
            f"plot_stats: {obj!r} has not run yet; consume it first "
            "(iterate, materialize(), write_parquet(...))"
        )
    stats = getattr(stream, "stats", None)
    result = stats() if callable(stats) else None
    if not hasattr(result, "timeline"):
        raise TypeError(
            "plot_stats expects a Dataset that has run, an OutputStream or a DatasetStats, "
            f"got {type(obj).__name__}"
        )
    return result


def _short(name: str, width: int = 60) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."
