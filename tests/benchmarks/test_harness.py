"""The runner's measuring side: process-tree sampling, leaks, timeouts, medians, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from benchmarks.__main__ import main
from benchmarks.data import DataSpec, ensure
from benchmarks.probe import run_sampled
from benchmarks.runner import REPO_ROOT, summarize, table


def test_orphaned_child_is_counted_as_leaked_and_killed() -> None:
    sample = run_sampled(
        ["sh", "-c", 'sleep 60 & echo $! > "$0"; exit 3', "/dev/null"],
        env=dict(os.environ),
        timeout_s=30,
        grace_s=0.3,
    )
    assert sample.returncode == 3
    assert sample.leaked_processes == 1
    sleepers = [
        p
        for p in psutil.process_iter(["cmdline", "environ"])
        if p.info["cmdline"] == ["sleep", "60"]
        and (p.info["environ"] or {}).get("DATAFLOW_BENCH_RUN")
    ]
    assert sleepers == []


def test_timeout_kills_the_run() -> None:
    t0 = time.perf_counter()
    sample = run_sampled(["sleep", "60"], env=dict(os.environ), timeout_s=0.5, grace_s=0.2)
    assert sample.returncode is None
    assert time.perf_counter() - t0 < 10


def test_rss_sums_the_whole_tree() -> None:
    # Two processes each holding ~200 MiB: the sum must exceed one of them.
    code = "import time; x = bytearray(200 * 2**20); time.sleep(1.5)"
    cmd = [
        sys.executable,
        "-c",
        f"import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', {code!r}]); {code}; p.wait()",
    ]
    sample = run_sampled(cmd, env=dict(os.environ), timeout_s=30)
    assert sample.returncode == 0
    assert sample.peak_rss_bytes > 400 * 2**20


def test_a_tree_over_the_rss_cap_is_killed_at_once() -> None:
    code = "import time; x = bytearray(300 * 2**20); time.sleep(60)"
    t0 = time.perf_counter()
    sample = run_sampled(
        [sys.executable, "-c", code], env=dict(os.environ), timeout_s=60, max_rss_bytes=200 * 2**20
    )
    assert sample.over_rss and sample.returncode is None
    assert sample.peak_rss_bytes > 200 * 2**20
    assert time.perf_counter() - t0 < 30  # not the 60 s sleep: killed when over


def _rec(engine: str, wall: float, checksum: str = "rows=1", repeat: int = 0) -> dict:
    return {
        "workload": "w",
        "engine": engine,
        "repeat": repeat,
        "wall_s": wall,
        "rate": 1 / wall,
        "rate_unit": "rows/s",
        "ttfb_s": None,
        "peak_rss_bytes": 2**30,
        "peak_shm_bytes": 0,
        "leaked_processes": 0,
        "checksum": checksum,
        "rows": 1,
    }


def test_summary_medians_ratios_and_checksum_disagreement() -> None:
    records = [_rec("dataflow", w, repeat=i) for i, w in enumerate([1.0, 3.0, 2.0])]
    records += [_rec("daft", w, repeat=i) for i, w in enumerate([4.0, 4.0, 5.0])]
    records.append(
        {
            "workload": "w",
            "engine": "daft",
            "repeat": 3,
            "error": "boom",
            "peak_rss_bytes": 0,
            "peak_shm_bytes": 0,
            "leaked_processes": 1,
        }
    )
    summary = {s["engine"]: s for s in summarize(records)}
    assert summary["dataflow"]["wall_s"] == 2.0 and summary["dataflow"]["ratio"] is None
    assert summary["daft"]["wall_s"] == 4.0 and summary["daft"]["ratio"] == 0.5
    assert summary["daft"]["errors"] == 1 and summary["daft"]["leaked_processes"] == 1
    assert all(s["checksums_agree"] for s in summary.values())
    text = table(list(summary.values()))
    assert "| w | daft | 3 (1 failed) | 4.00 |" in text and "| 0.50 | agree |" in text

    # CPU seconds per million rows beside wall: 3 CPU-s over 1.5M rows is 2.00.
    cpu = [{**_rec("dataflow", 1.0), "cpu_s": 3.0, "rows": 1_500_000}]
    assert "| 1.00 | 1 rows/s | – | 3.00 | 2.00 | 1.00 |" in table(summarize(cpu))

    # Beside Ray Data alone, dataflow's ray variant is the baseline of the ratios.
    on_ray = summarize([_rec("dataflow-ray", 1.0), _rec("ray", 4.0)])
    assert [(s["engine"], s["ratio"]) for s in on_ray] == [("dataflow-ray", None), ("ray", 0.25)]
    assert "| dataflow-ray / engine |" in table(on_ray, "dataflow-ray")

    differ = summarize([_rec("dataflow", 1.0), _rec("daft", 1.0, checksum="rows=2")])
    assert [s["checksums_agree"] for s in differ] == [False, False]
    assert "DIFFER" in table(differ)


def test_data_is_seeded_dense_and_keyed_by_size(tmp_path) -> None:
    import pyarrow.compute as pc
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    spec = DataSpec(rows=3_001, files=2, row_group_rows=700, small_files=3, small_file_rows=10)
    paths = ensure(spec, tmp_path)
    assert paths.rows == 3_001 and paths.small_rows == 30 and len(paths.main_files) == 2
    table = pads.dataset(list(paths.main_files), format="parquet").to_table()
    assert table.schema.names == ["id", "a", "b", "c", "cat", "text"]
    assert pc.sum(table["id"]).as_py() == 3_001 * 3_000 // 2
    assert len(pc.unique(table["cat"])) == 20
    assert pq.ParquetFile(paths.main_files[0]).metadata.num_row_groups == 3  # 1,501 rows / 700
    assert ensure(spec, tmp_path).root == paths.root
    again = pq.read_table(paths.main_files[1])
    assert again.equals(pq.read_table(ensure(spec, tmp_path / "other").main_files[1]))
    assert (
        ensure(
            DataSpec(rows=3_002, files=2, row_group_rows=700, small_files=3, small_file_rows=10),
            tmp_path,
        ).root
        != paths.root
    )
    with pytest.raises(ValueError, match="DataSpec.files must be >= 1, got 0"):
        DataSpec(files=0)


def test_cli_run_writes_json_lines_summary_and_json_out(tmp_path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "run",
            "smallfiles",
            "etl",
            "--engines",
            "pyarrow,pyarrow-mp",
            "--repeat",
            "2",
            "--rows",
            "2000",
            "--files",
            "2",
            "--row-group-rows",
            "500",
            "--small-files",
            "4",
            "--small-file-rows",
            "20",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--json-out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    # Interleaved: every engine once per repeat, repeat 0 before repeat 1.
    assert [(r["workload"], r["engine"], r["repeat"]) for r in lines] == [
        (w, e, r) for r in (0, 1) for w in ("smallfiles", "etl") for e in ("pyarrow", "pyarrow-mp")
    ]
    assert {r["checksum"] for r in lines if r["workload"] == "smallfiles"} == {"count=80;mapped=80"}
    assert "| smallfiles | pyarrow-mp | 2 |" in proc.stdout
    saved = json.loads(out.read_text())
    assert saved["records"] == lines and saved["machine"]["cpus"] == os.cpu_count()
    assert all(s["checksums_agree"] for s in saved["summary"])


def test_cli_rejects_bad_arguments(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "nope"])
    assert exc.value.code == 2
    assert "unknown workload 'nope'; known:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "etl", "--param", "blocks"])
    assert "--param expects NAME=INT" in capsys.readouterr().err
    assert main(["list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert any(line.startswith("etl ") and "write_parquet" in line for line in listed)


def test_cold_run_times_the_whole_process_and_counts_worker_cpu(tiny_data) -> None:
    """A cold run includes the interpreter, imports and the engine's start: it takes
    longer than the warm run of the same work, and its CPU counts the workers'."""
    from benchmarks.runner import run_once

    root = Path(tiny_data.root)
    warm = run_once("etl", "dataflow", root, repeat=0, timeout_s=240)
    cold = run_once("etl", "dataflow", root, repeat=0, timeout_s=240, cold=True)
    for rec in (warm, cold):
        assert "error" not in rec, rec.get("stderr_tail")
        assert rec["checksum"] == warm["checksum"] and rec["leaked_processes"] == 0
    assert cold["cold"] and not warm["cold"]
    # The process's own start (python + import dataflow + pyarrow) is inside.
    assert cold["wall_s"] > warm["wall_s"] and cold["wall_s"] <= cold["process_s"]
    # At least the driver's imports and the run itself cost CPU.
    assert cold["cpu_s"] > 0.2 and warm["cpu_s"] > 0


def test_scaling_runs_each_size_and_core_count_pinned_and_plots(tmp_path, capsys) -> None:
    """Two sizes x one core count of a pyarrow workload: each run pinned with
    taskset, a point per (workload, engine, size, cores), a table and a PNG."""
    from benchmarks import scaling

    assert scaling.files_for(8_000_000) == 16 and scaling.files_for(64_000_000) == 64
    assert scaling.cpu_list(1) == str(min(os.sched_getaffinity(0)))
    with pytest.raises(ValueError, match="--cores 999"):
        scaling.cpu_list(999)
    out, png = tmp_path / "s.json", tmp_path / "s.png"
    argv = ["scaling", "etl", "smallfiles", "--engines", "pyarrow", "--sizes", "3000,6000"]
    argv += ["--cores", "1", "--small-files", "4", "--small-file-rows", "50", "--row-group-rows"]
    argv += ["1000", "--cache-dir", str(tmp_path / "cache"), "--json-out", str(out)]
    assert main([*argv, "--png", str(png)]) == 0
    points = json.loads(out.read_text())["points"]
    got = sorted((p["workload"], p["data_rows"], p["cores"], p["runs"]) for p in points)
    # smallfiles reads the same small files at every size: it runs at the first only.
    assert got == [("etl", 3000, 1, 1), ("etl", 6000, 1, 1), ("smallfiles", 3000, 1, 1)]
    assert all(p["rate"] > 0 and p["checksums_agree"] for p in points)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = capsys.readouterr().out.splitlines()
    assert "| etl | 3,000 | 1 | " in "\n".join(lines)
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert {r["cpus"] for r in records} == {scaling.cpu_list(1)}
    with pytest.raises(SystemExit):
        main(["scaling", "etl", "--sizes", "ten"])
