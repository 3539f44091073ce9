"""Ray backend specifics: objects in Ray's store, Ray tasks and actors, failures, loopback."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray

from runtime.backends.ray import RayBackend
from runtime.errors import (
    ObjectLostError,
    RemoteTaskError,
    ResourceError,
    RuntimeFailure,
    TaskCancelledError,
    WorkerCrashedError,
)
from runtime.resources import Resources
from runtime.store import table_nbytes
from runtime.task import current_task

# -- task functions (module level: workers import them from this module) ------


def scale(tables: list[pa.Table], factor: int):
    """Yield each input times ``factor``, then their row total as a one-row table."""
    total = 0
    for t in tables:
        current_task().add("rows_in", t.num_rows)
        total += t.num_rows
        yield pa.table({"x": pc.multiply(t["x"], factor)})
    yield pa.table({"total": [total]})


def crash_once(tables: list[pa.Table], marker: str):
    """Kill the worker on the first attempt (marker absent), succeed on the retry."""
    with open(marker, "a") as f:
        f.write("attempt\n")
    if sum(1 for _ in open(marker)) == 1:
        os._exit(1)
    yield pa.table({"x": pc.add(tables[0]["x"], 1)})


def always_crash(tables: list[pa.Table]):
    os._exit(3)
    yield pa.table({})


class BlockError(ValueError):
    def __init__(self, message: str, block: int) -> None:
        super().__init__(message)
        self.block = block

    def __reduce__(self):
        return (BlockError, (self.args[0], self.block))


def fail_on_block(tables: list[pa.Table], marker: str):
    with open(marker, "a") as f:
        f.write("attempt\n")
    yield pa.table({"x": [1]})
    raise BlockError("negative value in block 7", block=7)


class Unpicklable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = __import__("threading").Lock()


def raise_unpicklable(tables: list[pa.Table]):
    raise Unpicklable("holds a lock")
    yield


def yield_dict(tables: list[pa.Table]):
    yield {"x": [1]}


def big_block(tables: list[pa.Table], n: int):
    yield pa.table({"x": np.arange(n, dtype=np.int64)})


def hold(tables: list[pa.Table], seconds: float):
    time.sleep(seconds)
    yield pa.table({"start": [time.time() - seconds], "end": [time.time()]})


class Counter:
    """A stateful actor factory: the state counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, tables: list[pa.Table], offset: int):
        self.calls += 1
        for t in tables:
            yield pa.table({"x": pc.add(t["x"], offset), "call": [self.calls] * t.num_rows})


class BrokenFactory:
    def __init__(self) -> None:
        raise RuntimeError("model file missing: /models/m.bin")


def _plasma_mib() -> int:
    from ray._private.internal_api import memory_summary

    # The address matters: this session's Ray lives in a private temp dir, so
    # the default lookup (/tmp/ray) could find another Ray on this host.
    summary = memory_summary(ray.get_runtime_context().gcs_address, stats_only=True)
    match = re.search(r"Plasma memory usage (\d+) MiB", summary)
    assert match is not None
    return int(match.group(1))


# -- objects -------------------------------------------------------------------


def test_tasks_spread_over_nodes_unless_their_inputs_are_large() -> None:
    """As Ray Data: blocks balance between the nodes' object stores; a task that
    reads over 50 MiB runs where its inputs are (Ray's locality-aware default)."""
    from runtime.backends.ray import _ray_options

    opts = _ray_options(Resources.of(cpu=1, gpu=1, custom={"slot": 1}))
    assert opts == {
        "num_cpus": 1,
        "num_gpus": 1,
        "scheduling_strategy": "SPREAD",
        "resources": {"slot": 1},
    }
    assert _ray_options(Resources(cpu=1), 50 << 20)["scheduling_strategy"] == "SPREAD"
    assert _ray_options(Resources(cpu=1), (50 << 20) + 1)["scheduling_strategy"] == "DEFAULT"


def test_put_get_free_roundtrip(backend: RayBackend) -> None:
    table = pa.table({"x": [1, 2, 3], "s": ["a", "b", "c"]})
    ref = backend.put(table)
    assert (ref.num_rows, ref.nbytes, ref.location) == (3, table_nbytes(table), "ray")
    assert backend.get(ref).equals(table)
    assert backend.store_stats().used_bytes == table_nbytes(table)
    assert backend.store_stats().num_objects == 1
    backend.free([ref])
    backend.free([ref])  # idempotent
    stats = backend.store_stats()
    assert (stats.used_bytes, stats.num_objects, stats.peak_bytes) == (0, 0, table_nbytes(table))
    with pytest.raises(ObjectLostError, match="already freed"):
        backend.get(ref)


def test_put_rejects_non_tables(backend: RayBackend) -> None:
    with pytest.raises(TypeError, match="RayBackend.put expects a pyarrow.Table, got dict"):
        backend.put({"x": [1]})


def test_ref_of_another_backend_is_rejected(backend: RayBackend) -> None:
    other = RayBackend()
    try:
        ref = other.put(pa.table({"x": [1]}))
        with pytest.raises(ObjectLostError, match="belongs to another backend session"):
            backend.get(ref)
    finally:
        other.shutdown()


def test_task_output_is_read_zero_copy_from_plasma(backend: RayBackend) -> None:
    n = 25 * 1024 * 1024  # 200 MiB of int64
    fn = backend.register_function(big_block)
    ref = backend.submit(fn, [], (n,)).result(60).refs[0]
    assert (ref.num_rows, ref.nbytes) == (n, 8 * n)
    start = time.perf_counter()
    table = backend.get(ref)
    elapsed = time.perf_counter() - start
    address = table.column(0).chunk(0).buffers()[1].address
    maps = Path("/proc/self/maps").read_text().splitlines()
    owners = [
        line
        for line in maps
        if int(line.split("-")[0], 16) <= address < int(line.split()[0].split("-")[1], 16)
    ]
    assert len(owners) == 1 and "/dev/shm/plasma" in owners[0], owners
    assert elapsed < 0.5, f"get of 200 MiB took {elapsed:.3f} s: copied?"
    assert table.column(0)[n - 1].as_py() == n - 1
    # Free the 200 MiB now: Ray frees asynchronously, and a free still pending
    # would move the next test's baseline under it.
    del table
    backend.free([ref])


def _settled_plasma_mib() -> int:
    """Plasma usage once earlier frees are done (Ray frees asynchronously, and
    earlier tests' datasets free their blocks when collected): unchanged for 1 s."""
    gc.collect()
    last, steady = _plasma_mib(), 0
    for _ in range(200):
        time.sleep(0.1)
        now = _plasma_mib()
        steady = steady + 1 if now == last else 0
        if steady >= 10:
            return now
        last = now
    return last


def test_free_releases_ray_object_store_memory(backend: RayBackend) -> None:
    before = _settled_plasma_mib()
    fn = backend.register_function(big_block)
    ref = backend.submit(fn, [], (8 * 1024 * 1024,)).result(60).refs[0]  # 64 MiB
    assert _plasma_mib() >= before + 60
    backend.free([ref])
    deadline = time.monotonic() + 10
    while _plasma_mib() > before + 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _plasma_mib() <= before + 4


# -- tasks -----------------------------------------------------------------------


def test_task_runs_on_ray_with_inputs_args_and_metadata(backend: RayBackend) -> None:
    a = backend.put(pa.table({"x": [1, 2, 3]}))
    b = backend.put(pa.table({"x": [10]}))
    fn = backend.register_function(scale, name="scale")
    result = backend.submit(fn, [a, b], (5,), name="scale[0]").result(60)
    assert [backend.get(r).to_pydict() for r in result.refs] == [
        {"x": [5, 10, 15]},
        {"x": [50]},
        {"total": [4]},
    ]
    assert [r.num_rows for r in result.refs] == [3, 1, 1]
    assert [str(s) for s in result.schemas] == ["x: int64", "x: int64", "total: int64"]
    assert result.counters == {"rows_in": 4.0}
    node, pid = result.worker_id.split(":")
    assert node == ray.get_runtime_context().get_node_id()[:12]
    assert int(pid) != os.getpid()
    assert 0 <= result.wall_s < 30 and result.cpu_s >= 0
    assert backend.store_stats().num_objects == 5
    assert backend.worker_rss_bytes() > 10 * 1024 * 1024  # a live Python worker


def test_wait_any_honours_timeout_and_returns_done_futures(backend: RayBackend) -> None:
    fn = backend.register_function(hold)
    slow = backend.submit(fn, [], (30.0,), resources=Resources(cpu=0.5))
    fast = backend.submit(fn, [], (0.0,), resources=Resources(cpu=0.5))
    assert backend.wait_any([fast], 30) == [fast]
    start = time.monotonic()
    assert backend.wait_any([slow], 0.3) == []
    assert 0.25 <= time.monotonic() - start < 3
    assert backend.wait_any([slow, fast], None) == [fast]  # fast is done: no blocking
    backend.cancel(slow)
    assert slow.done()
    with pytest.raises(TaskCancelledError, match="was cancelled"):
        slow.result(5)


def test_custom_resources_schedule_and_limit_tasks(backend: RayBackend) -> None:
    assert backend.total_resources().custom_dict["slot"] == 2
    fn = backend.register_function(hold)
    # Each task takes both slots: the two must run one after the other.
    both = Resources.of(cpu=0.5, custom={"slot": 2})
    futures = [backend.submit(fn, [], (0.4,), resources=both) for _ in range(2)]
    spans = sorted(
        tuple(backend.get(f.result(60).refs[0]).to_pylist()[0].values()) for f in futures
    )
    assert spans[0][1] <= spans[1][0] + 0.05, spans
    with pytest.raises(ResourceError, match=r"hold needs .*slot=3.*no Ray node has that much"):
        backend.submit(fn, [], (0.0,), resources=Resources.of(cpu=1, custom={"slot": 3}))
    with pytest.raises(ResourceError, match="tpu=1"):
        backend.submit(fn, [], (0.0,), resources=Resources.of(custom={"tpu": 1}))


def test_user_error_keeps_identity_and_is_not_retried(backend: RayBackend, tmp_path: Path) -> None:
    marker = tmp_path / "attempts"
    fn = backend.register_function(fail_on_block)
    future = backend.submit(fn, [], (str(marker),), max_retries=3, name="map_batches(check)")
    with pytest.raises(RemoteTaskError) as info:
        future.result(60)
    err = info.value
    assert (err.type_name, err.message) == ("BlockError", "negative value in block 7")
    assert err.task_name == "map_batches(check)"
    assert "fail_on_block" in err.traceback_text
    assert 'raise BlockError("negative value in block 7", block=7)' in err.traceback_text
    assert isinstance(err.cause, BlockError) and err.cause.block == 7
    assert marker.read_text() == "attempt\n"
    assert backend.store_stats().num_objects == 0  # the partial output was dropped


def test_unpicklable_user_error_keeps_type_and_message(backend: RayBackend) -> None:
    fn = backend.register_function(raise_unpicklable)
    with pytest.raises(RemoteTaskError, match="Unpicklable: holds a lock") as info:
        backend.submit(fn).result(60)
    assert info.value.cause is None
    assert "raise_unpicklable" in info.value.traceback_text


def test_yielding_a_non_table_is_a_clear_error(backend: RayBackend) -> None:
    fn = backend.register_function(yield_dict)
    with pytest.raises(RemoteTaskError, match="yielded a dict; task functions must yield"):
        backend.submit(fn, name="yield_dict").result(60)


def test_killed_worker_is_retried_with_identical_result(
    backend: RayBackend, tmp_path: Path
) -> None:
    marker = tmp_path / "attempts"
    ref = backend.put(pa.table({"x": [1, 2, 3]}))
    fn = backend.register_function(crash_once)
    result = backend.submit(fn, [ref], (str(marker),), max_retries=2).result(60)
    assert backend.get(result.refs[0]).to_pydict() == {"x": [2, 3, 4]}
    assert marker.read_text() == "attempt\nattempt\n"


def test_worker_death_past_retries_is_worker_crashed_error(backend: RayBackend) -> None:
    fn = backend.register_function(always_crash)
    with pytest.raises(WorkerCrashedError, match="'always_crash'.*Ray worker died"):
        backend.submit(fn, max_retries=0).result(60)


def test_unknown_function_and_closed_backend_are_clear_errors(backend: RayBackend) -> None:
    fn = backend.register_function(scale)
    backend.release_function(fn)
    with pytest.raises(ValueError, match="function 'scale' is not registered"):
        backend.submit(fn)
    with pytest.raises(TypeError, match="expects a callable, got int"):
        backend.register_function(3)  # type: ignore[arg-type]
    backend.shutdown()
    with pytest.raises(RuntimeFailure, match=r"RayBackend.put: the backend was shut down"):
        backend.put(pa.table({"x": [1]}))


# -- actors ----------------------------------------------------------------------


def test_actor_builds_state_once_and_serves_calls(backend: RayBackend) -> None:
    ref = backend.put(pa.table({"x": [1, 2]}))
    actor = backend.start_actor(
        backend.register_function(Counter), resources=Resources(cpu=0.5), name="Counter"
    )
    assert actor.ready.result(60).refs == []
    outputs = [
        backend.get(backend.submit_actor(actor, [ref], (k,)).result(60).refs[0]).to_pydict()
        for k in (10, 20)
    ]
    assert outputs == [{"x": [11, 12], "call": [1, 1]}, {"x": [21, 22], "call": [2, 2]}]
    backend.stop_actor(actor)
    with pytest.raises(ValueError, match="actor 'Counter' was stopped"):
        backend.submit_actor(actor, [ref], (1,))


def test_actor_factory_error_is_remote_task_error(backend: RayBackend) -> None:
    actor = backend.start_actor(
        backend.register_function(BrokenFactory), resources=Resources(cpu=0.5)
    )
    with pytest.raises(RemoteTaskError, match="RuntimeError: model file missing"):
        actor.ready.result(60)
    with pytest.raises(RemoteTaskError, match="model file missing") as info:
        backend.submit_actor(actor).result(60)
    assert isinstance(info.value.cause, RuntimeError)
    backend.stop_actor(actor)


# -- lifetime and network ------------------------------------------------------


def test_reused_ray_survives_backend_shutdown(ray_session: None) -> None:
    b = RayBackend(num_cpus=64)  # Ray is running: reused as it is, options ignored
    assert b.total_resources().cpu == 2
    b.shutdown()
    b.shutdown()
    assert ray.is_initialized()


def test_local_ray_listens_on_loopback_only(ray_session: None) -> None:
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    listening = []
    for proc in psutil.Process().children(recursive=True):
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:  # an idle worker Ray just reaped
            continue
        listening += [(proc.name(), c.laddr.ip) for c in conns if c.status == psutil.CONN_LISTEN]
    assert listening, "no Ray server found among this process's children"
    exposed = [
        (name, ip) for name, ip in listening if ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")
    ]
    assert exposed == []


_OWNED_RAY_SCRIPT = """
import json, os, time, psutil, pyarrow as pa
from runtime.backends.ray import RayBackend
from runtime.resources import Resources
from runtime.task import current_task

def on_gpu(tables):
    time.sleep(0.5)  # both tasks hold their GPU at once
    yield pa.table({"pid": [os.getpid()], "gpu_ids": [list(current_task().gpu_ids)],
                    "visible": [os.environ.get("CUDA_VISIBLE_DEVICES")]})

# Two declared GPUs: Ray assigns them without hardware, like CUDA_VISIBLE_DEVICES would.
backend = RayBackend(num_cpus=2, num_gpus=2)
temp_dir = backend._temp_dir
fn = backend.register_function(on_gpu)
futures = [backend.submit(fn, resources=Resources(cpu=1, gpu=1)) for _ in range(2)]
rows = [backend.get(f.result(60).refs[0]).to_pylist()[0] for f in futures]
children = [p.pid for p in psutil.Process().children(recursive=True)]
backend.shutdown()
alive = [pid for pid in children if psutil.pid_exists(pid)
         and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
print(json.dumps({"rows": rows, "children": children, "temp_dir": temp_dir,
                  "temp_left": os.path.exists(temp_dir), "alive": alive}))
"""


def test_owned_ray_assigns_gpus_then_stops_every_process_and_its_temp_dir(
    tmp_path: Path,
) -> None:
    """A backend that started Ray hands each GPU task its own device, and its
    shutdown leaves no process and no temp dir behind."""
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", _OWNED_RAY_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    rows = report["rows"]
    assert sorted((r["gpu_ids"], r["visible"]) for r in rows) == [([0], "0"), ([1], "1")]
    assert all(r["pid"] in report["children"] for r in rows)
    assert report["temp_dir"].startswith(tempfile.gettempdir())
    assert (report["temp_left"], report["alive"]) == (False, [])
