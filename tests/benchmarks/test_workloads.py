"""Every workload runs on a tiny dataset and every engine's checksum equals the pyarrow reference."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from benchmarks import engines, workloads
from benchmarks.workloads import RunContext, Workload

PEERS = [
    "pyarrow-mp",
    "daft",
    "dataflow",
    pytest.param("ray", marks=pytest.mark.slow),
    pytest.param("dataflow-ray", marks=pytest.mark.slow),
]

# Workloads that compute another workload's result on another path (a backend, a
# service) and have no hand-written run of their own are checked against it.
SAME_RESULT_AS = {"etl_ray": "etl", "service_feed": "feed", "ddp_feed": "feed"}
# Each run of these imports a table library in a fresh process (10-30 s under load):
# their engines' checksums run with the slow tests (CI runs them), the reference always.
SLOW_WORKLOADS = {"delta_read", "iceberg_read", "lance_read"}
# The out-of-core set (issue 17) repeats sort/groupby/join/shuffle/repartition with a
# write and a checked output; tests/dataflow/test_out_of_core.py runs dataflow on each
# at 2M rows in the slow tier too, so here the engines run there as well.
SLOW_WORKLOADS |= {name for name in workloads.names() if name.startswith("ooc_")}
# Each Ray Data run starts its own Ray (20-25 s here, ~1.5 min for four of them in a
# 15-minute suite): the suite checks Ray Data on etl and feed; DATAFLOW_TEST_ALL_PEERS=1
# checks it on every workload. (`python -m benchmarks run` compares every engine's
# checksum on each run too.)
RAY_DATA_CHECKED = {"etl", "feed"}
ALL_PEERS = bool(os.environ.get("DATAFLOW_TEST_ALL_PEERS"))


def _reference(workload: str) -> tuple[str, str]:
    """``(workload, engine)`` of the hand-written reference: single-process
    pyarrow where there is one, else the multiprocessing variant."""
    base = SAME_RESULT_AS.get(workload, workload)
    return base, "pyarrow" if "pyarrow" in workloads.get(base).runs else "pyarrow-mp"


def _pairs(engine_names: list) -> list:
    out = []
    for name in workloads.names():
        runs = workloads.get(name).runs
        for engine in engine_names:
            engine_name = engine if isinstance(engine, str) else engine.values[0]
            if engine_name in runs and (name, engine_name) != _reference(name):
                marks = () if isinstance(engine, str) else engine.marks
                if name in SLOW_WORKLOADS:
                    marks = (pytest.mark.slow,)
                if engine_name == "ray" and name not in RAY_DATA_CHECKED and not ALL_PEERS:
                    reason = (
                        "Ray Data checked on the headline workloads (DATAFLOW_TEST_ALL_PEERS=1)"
                    )
                    marks = (*marks, pytest.mark.skip(reason=reason))
                out.append(pytest.param(name, engine_name, marks=marks, id=f"{name}-{engine_name}"))
    return out


def _skip_if_missing(engine: str) -> None:
    reason = engines.get(engine).missing()
    if reason:
        pytest.skip(reason)


def _ok(record: dict) -> dict:
    assert "error" not in record, f"{record['error']}\n{record.get('stderr_tail', '')}"
    return record


@pytest.mark.parametrize("workload", [w for w in workloads.names() if w not in SAME_RESULT_AS])
def test_pyarrow_reference_exact(run_tiny, tiny_data, workload: str) -> None:
    rec = _ok(run_tiny(*_reference(workload)))
    expected = {
        "startup": "rows=1;id=0",
        "overhead": "rows=1200",
        "smallfiles": "count=600;mapped=600",
    }
    if workload in expected:
        assert rec["checksum"] == expected[workload]
    if workload in ("feed", "shuffle"):
        assert rec["rows"] == tiny_data.rows == 6_000
        assert rec["ttfb_s"] is not None and 0 < rec["ttfb_s"] <= rec["wall_s"]
    if workload == "shuffle":
        assert rec["checksum"] == f"rows=6000;sum_id={6000 * 5999 // 2}"
    assert rec["wall_s"] > 0 and rec["peak_rss_bytes"] > 10 * 2**20
    assert rec["leaked_processes"] == 0


@pytest.mark.parametrize(("workload", "engine"), _pairs(PEERS))
def test_engine_checksum_matches_pyarrow(run_tiny, workload: str, engine: str) -> None:
    _skip_if_missing(engine)
    reference = _ok(run_tiny(*_reference(workload)))
    rec = run_tiny(workload, engine)
    for _ in range(2):
        if not (engine == "daft" and str(rec.get("error", "")).startswith("exit code -")):
            break
        # Daft 0.7 now and then dies by a signal (SIGSEGV/SIGABRT) under load;
        # that is the peer's bug, not a checksum difference: try again.
        rec = run_tiny(workload, engine)
    _ok(rec)
    assert rec["checksum"] == reference["checksum"]
    assert rec["rows"] == reference["rows"]
    assert rec["leaked_processes"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("split", [0, 1])
def test_ddp_feed_reports_every_rank(tiny_data, split: int) -> None:
    from pathlib import Path

    from benchmarks.runner import run_once

    params = {"ddp_split": split}
    rec = _ok(
        run_once(
            "ddp_feed", "dataflow", Path(tiny_data.root), repeat=0, timeout_s=240, params=params
        )
    )
    ranks = rec["extra"]["ranks"]
    assert [r["rows"] for r in ranks] == [3_000, 3_000]  # 6,000 rows, half each
    assert all(r["rows_per_s"] > 0 and 0 < r["ttfb_s"] <= rec["wall_s"] for r in ranks)
    assert rec["ttfb_s"] == max(r["ttfb_s"] for r in ranks)
    assert rec["extra"]["ddp"] == (
        "one execution on rank 0, streaming_split" if split else "a share per rank"
    )
    assert rec["startup_s"] > 0 and rec["leaked_processes"] == 0


@pytest.fixture(scope="module")
def on_ray(ray_session: None):
    """dataflow's ray backend on the session's Ray, as the ``dataflow-ray`` engine
    runs it (one Ray for every workload instead of one per run)."""
    import dataflow

    yield dataflow.init("ray")
    dataflow.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("workload", workloads.ON_RAY_CLUSTER)
def test_cluster_workloads_run_on_ray_tasks_exact(on_ray, run_tiny, tiny_data, tmp_path, workload):
    """``dataflow-ray`` runs the ``dataflow`` code of each cluster workload: every
    task of it ran in a Ray worker of the Ray node (the Chrome trace names each
    task's ``node:pid``) and the checksum equals the hand-written reference's."""
    import importlib

    import ray

    import dataflow
    from dataflow import session

    reference = _ok(run_tiny(*_reference(workload)))
    w = workloads.get(workload)
    for module in w.preload:
        importlib.import_module(module)
    ctx = RunContext(data=tiny_data, out_dir=tmp_path / "out", engine="dataflow-ray")
    ctx.out_dir.mkdir()
    dctx = dataflow.DataContext.get_current()
    dctx.trace_path = str(tmp_path / "trace.json")
    try:
        result = w.run_for("dataflow-ray")(ctx)
    finally:
        dctx.trace_path = None
    result = w.check(ctx) if w.check is not None else result
    assert session.running_backend() is on_ray and on_ray.name == "ray"
    assert result.checksum == reference["checksum"] and result.rows == reference["rows"]
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    workers = {e["args"]["worker"] for e in events if e.get("cat") == "task"}
    node = ray.get_runtime_context().get_node_id()[:12]
    assert workers and all(wk.startswith(f"{node}:") for wk in workers), workers
    assert f"{node}:{os.getpid()}" not in workers  # none ran in the driver


def test_etl_checksum_counts_filtered_rows(run_tiny, tiny_data) -> None:
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    table = pads.dataset(list(tiny_data.main_files), format="parquet").to_table()
    d = pc.add(pc.multiply(table["a"], table["b"]), pc.cast(table["c"], "float64"))
    kept = table.filter(pc.greater(d, 0))
    rec = _ok(run_tiny("etl", "pyarrow"))
    assert rec["checksum"].startswith(f"rows={kept.num_rows};sum_id={pc.sum(kept['id']).as_py()};")


def test_every_workload_module_is_well_formed() -> None:
    known = set(engines.names())
    assert {"etl", "feed", "pyudf", "smallfiles", "overhead", "startup"} <= set(workloads.names())
    for name in workloads.names():
        w = workloads.get(name)
        assert isinstance(w, Workload) and w.name == name and w.description
        base, reference = _reference(name)
        assert reference in workloads.get(base).runs, name
        assert {"dataflow", "dataflow-ray"} & set(w.runs), name
        assert set(w.runs) <= known, name
        assert w.dataset in ("none", "main", "smallfiles")


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown workload 'nope'; known: .*etl"):
        workloads.get("nope")
    with pytest.raises(KeyError, match=r"unknown engine 'spark'; known: dataflow, .*daft"):
        engines.get("spark")
    with pytest.raises(KeyError, match=r"workload 'startup' has no run for engine 'pyarrow-mp'"):
        workloads.get("startup").run_for("pyarrow-mp")


def test_missing_package_skips_with_install_hint() -> None:
    engine = engines.Engine("ghost", "no_such_package_xyz", lambda: None, lambda _: None)
    assert engine.missing() == (
        "engine 'ghost' skipped: package 'no_such_package_xyz' is not installed "
        "(pip install -e '.[bench]')"
    )
    assert engines.get("pyarrow").missing() is None


def test_first_batch_records_only_the_first(tiny_data) -> None:
    ctx = RunContext(data=tiny_data, out_dir=tiny_data.root, engine="pyarrow")
    ctx.start_clock()
    ctx.first_batch()
    first = ctx.first_batch_s
    ctx.first_batch()
    assert first is not None and ctx.first_batch_s == first
    assert ctx.param("overhead_blocks", 2000) == 2000


def test_checksum_is_exact_for_ints_and_8_digits_for_floats() -> None:
    assert workloads.checksum(rows=3, s=1.0000000001, t="x") == "rows=3;s=1.0000000e+00;t=x"
    assert workloads.checksum(a=123456789.0) == workloads.checksum(a=123456789.00001)


@pytest.mark.skipif(importlib.util.find_spec("daft") is None, reason="daft is not installed")
def test_daft_identity_count_runs_the_udf() -> None:
    import daft

    from benchmarks.workloads._common import daft_identity_count

    assert daft_identity_count(daft.range(0, 1000, partitions=4), "id") == 1000


def test_lakehouse_tables_are_built_once_and_rebuilt_if_interrupted(tmp_path) -> None:
    from benchmarks.workloads._lakehouse import _cached

    calls = []

    def write(path):
        calls.append(path)
        (path / "data").write_text("x")

    target = tmp_path / "t"
    assert _cached(target, write) == target and (target / ".complete").exists()
    _cached(target, write)
    assert len(calls) == 1  # cached
    (target / ".complete").unlink()
    (target / "partial").write_text("left by an interrupted build")
    _cached(target, write)
    assert len(calls) == 2 and not (target / "partial").exists()
