"""Local-backend behaviour beyond the contract: processes, crashes, GPUs, cleanup."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import cloudpickle
import psutil
import pyarrow as pa
import pytest

from runtime.backends.local import LocalBackend
from runtime.errors import ResourceError, TaskCancelledError, WorkerCrashedError
from runtime.resources import Resources
from runtime.task import current_task

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def report_worker(tables, seconds: float = 0.0):
    start = time.time()
    time.sleep(seconds)
    yield pa.table(
        {
            "pid": [os.getpid()],
            "cuda": [os.environ.get("CUDA_VISIBLE_DEVICES", "")],
            "gpu_ids": [list(current_task().gpu_ids)],
            "start": [start],
            "end": [time.time()],
        }
    )


def die_once(tables, marker: str):
    if not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    yield pa.table({"survived": [True]})


def always_die(tables):
    os.kill(os.getpid(), signal.SIGKILL)
    yield pa.table({"never": [1]})


def emit_big(tables, count: int):
    for i in range(count):
        yield pa.table({"x": pa.array([i] * 75_000, pa.int64())})


class Model:
    def __call__(self, tables):
        yield pa.table({"pid": [os.getpid()], "cuda": [os.environ.get("CUDA_VISIBLE_DEVICES")]})


def children() -> list[psutil.Process]:
    """This process's live worker processes (other suites may leave, e.g., Ray's)."""
    found = []
    for proc in psutil.Process().children():
        try:
            if "runtime.worker" in proc.cmdline() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def rows(backend, result) -> list[dict]:
    out = [r for ref in result.refs for r in backend.get(ref).to_pylist()]
    backend.free(result.refs)
    return out


def overlap(a: dict, b: dict) -> bool:
    return max(a["start"], b["start"]) < min(a["end"], b["end"])


@pytest.fixture
def local(tmp_path):
    backend = LocalBackend(
        num_cpus=2, num_gpus=0, object_store_memory=64 << 20, spill_dir=str(tmp_path)
    )
    yield backend
    backend.shutdown()


def test_construction_and_driver_work_start_no_process(local):
    assert children() == []
    ref = local.put(pa.table({"x": [1]}))
    fn = local.register_function(lambda tables: tables)
    result = local.submit(fn, [ref], in_driver=True).result(timeout=30)
    # A track per driver thread (traces): "driver-<thread number>".
    assert rows(local, result) == [{"x": 1}] and result.worker_id.startswith("driver-")
    assert children() == [] and local.worker_pids() == []


def test_prestarted_workers_take_the_first_tasks_and_shutdown_stops_them(tmp_path):
    backend = LocalBackend(num_cpus=2, num_gpus=0, spill_dir=str(tmp_path))
    backend.prestart()
    backend.prestart()  # a no-op once the workers exist
    started = sorted(backend.worker_pids())
    assert len(started) == 2 and sorted(p.pid for p in children()) == started
    fn = backend.register_function(report_worker)
    futures = [backend.submit(fn, (), (0.2,)) for _ in range(2)]
    pids = sorted(rows(backend, f.result(timeout=60))[0]["pid"] for f in futures)
    assert pids == started  # the tasks ran on the prestarted workers, one each
    backend.shutdown()
    assert children() == []


def report_modules(tables, names: tuple[str, ...]):
    yield pa.table({"loaded": [[n in sys.modules for n in names]]})


def test_prestart_waits_for_ready_workers_that_preloaded_their_modules(tmp_path):
    names = ("xml.dom.minidom", "wave")  # stdlib modules nothing else imports
    preloaded = LocalBackend(num_cpus=2, num_gpus=0, spill_dir=str(tmp_path), preload=names[:1])
    plain = LocalBackend(num_cpus=1, num_gpus=0, spill_dir=str(tmp_path))
    try:
        assert preloaded.prestart(wait=60) is True  # every worker said hello
        assert len(preloaded.worker_pids()) == 2
        got = []
        for backend in (preloaded, plain):
            fn = backend.register_function(report_modules)
            got.append(rows(backend, backend.submit(fn, (), (names,)).result(timeout=60)))
        assert got[0][0]["loaded"] == [True, False]
        assert got[1][0]["loaded"] == [False, False]
    finally:
        preloaded.shutdown()
        plain.shutdown()
    assert children() == []


def test_shutdown_while_workers_boot_is_prompt_and_quiet(tmp_path, capfd):
    backend = LocalBackend(num_cpus=2, num_gpus=0, spill_dir=str(tmp_path))
    backend.prestart()
    start = time.monotonic()
    backend.shutdown()
    assert time.monotonic() - start < 1.5  # booting workers are killed, not awaited
    assert children() == []
    assert "Traceback" not in capfd.readouterr().err


def test_workers_are_reused_and_pipelined(tmp_path):
    backend = LocalBackend(num_cpus=1, num_gpus=0, spill_dir=str(tmp_path))
    fn = backend.register_function(report_worker)
    futures = [backend.submit(fn, (), (0.05,)) for _ in range(6)]
    pids = {rows(backend, f.result(timeout=60))[0]["pid"] for f in futures}
    assert len(pids) == 1 and backend.worker_pids() == list(pids)
    assert backend.worker_rss_bytes() > 10 << 20
    backend.shutdown()


def test_fractional_cpus_run_more_tasks_than_cores(tmp_path):
    backend = LocalBackend(num_cpus=1, num_gpus=0, spill_dir=str(tmp_path))
    fn = backend.register_function(report_worker)
    futures = [backend.submit(fn, (), (1.5,), resources=Resources(cpu=0.25)) for _ in range(4)]
    reports = [rows(backend, f.result(timeout=60))[0] for f in futures]
    assert len({r["pid"] for r in reports}) == 4
    assert max(r["start"] for r in reports) < min(r["end"] for r in reports)
    backend.shutdown()


def test_killed_worker_is_retried_on_a_fresh_one(local, tmp_path):
    fn = local.register_function(die_once)
    result = local.submit(fn, (), (str(tmp_path / "marker"),)).result(timeout=60)
    assert rows(local, result) == [{"survived": True}]
    assert result.attempts == 2


def test_crash_past_retries_names_worker_task_and_signal(local):
    fn = local.register_function(always_die)
    future = local.submit(fn, max_retries=2, name="map_batches(f)")
    with pytest.raises(WorkerCrashedError) as info:
        future.result(timeout=60)
    message = str(info.value)
    assert "running map_batches(f) was killed by SIGKILL (retried 2 times)" in message
    assert info.value.exitcode == -signal.SIGKILL


def test_cancel_kills_the_worker_and_a_fresh_one_takes_over(local):
    fn = local.register_function(report_worker)
    first = local.submit(fn, (), (0.0,))
    first_pid = rows(local, first.result(timeout=60))[0]["pid"]
    slow = local.submit(fn, (), (60.0,))
    time.sleep(0.5)
    local.cancel(slow)
    with pytest.raises(TaskCancelledError):
        slow.result(timeout=10)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(first_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    after = [rows(local, local.submit(fn).result(timeout=60))[0]["pid"] for _ in range(2)]
    assert first_pid not in after


def test_declared_gpus_are_never_shared_by_whole_gpu_tasks(tmp_path):
    backend = LocalBackend(num_cpus=4, num_gpus=2, spill_dir=str(tmp_path))
    fn = backend.register_function(report_worker)
    whole = [backend.submit(fn, (), (1.0,), resources=Resources(cpu=1, gpu=1)) for _ in range(2)]
    a, b = (rows(backend, f.result(timeout=60))[0] for f in whole)
    assert overlap(a, b)
    assert {a["cuda"], b["cuda"]} == {"0", "1"}
    assert sorted(a["gpu_ids"] + b["gpu_ids"]) == [0, 1]
    halves = [backend.submit(fn, (), (1.0,), resources=Resources(cpu=1, gpu=0.5)) for _ in range(2)]
    c, d = (rows(backend, f.result(timeout=60))[0] for f in halves)
    assert overlap(c, d) and c["cuda"] == d["cuda"] and c["pid"] != d["pid"]
    with pytest.raises(ResourceError, match=r"task embed needs 3 GPUs, this backend has 2"):
        backend.submit(fn, resources=Resources(cpu=1, gpu=3), name="embed")
    with pytest.raises(ResourceError, match="whole numbers"):
        backend.submit(fn, resources=Resources(cpu=1, gpu=1.5))
    actor = backend.start_actor(backend.register_function(Model), resources=Resources(gpu=2))
    assert rows(backend, backend.submit_actor(actor).result(timeout=60))[0]["cuda"] == "0,1"
    assert backend.available_resources().gpu == 0
    backend.shutdown()


def test_custom_resources_limit_concurrency(tmp_path):
    backend = LocalBackend(
        num_cpus=2, num_gpus=0, resources={"disk_io": 1}, spill_dir=str(tmp_path)
    )
    fn = backend.register_function(report_worker)
    io = Resources.of(cpu=0.5, custom={"disk_io": 1})
    a, b = (
        rows(backend, f.result(timeout=60))[0]
        for f in [backend.submit(fn, (), (0.5,), resources=io) for _ in range(2)]
    )
    assert not overlap(a, b)
    with pytest.raises(ResourceError, match="'disk_io'"):
        backend.submit(fn, resources=Resources.of(custom={"disk_io": 2}))
    backend.shutdown()


def test_worker_outputs_over_capacity_spill(tmp_path):
    backend = LocalBackend(
        num_cpus=1, num_gpus=0, object_store_memory=1 << 20, spill_dir=str(tmp_path)
    )
    result = backend.submit(backend.register_function(emit_big), (), (3,)).result(timeout=60)
    assert [backend.get(r)["x"][0].as_py() for r in result.refs] == [0, 1, 2]
    stats = backend.store_stats()
    assert stats.used_bytes <= 1 << 20 and stats.spilled_bytes >= 2 * 600_000
    assert stats.num_objects == 3
    backend.shutdown()


def test_killed_actor_fails_its_calls(local):
    actor = local.start_actor(local.register_function(Model), name="embedder")
    actor.ready.result(timeout=60)
    pid = rows(local, local.submit_actor(actor).result(timeout=60))[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid in local.worker_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(
        WorkerCrashedError, match=f"worker {pid} of actor embedder was killed by SIGKILL"
    ):
        local.submit_actor(actor).result(timeout=10)
    local.stop_actor(actor)
    assert local.available_resources().cpu == 2


def test_unpicklable_function_fails_at_submit(local):
    import threading

    lock = threading.Lock()
    fn = local.register_function(lambda tables: [lock], name="holds_lock")
    with pytest.raises(TypeError, match="holds_lock cannot be pickled"):
        local.submit(fn)


def test_shutdown_leaves_no_process_file_or_mapping(tmp_path):
    backend = LocalBackend(num_cpus=2, num_gpus=0, spill_dir=str(tmp_path))
    fn = backend.register_function(report_worker)
    futures = [backend.submit(fn, (), (0.2,)) for _ in range(3)]
    running = backend.submit(fn, (), (60.0,))
    [f.result(timeout=60) for f in futures]
    pids = backend.worker_pids()
    assert pids and {p.pid for p in children()} >= set(pids)
    shm_dir, spill_dir = backend.store.session_dirs
    backend.shutdown()
    with pytest.raises(TaskCancelledError):
        running.result(timeout=1)
    assert children() == []
    assert not shm_dir.exists() and not spill_dir.exists()
    maps = Path("/proc/self/maps").read_text()
    assert str(shm_dir) not in maps
    with pytest.raises(RuntimeError, match="shut down"):
        backend.submit(fn)
