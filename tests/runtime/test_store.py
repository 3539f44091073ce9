"""The shared-memory object store: zero-copy reads, spill, lifetime and cleanup."""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from runtime.errors import ObjectLostError
from runtime.store import ObjectStore, StoreClient, make_shm_dir, remove_dead_sessions

ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture
def roots(tmp_path):
    shm, spill = tmp_path / "shm", tmp_path / "spill"
    shm.mkdir()
    spill.mkdir()
    return shm, spill


@pytest.fixture
def store(roots):
    store = ObjectStore(1 << 20, shm_root=roots[0], spill_root=roots[1])
    yield store
    store.shutdown()


def big_table(nbytes: int) -> pa.Table:
    n = nbytes // 8
    return pa.table({"x": np.arange(n, dtype=np.int64)})


def run_python(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def test_round_trip_small_and_large(store):
    small = pa.table({"a": [1, None, 3], "s": ["x", "y", None]})
    large = big_table(300_000)
    refs = [store.put(small), store.put(large)]
    assert store.get(refs[0]).to_pydict() == {"a": [1, None, 3], "s": ["x", "y", None]}
    assert store.get(refs[1]).equals(large)
    assert [r.num_rows for r in refs] == [3, 37_500]
    assert all(store.shm_path(r.id).stat().st_size == r.nbytes for r in refs)


def test_session_dirs_are_private_and_owned(store):
    for directory in store.session_dirs:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        pid, _, _ = (directory / "owner.pid").read_text().partition(" ")
        assert int(pid) == os.getpid()


def test_a_shm_dir_of_a_dead_owner_is_removed_by_the_next_sweep(tmp_path):
    path = make_shm_dir("split", root=tmp_path)
    assert path.name.startswith(f"dataflow-{os.getuid()}-split-")
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert remove_dead_sessions(tmp_path) == []  # its owner (this process) is alive
    (path / "owner.pid").write_text("999999999 0.0")
    assert remove_dead_sessions(tmp_path) == [path] and not path.exists()


def test_free_unlinks_and_later_get_raises(store):
    ref = store.put(pa.table({"x": [1]}))
    path = store.shm_path(ref.id)
    assert path.exists()
    store.free([ref])
    assert not path.exists()
    assert store.stats().num_objects == 0 and store.stats().used_bytes == 0
    with pytest.raises(ObjectLostError, match="freed"):
        store.get(ref)


def test_ref_of_another_session_is_rejected(store, roots):
    other = ObjectStore(1 << 20, shm_root=roots[0], spill_root=roots[1])
    ref = other.put(pa.table({"x": [1]}))
    with pytest.raises(ObjectLostError, match="belongs to store session"):
        store.get(ref)
    other.shutdown()


def test_put_over_capacity_spills_the_oldest_and_everything_stays_readable(store):
    table = big_table(600_000)
    first, second = store.put(table), store.put(table)
    # The newer object is the one read next in a stream: the older one made room.
    assert store.spill_path(first.id).exists() and not store.shm_path(first.id).exists()
    assert store.shm_path(second.id).exists()
    assert store.get(first).equals(table) and store.get(second).equals(table)
    stats = store.stats()
    assert (stats.used_bytes, stats.spilled_bytes, stats.num_objects) == (
        second.nbytes,
        first.nbytes,
        2,
    )
    store.free([first, second])
    assert not store.spill_path(first.id).exists()
    assert store.stats().used_bytes == 0


def test_an_object_bigger_than_the_store_goes_to_disk_and_evicts_nothing(store):
    resident = store.put(big_table(600_000))
    huge = store.put(big_table(2 << 20))
    assert huge.location == "disk" and store.shm_path(resident.id).exists()
    assert store.stats().used_bytes == resident.nbytes


def test_adopt_spills_older_objects_and_their_mappings_survive(store):
    table = big_table(600_000)
    resident = store.put(table)
    mapped = store.get(resident)  # a reader maps it...
    # ...then a worker writes straight into the session directory:
    worker_ref = StoreClient(store.location, id_prefix="w1").write(table)
    store.adopt(worker_ref)  # over capacity: the older object moves to disk
    assert not store.shm_path(resident.id).exists()
    assert store.spill_path(resident.id).exists()
    assert mapped.equals(table)  # the old mapping stays valid after the unlink
    assert store.get(resident).equals(table)  # new readers find the disk copy
    assert store.shm_path(worker_ref.id).exists()
    stats = store.stats()
    assert (stats.used_bytes, stats.spilled_bytes, stats.peak_bytes) == (
        worker_ref.nbytes,
        resident.nbytes,
        resident.nbytes,
    )


def test_in_process_objects_spill_too_and_export_finds_them_on_disk(store):
    table = big_table(600_000)
    local = store.put_local(table)
    newer = store.put_local(table)  # the in-process object is written to disk
    assert local.location == "mem" and store.spill_path(local.id).exists()
    store.export([local, newer])  # a worker task needs both: only `newer` is written to shm
    assert not store.shm_path(local.id).exists() and store.shm_path(newer.id).exists()
    assert StoreClient(store.location).read(local).equals(table)
    assert store.stats().restored_bytes == local.nbytes


ZERO_COPY_READER = """
    import json, pickle, sys
    import psutil
    from runtime.store import StoreClient
    location, ref = pickle.loads(bytes.fromhex(sys.argv[1]))
    client = StoreClient(location)
    proc = psutil.Process()
    before = proc.memory_info().rss
    table = client.read(ref)
    after = proc.memory_info().rss
    path = str(client.shm_path(ref.id))
    spans = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith(path):
                lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
                spans.append((lo, hi))
    buffers = [b for col in table.columns for chunk in col.chunks for b in chunk.buffers() if b]
    inside = all(any(lo <= b.address and b.address + b.size <= hi for lo, hi in spans) for b in buffers)
    print(json.dumps({"grew": after - before, "inside": inside, "n": len(buffers),
                      "rows": table.num_rows, "last": table["x"][-1].as_py()}))
"""


def test_remove_unadopted_drops_only_a_dead_workers_unreported_outputs(store):
    from runtime.worker import worker_object_prefix

    w3 = StoreClient(store.location, id_prefix=worker_object_prefix(3))
    w31 = StoreClient(store.location, id_prefix=worker_object_prefix(31))
    reported, lost = w3.write(pa.table({"x": [1]})), w3.write(pa.table({"x": [2]}))
    other = w31.write(pa.table({"x": [3]}))
    store.adopt(reported)
    assert store.remove_unadopted(worker_object_prefix(3)) == 1
    assert not w3.shm_path(lost.id).exists()
    assert store.get(reported).column("x").to_pylist() == [1]
    assert w31.read(other).column("x").to_pylist() == [3]  # worker 31 is not worker 3


def test_get_in_another_process_is_zero_copy(roots):
    store = ObjectStore(1 << 30, shm_root=roots[0], spill_root=roots[1])
    table = big_table(200 * 1024 * 1024)
    ref = store.put(table)
    out = run_python(ZERO_COPY_READER, pickle.dumps((store.location, ref)).hex())
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["rows"] == table.num_rows and report["last"] == table.num_rows - 1
    assert report["n"] >= 1 and report["inside"], "buffers must point into the file mapping"
    assert report["grew"] < 4 * 1024 * 1024, f"RSS grew by {report['grew']} bytes"
    store.shutdown()


OWNER = """
    import os, signal, sys, time
    import pyarrow as pa
    from runtime.store import ObjectStore
    store = ObjectStore(1 << 20, shm_root=sys.argv[1], spill_root=sys.argv[2])
    store.put(pa.table({"x": [1, 2, 3]}))
    print(*store.session_dirs, flush=True)
    mode = sys.argv[3]
    if mode == "wait":
        time.sleep(60)
    elif mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "kill-janitor-too":  # as if the janitor had been killed with the driver
        os.kill(store._janitor.pid, signal.SIGKILL)
        store._janitor.wait()
        os.kill(os.getpid(), signal.SIGKILL)
"""


def start_owner(roots, mode: str) -> tuple[subprocess.Popen, list[Path]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(OWNER), str(roots[0]), str(roots[1]), mode],
        env={**os.environ, "PYTHONPATH": ROOT},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    dirs = [Path(p) for p in proc.stdout.readline().split()]
    proc.stdout.close()
    assert len(dirs) == 2
    return proc, dirs


def test_interpreter_exit_removes_session_dirs(roots):
    proc, dirs = start_owner(roots, "exit")
    assert proc.wait(timeout=30) == 0
    assert not any(d.exists() for d in dirs)


def test_sigterm_removes_session_dirs(roots):
    proc, dirs = start_owner(roots, "wait")
    assert all(d.is_dir() for d in dirs)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == -signal.SIGTERM
    assert not any(d.exists() for d in dirs)


def test_sigkill_of_the_owner_removes_session_dirs_within_seconds(roots):
    proc, dirs = start_owner(roots, "kill")
    assert proc.wait(timeout=30) == -signal.SIGKILL
    deadline = time.monotonic() + 5  # the janitor removes them, no other run needed
    while any(d.exists() for d in dirs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(d.exists() for d in dirs)


def test_next_start_removes_sessions_of_dead_owners(roots):
    proc, dirs = start_owner(roots, "kill-janitor-too")
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert all(d.exists() for d in dirs)  # with no janitor SIGKILL leaves them behind...
    live = ObjectStore(1 << 20, shm_root=roots[0], spill_root=roots[1])
    assert not any(d.exists() for d in dirs)  # ...the next store removes them
    assert all(d.exists() for d in live.session_dirs)  # and keeps its own
    live.shutdown()
    assert sorted(os.listdir(roots[0])) == sorted(os.listdir(roots[1])) == []


def test_shutdown_removes_everything_and_is_idempotent(roots):
    store = ObjectStore(1 << 20, shm_root=roots[0], spill_root=roots[1])
    ref = store.put(big_table(600_000))
    store.put(big_table(600_000))  # spilled
    store.shutdown()
    store.shutdown()
    assert os.listdir(roots[0]) == os.listdir(roots[1]) == []
    with pytest.raises(ObjectLostError, match="shut down"):
        store.get(ref)


def test_capacity_must_be_positive(roots):
    with pytest.raises(ValueError, match="object_store_memory"):
        ObjectStore(0, shm_root=roots[0], spill_root=roots[1])
