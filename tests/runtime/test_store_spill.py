"""Spill accounting and a full spill disk: bytes spilled and restored, seconds
writing, the directory; a failed spill raises SpillError naming the directory
and leaves no file behind (injected ENOSPC everywhere, a real full tmpfs where
this process may mount one)."""

from __future__ import annotations

import errno
import os

import numpy as np
import pyarrow as pa
import pytest

import runtime.store as store_module
from runtime.backends.local import LocalBackend
from runtime.errors import SpillError
from runtime.store import ObjectStore, StoreClient

MiB = 1 << 20


def big_table(nbytes: int, start: int = 0) -> pa.Table:
    return pa.table({"x": np.arange(start, start + nbytes // 8, dtype=np.int64)})


def data_files(directory: str) -> list[str]:
    """The object files in a session directory (its owner file is not one)."""
    return sorted(n for n in os.listdir(directory) if n != "owner.pid")


@pytest.fixture
def store(tmp_path):
    (tmp_path / "shm").mkdir()
    s = ObjectStore(MiB, shm_root=tmp_path / "shm", spill_root=tmp_path / "spill")
    yield s
    s.shutdown()


def test_stats_count_bytes_spilled_restored_and_the_seconds_writing(store):
    table = big_table(600_000)
    spilled, resident = store.put(table), store.put(table)  # the older one spills
    worker = StoreClient(store.location, id_prefix="w1").write(table)
    store.adopt(worker)  # over capacity: `resident` is copied to disk
    assert store.get(worker).equals(table) and store.get(spilled).equals(table)
    store.export([resident])  # a worker task will read it from disk
    stats = store.stats()
    assert stats.spilled_bytes == spilled.nbytes + resident.nbytes
    assert stats.restored_bytes == spilled.nbytes + resident.nbytes  # resident reads don't count
    assert stats.spill_write_s > 0
    assert stats.spill_dir == store.location.spill_dir
    assert data_files(stats.spill_dir) == sorted([f"{spilled.id}.arrow", f"{resident.id}.arrow"])


def test_a_missing_spill_root_is_created(tmp_path):
    (tmp_path / "shm").mkdir()
    s = ObjectStore(MiB, shm_root=tmp_path / "shm", spill_root=tmp_path / "a" / "b")
    try:
        assert s.put(big_table(2 * MiB)).location == "disk"
        assert os.path.dirname(s.location.spill_dir) == str(tmp_path / "a" / "b")
    finally:
        s.shutdown()


def _fail_writes(monkeypatch) -> None:
    """Spill writes put 4 KiB on disk, then fail with ENOSPC (a disk filling up mid-write)."""

    def write_ipc(path: str, table: pa.Table) -> int:
        with open(path, "wb") as f:
            f.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_module, "_write_ipc", write_ipc)


def _fail_copies(monkeypatch) -> None:
    """Copies of worker outputs to the spill directory fail the same way."""

    def copyfile(src: str, dst: str) -> None:
        with open(dst, "wb") as f:
            f.write(b"\0" * 4096)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_module.shutil, "copyfile", copyfile)


def two_blocks(tables: list) -> list:
    return [big_table(800_000), big_table(800_000)]


def test_a_full_disk_on_put_raises_spill_error_naming_the_directory(store, monkeypatch):
    resident = store.put(big_table(600_000))
    _fail_writes(monkeypatch)
    with pytest.raises(SpillError, match="disk is full") as info:
        store.put(big_table(2 * MiB))  # bigger than the store: straight to disk
    spill_dir = store.location.spill_dir
    assert info.value.directory == spill_dir and spill_dir in str(info.value)
    assert "DataContext.spill_path" in str(info.value)  # the knob
    assert data_files(spill_dir) == []  # the partial file is gone
    assert store.stats().num_objects == 1 and store.get(resident).num_rows == 75_000


def test_a_full_disk_while_evicting_keeps_the_old_object_in_memory(store, monkeypatch):
    old = store.put_local(big_table(600_000))
    _fail_writes(monkeypatch)
    with pytest.raises(SpillError, match=store.location.spill_dir):
        store.put_local(big_table(600_000))  # `old` cannot be written out to make room
    assert data_files(store.location.spill_dir) == []
    stats = store.stats()
    assert (stats.num_objects, stats.used_bytes, stats.spilled_bytes) == (1, old.nbytes, 0)
    assert store.get(old).num_rows == 75_000


def test_a_full_disk_while_adopting_a_worker_output_removes_both_copies(store, monkeypatch):
    store.put(big_table(600_000))
    worker = StoreClient(store.location, id_prefix="w1").write(big_table(600_000))
    _fail_copies(monkeypatch)
    with pytest.raises(SpillError, match=store.location.spill_dir):
        store.adopt(worker)
    assert data_files(store.location.spill_dir) == []
    assert not store.shm_path(worker.id).exists()
    assert store.stats().num_objects == 1


def test_a_real_full_disk_fails_cleanly(tmp_path, tiny_disk):
    (tmp_path / "shm").mkdir()
    s = ObjectStore(MiB, shm_root=tmp_path / "shm", spill_root=tiny_disk)
    try:
        # Each put spills the one before: three 0.6 MB files fit on the 2 MiB disk.
        refs = [s.put(big_table(600_000, start=i)) for i in range(4)]
        with pytest.raises(SpillError, match="No space left on device") as info:
            s.put(big_table(600_000))
        assert info.value.directory == s.location.spill_dir
        assert data_files(s.location.spill_dir) == sorted(f"{r.id}.arrow" for r in refs[:3])
        assert [s.get(r).column("x")[0].as_py() for r in refs] == [0, 1, 2, 3]
    finally:
        s.shutdown()
    assert os.listdir(tiny_disk) == []


def test_a_worker_task_whose_output_cannot_spill_fails_with_spill_error(tmp_path, monkeypatch):
    backend = LocalBackend(num_cpus=1, num_gpus=0, object_store_memory=MiB, spill_dir=str(tmp_path))
    try:
        fn = backend.register_function(two_blocks)
        first = backend.submit(fn).result(timeout=60)  # the second output spills the first
        _fail_copies(monkeypatch)
        with pytest.raises(SpillError, match="disk is full"):
            backend.submit(fn).result(timeout=60)
        spill_dir = backend.store.location.spill_dir
        assert data_files(spill_dir) == [f"{first.refs[0].id}.arrow"]
        assert backend.store_stats().num_objects == 2  # the failed task's outputs are gone
        monkeypatch.undo()
        again = backend.submit(fn).result(timeout=60)  # the pool still works
        assert [backend.get(r).num_rows for r in again.refs] == [100_000, 100_000]
    finally:
        backend.shutdown()


def _block_spill_writes(monkeypatch) -> tuple:
    """Spill writes wait for ``release`` (``started`` is set once one waits)."""
    import threading

    started, release = threading.Event(), threading.Event()
    real = store_module._write_ipc

    def write_ipc(path: str, table: pa.Table) -> int:
        if "spill" in os.path.basename(os.path.dirname(path)):
            started.set()
            assert release.wait(10)
        return real(path, table)

    monkeypatch.setattr(store_module, "_write_ipc", write_ipc)
    return started, release


def test_the_store_serves_other_threads_while_a_victim_is_written_out(store, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    victim = store.put_local(big_table(600_000))
    other = store.put_local(big_table(8_000, start=10**6))
    started, release = _block_spill_writes(monkeypatch)
    with ThreadPoolExecutor(1) as pool:
        newcomer = pool.submit(store.put_local, big_table(600_000, start=1))
        assert started.wait(10)
        # The spill is under way: the lock is free for the others.
        assert store.get(victim).column("x")[0].as_py() == 0  # still readable, from memory
        store.free([other])
        during = store.stats()
        release.set()
        new = newcomer.result(10)
    assert during.spilled_bytes == 0 and during.num_objects == 2
    stats = store.stats()
    assert (stats.num_objects, stats.used_bytes) == (2, new.nbytes)
    assert stats.spilled_bytes == victim.nbytes and stats.peak_bytes <= MiB
    assert data_files(store.location.spill_dir) == [f"{victim.id}.arrow"]
    assert store.get(victim).column("x")[0].as_py() == 0  # now from disk
    assert store.get(new).column("x")[0].as_py() == 1


def test_a_victim_freed_while_it_is_written_out_leaves_no_file(store, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    victim = store.put_local(big_table(600_000))
    started, release = _block_spill_writes(monkeypatch)
    with ThreadPoolExecutor(1) as pool:
        newcomer = pool.submit(store.put_local, big_table(600_000, start=1))
        assert started.wait(10)
        store.free([victim])
        release.set()
        new = newcomer.result(10)
    stats = store.stats()
    assert (stats.num_objects, stats.used_bytes, stats.spilled_bytes) == (1, new.nbytes, 0)
    assert data_files(store.location.spill_dir) == []


def test_a_worker_output_victim_freed_while_it_is_copied_leaves_no_file(store, monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    victim = store.put(big_table(600_000))  # a shared-memory file: spilled by copying
    started, release = threading.Event(), threading.Event()
    real = store_module.shutil.copyfile

    def copyfile(src, dst):
        started.set()
        assert release.wait(10)
        return real(src, dst)

    monkeypatch.setattr(store_module.shutil, "copyfile", copyfile)
    worker = StoreClient(store.location, id_prefix="w1").write(big_table(600_000, start=2))
    with ThreadPoolExecutor(1) as pool:
        adopting = pool.submit(store.adopt, worker)
        assert started.wait(10)
        store.free([victim])  # its shared-memory file goes now
        release.set()
        adopting.result(10)
    stats = store.stats()
    assert (stats.num_objects, stats.used_bytes, stats.spilled_bytes) == (1, worker.nbytes, 0)
    assert data_files(store.location.spill_dir) == []
    assert data_files(store.location.shm_dir) == [f"{worker.id}.arrow"]
    assert store.get(worker).column("x")[0].as_py() == 2
