"""Run workloads × engines × repeats, interleaved, each in a fresh sampled process.

Order is ``for repeat: for workload: for engine`` (A B C A B C), so slow
drift of the machine spreads over every engine instead of favouring one.
Each run yields one JSON record; :func:`summarize` turns the records into
medians and ratios (dataflow / each peer: below 1 means dataflow is faster;
``dataflow-ray`` / each peer when only the ray variant ran).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from benchmarks import engines, workloads
from benchmarks.probe import run_sampled

REPO_ROOT = Path(__file__).resolve().parent.parent
# Peers' telemetry must neither phone home nor wait on a network this machine may not have.
_QUIET_ENV = {"DAFT_ANALYTICS_ENABLED": "0", "SCARF_NO_ANALYTICS": "true", "DO_NOT_TRACK": "1"}


def plan(
    workload_names: list[str], engine_names: list[str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """The (workload, engine) pairs that can run here, and a note for each one skipped."""
    pairs, notes = [], []
    for engine_name in engine_names:
        reason = engines.get(engine_name).missing()
        if reason:
            notes.append(reason)
    for name in workload_names:
        workload = workloads.get(name)
        for engine_name in engine_names:
            if engines.get(engine_name).missing():
                continue
            if not workloads.has_run(workload, engine_name):
                notes.append(
                    f"{name}: no {engine_name!r} variant (it has {', '.join(workload.runs)})"
                )
                continue
            pairs.append((name, engine_name))
    return pairs, notes


def run_once(
    workload_name: str,
    engine_name: str,
    data_root: Path,
    *,
    repeat: int,
    timeout_s: float,
    params: dict[str, int] | None = None,
    cold: bool = False,
    cpus: str | None = None,
    max_rss_bytes: float | None = None,
) -> dict:
    """One fresh-process run; returns its JSON record (``error`` set when it failed).
    ``cold`` times the whole process (imports and engine start inside the timer);
    ``cpus`` pins it to those cores (``taskset -c`` syntax, e.g. ``"0"``); a run
    whose process tree passes ``max_rss_bytes`` of RSS is killed."""
    workload = workloads.get(workload_name)
    if workload.prepare is not None:
        from benchmarks.data import paths_of

        workload.prepare(paths_of(data_root))
    with tempfile.TemporaryDirectory(prefix=f"dataflow-bench-{workload_name}-") as tmp:
        result_file = Path(tmp) / "result.json"
        spec = {
            "workload": workload_name,
            "engine": engine_name,
            "data_root": str(data_root),
            "out_dir": str(Path(tmp) / "out"),
            "result_file": str(result_file),
            "params": params or {},
            "cold": cold,
        }
        Path(spec["out_dir"]).mkdir()
        env = {**os.environ, **_QUIET_ENV}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        spec["t0_epoch"] = time.time()
        pin = ["taskset", "-c", cpus] if cpus else []
        sample = run_sampled(
            [*pin, sys.executable, "-m", "benchmarks.child", json.dumps(spec)],
            env=env,
            timeout_s=timeout_s,
            max_rss_bytes=max_rss_bytes,
        )
        child = json.loads(result_file.read_text()) if result_file.exists() else {}
    record: dict = {
        "workload": workload_name,
        "engine": engine_name,
        "repeat": repeat,
        "cold": cold,
        "cpus": cpus,
        "peak_rss_bytes": sample.peak_rss_bytes,
        "peak_shm_bytes": sample.peak_shm_bytes,
        "leaked_processes": sample.leaked_processes,
        "process_s": round(sample.process_s, 4),
    }
    if sample.returncode != 0 or "error" in child or not child:
        if sample.over_rss:
            why = (
                f"killed after {sample.process_s:.0f} s: its process tree's RSS passed "
                f"{max_rss_bytes / 1024**3:.1f} GiB (--max-rss-gib)"
            )
        else:
            why = child.get("error") or (
                f"timed out after {timeout_s:.0f} s"
                if sample.returncode is None
                else f"exit code {sample.returncode}"
            )
        record["error"] = why
        record["stderr_tail"] = child.get("traceback") or sample.stderr_tail[-2000:]
        return record
    wall = sample.process_s if workload.timing == "process" else child["wall_s"]
    count = child["units"] if child["units"] is not None else child["rows"]
    record.update(
        wall_s=round(wall, 4),
        cpu_s=round(child["cpu_s"], 3),
        rate=round(count / wall, 2) if wall > 0 else None,
        rate_unit=f"{workload.unit}/s",
        ttfb_s=None if child["ttfb_s"] is None else round(child["ttfb_s"], 4),
        rows=child["rows"],
        checksum=child["checksum"],
        version=child["version"],
    )
    if child.get("startup_s") is not None:
        record["startup_s"] = round(child["startup_s"], 4)
    if child.get("extra"):
        record["extra"] = child["extra"]
    return record


def run_all(
    workload_names: list[str],
    engine_names: list[str],
    data_root: Path,
    *,
    repeat: int,
    timeout_s: float,
    params: dict[str, int] | None = None,
    cold: bool = False,
    cpus: str | None = None,
    max_rss_bytes: float | None = None,
) -> Iterator[dict]:
    """Yield one record per run, interleaving engines within each repeat."""
    pairs, _ = plan(workload_names, engine_names)
    for r in range(repeat):
        for workload_name, engine_name in pairs:
            yield run_once(
                workload_name,
                engine_name,
                data_root,
                repeat=r,
                timeout_s=timeout_s,
                params=params,
                cold=cold,
                cpus=cpus,
                max_rss_bytes=max_rss_bytes,
            )


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def baseline_of(engine_names: list[str]) -> str:
    """The engine the ratios compare against: ``dataflow`` when it ran, else the
    first dataflow variant (``dataflow-ray`` beside Ray Data), else ``dataflow``.

    >>> baseline_of(["dataflow-ray", "ray"])
    'dataflow-ray'
    """
    if "dataflow" in engine_names:
        return "dataflow"
    return next((e for e in engine_names if e.startswith("dataflow")), "dataflow")


def summarize(records: list[dict], baseline: str | None = None) -> list[dict]:
    """Medians per (workload, engine), checksum agreement, and ``baseline`` / engine
    ratios (``baseline``: see :func:`baseline_of`)."""
    if baseline is None:
        baseline = baseline_of(list(dict.fromkeys(r["engine"] for r in records)))
    rows: list[dict] = []
    by_workload: dict[str, list[dict]] = {}
    for rec in records:
        by_workload.setdefault(rec["workload"], []).append(rec)
    for name, recs in by_workload.items():
        ok = [r for r in recs if "error" not in r]
        checksums = {r["checksum"] for r in ok}
        medians = {}
        for engine_name in dict.fromkeys(r["engine"] for r in recs):
            mine = [r for r in ok if r["engine"] == engine_name]
            medians[engine_name] = {
                "workload": name,
                "engine": engine_name,
                "runs": len(mine),
                "errors": sum(1 for r in recs if r["engine"] == engine_name and "error" in r),
                "wall_s": _median([r["wall_s"] for r in mine]),
                "cpu_s": _median([r.get("cpu_s") for r in mine]),
                "rows": _median([r.get("rows") for r in mine]),
                "rate": _median([r["rate"] for r in mine]),
                "rate_unit": mine[0]["rate_unit"] if mine else None,
                "ttfb_s": _median([r["ttfb_s"] for r in mine]),
                "peak_rss_bytes": _median([r["peak_rss_bytes"] for r in mine]),
                "peak_shm_bytes": _median([r["peak_shm_bytes"] for r in mine]),
                "leaked_processes": sum(
                    r["leaked_processes"] for r in recs if r["engine"] == engine_name
                ),
                "checksums_agree": len(checksums) <= 1,
                "checksum": ",".join(sorted({r["checksum"] for r in mine})),
            }
        base = medians.get(baseline, {}).get("wall_s")
        for entry in medians.values():
            peer = entry["wall_s"]
            entry["ratio"] = (
                round(base / peer, 3) if base and peer and entry["engine"] != baseline else None
            )
            rows.append(entry)
    return rows


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _fmt_rate(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1e6:.2f} M" if value >= 1e5 else f"{value:,.0f}"


def table(summary: list[dict], baseline: str = "dataflow") -> str:
    """The summary as a Markdown table (what README.md keeps)."""
    lines = [
        f"| workload | engine | runs | wall s | rate | ttfb s | CPU s | CPU s / M rows | peak RSS GiB | peak shm GiB | {baseline} / engine | checksums |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    gib = 1024**3
    for e in summary:
        rate = f"{_fmt_rate(e['rate'])} {e['rate_unit'] or ''}".strip()
        agree = "agree" if e["checksums_agree"] else "DIFFER"
        runs = f"{e['runs']}" + (f" ({e['errors']} failed)" if e["errors"] else "")
        rss = None if e["peak_rss_bytes"] is None else e["peak_rss_bytes"] / gib
        shm = None if e["peak_shm_bytes"] is None else e["peak_shm_bytes"] / gib
        cpu, rows = e.get("cpu_s"), e.get("rows")
        per_m = cpu / (rows / 1e6) if cpu is not None and rows else None
        lines.append(
            f"| {e['workload']} | {e['engine']} | {runs} | {_fmt(e['wall_s'])} | {rate} | "
            f"{_fmt(e['ttfb_s'], 3)} | {_fmt(cpu)} | {_fmt(per_m)} | {_fmt(rss)} | {_fmt(shm)} | "
            f"{_fmt(e['ratio'])} | {agree} |"
        )
    return "\n".join(lines)


def machine() -> dict:
    """Where the numbers came from: host, cores, memory, Python, date."""
    import psutil

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "shm_gib": round(shutil.disk_usage("/dev/shm").total / 1024**3, 1)
        if os.path.isdir("/dev/shm")
        else None,
    }


def execute(
    workload_names: list[str],
    engine_names: list[str],
    data_root: Path,
    *,
    repeat: int,
    timeout_s: float,
    params: dict[str, int] | None = None,
    emit: Callable[[str], None] = print,
    cold: bool = False,
    cpus: str | None = None,
    max_rss_bytes: float | None = None,
) -> dict:
    """Run everything, emit each record as a JSON line, return records + summary + machine."""
    _, notes = plan(workload_names, engine_names)
    for note in notes:
        emit(f"# {note}")
    records = []
    for record in run_all(
        workload_names,
        engine_names,
        data_root,
        repeat=repeat,
        timeout_s=timeout_s,
        params=params,
        cold=cold,
        cpus=cpus,
        max_rss_bytes=max_rss_bytes,
    ):
        records.append(record)
        emit(json.dumps(record))
    baseline = baseline_of(engine_names)
    summary = summarize(records, baseline)
    emit(table(summary, baseline))
    return {
        "machine": machine(),
        "notes": notes,
        "records": records,
        "summary": summary,
        "baseline": baseline,
    }
