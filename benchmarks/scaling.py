"""Scaling curves: rows/s of each workload at several data sizes and core counts.

``python -m benchmarks scaling etl feed groupby sort smallfiles --sizes 8000000,32000000,64000000
--cores 1,2 --engines dataflow,daft,pyarrow --json-out scaling.json --png scaling.png`` runs every
(size, cores) configuration through the same harness as ``run`` (fresh processes, engines
interleaved, medians), pinning each run to the first ``cores`` CPUs with ``taskset``. Each size
has its own cached dataset (one file per million rows, at least 16). ``smallfiles`` reads the
same 2,000 small files at every size, so it is run once per core count. The PNG has one panel
per workload: throughput against rows (log scale), a colour per engine, solid lines for all
cores and dashed for one; a cost that grows linearly with rows is a flat line.

>>> files_for(8_000_000), files_for(64_000_000)
(16, 64)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from benchmarks.data import DataSpec, ensure

FIXED_SIZE = {"smallfiles"}
"""Workloads whose input does not change with ``--rows``: run at the first size only."""


def files_for(rows: int) -> int:
    """Files of the dataset of ``rows`` rows: one per million rows, at least 16."""
    return max(16, rows // 1_000_000)


def cpu_list(cores: int) -> str:
    """``taskset -c`` argument for the first ``cores`` CPUs this process may use."""
    import os

    allowed = sorted(os.sched_getaffinity(0))
    if cores < 1 or cores > len(allowed):
        raise ValueError(f"scaling: --cores {cores} is not between 1 and {len(allowed)}")
    return ",".join(str(c) for c in allowed[:cores])


def run_scaling(
    workload_names: list[str],
    engine_names: list[str],
    sizes: list[int],
    cores: list[int],
    base: DataSpec,
    *,
    repeat: int,
    timeout_s: float,
    cache_dir: Path | None = None,
    emit: Callable[[str], None] = print,
) -> dict:
    """Run every configuration; returns ``{"machine", "points"}`` where each point is one
    (workload, engine, rows, cores) median summary from ``runner.summarize``."""
    from benchmarks.runner import execute, machine

    points = []
    for i, rows in enumerate(sizes):
        names = [w for w in workload_names if i == 0 or w not in FIXED_SIZE]
        if not names:
            continue
        spec = replace(base, rows=rows, files=files_for(rows))
        paths = ensure(spec, cache_dir)
        for n in cores:
            emit(f"# {rows:,} rows, {n} core(s)")
            out = execute(
                names,
                engine_names,
                paths.root,
                repeat=repeat,
                timeout_s=timeout_s,
                emit=emit,
                cpus=cpu_list(n),
            )
            for entry in out["summary"]:
                points.append(
                    {**entry, "rows": entry["rows"] or rows, "data_rows": rows, "cores": n}
                )
    return {"machine": machine(), "points": points}


def plot(result: dict, path: Path) -> None:
    """Throughput against rows, one panel per workload (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in result["points"] if p.get("rate")]
    workloads = list(dict.fromkeys(p["workload"] for p in points))
    engines = list(dict.fromkeys(p["engine"] for p in points))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    cols = min(3, max(1, len(workloads)))
    rows = -(-len(workloads) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, workload in zip(axes.flat, workloads):
        mine = [p for p in points if p["workload"] == workload]
        for e, engine in enumerate(engines):
            for n in sorted({p["cores"] for p in mine}, reverse=True):
                line = sorted(
                    (p for p in mine if p["engine"] == engine and p["cores"] == n),
                    key=lambda p: p["data_rows"],
                )
                if not line:
                    continue
                style = "-" if n == max(p["cores"] for p in mine) else "--"
                ax.plot(
                    [p["rows"] for p in line],
                    [p["rate"] / 1e6 for p in line],
                    style,
                    marker="o",
                    color=colours[e % len(colours)],
                    label=f"{engine}, {n} core{'s' if n > 1 else ''}",
                )
        ax.set_xscale("log")
        ax.set_title(workload)
        ax.set_xlabel("rows")
        ax.set_ylabel("M rows/s")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[len(workloads) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(result: dict) -> str:
    """The points as a Markdown table: one row per (workload, rows, cores)."""
    points = result["points"]
    engines = list(dict.fromkeys(p["engine"] for p in points))
    header = "| workload | rows | cores | " + " | ".join(f"{e} M rows/s" for e in engines) + " |"
    lines = [header, "|---|---|---|" + "---|" * len(engines)]
    order = list(dict.fromkeys(p["workload"] for p in points))
    keys = sorted(
        dict.fromkeys((p["workload"], p["rows"], p["cores"]) for p in points),
        key=lambda k: (order.index(k[0]), k[1], k[2]),
    )
    for workload, rows, n in keys:
        rates = {
            p["engine"]: p["rate"]
            for p in points
            if (p["workload"], p["rows"], p["cores"]) == (workload, rows, n)
        }
        cells = [f"{rates[e] / 1e6:.2f}" if rates.get(e) else "–" for e in engines]
        lines.append(f"| {workload} | {rows:,} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(result: dict, json_out: Path | None, png: Path | None) -> None:
    if json_out:
        json_out.write_text(json.dumps(result, indent=1))
    if png:
        plot(result, png)
