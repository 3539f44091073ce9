"""The shared-memory Arrow object store, with spill to local disk.

Every object is one Arrow IPC file named by its id in a per-session directory
under ``/dev/shm`` (mode 0700). ``get`` memory-maps the file, so any process of
the session reads a block without copying it. Two classes split the roles:

* ``StoreClient`` reads and writes objects by id and keeps no accounting; worker
  processes use it to write their task outputs straight into the session
  directory (only the small ``ObjectRef`` travels back through the pipe).
* ``ObjectStore`` is the driver's store: it owns the session directories,
  accounts bytes in use against ``capacity_bytes`` (``adopt`` accounts an
  object a worker wrote), spills what does not fit to a disk directory, frees
  objects, and removes everything at ``shutdown()``, interpreter exit or
  SIGTERM. At start it also removes the directories of sessions whose owning
  process is dead (each session directory holds an ``owner.pid`` file).

Objects made in the driver (outputs of tasks on driver threads, blocks put by
the driver) stay in the driver's memory as tables, with no file and no copy
(``put_local``); a worker process that needs one gets it written to shared
memory under the same id first (``export``). Every process still resolves an
object by its id alone.

When an object does not fit, the oldest resident objects spill to make room
(an object that can never fit goes to disk itself): a new block is about to be
read by the next task, while the old ones are those that wait longest, such as
an exchange's map outputs waiting for the last map (spilling the new block
instead would write it out and read it back at once). Readers resolve an id in
the shared-memory directory first, then in the spill directory. Spilling
writes the disk copy under a temporary name, renames it and only then unlinks
the shared-memory file, so a concurrent reader always finds a complete file,
and a mapping taken before the unlink stays valid. The thread that needs the
room picks the victims under the store's lock and writes them out after
releasing it, so other threads keep putting, reading and freeing meanwhile
(out-of-core join at 32M rows: 8.7 s of waits for the lock summed over the
threads before, 1.1 s after; the victims still count as used until written,
but as leaving, so no two threads pick the same room). A spill that fails (disk
full, quota, file size limit) removes its partial file and raises
``SpillError`` naming the spill directory. ``stats()`` counts bytes spilled,
bytes of spilled objects read back (restored) and the seconds spent writing
spill files.

>>> store = ObjectStore(capacity_bytes=1 << 30)
>>> ref = store.put(pa.table({"x": [1, 2, 3]}))
>>> store.get(ref).column("x").to_pylist()
[1, 2, 3]
>>> store.shutdown()
"""

from __future__ import annotations

import atexit
import errno
import itertools
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow as pa

from runtime.backends.base import StoreStats
from runtime.errors import ObjectLostError, SpillError
from runtime.lifeline import start_janitor, stop_janitor
from runtime.refs import ObjectRef
from runtime.sessiondirs import OWNER_FILE, make_session_dir, owner_alive

_PREFIX = f"dataflow-{os.getuid()}-"
_SUFFIX = ".arrow"
# A directory without an owner file younger than this may be one that another
# process is creating right now; older ones are debris.
_ORPHAN_GRACE_S = 60.0
# Below this size an object is written from, and read into, process memory.
_SMALL_BYTES = 64 * 1024
# Up to this size a table's bytes are its whole buffers' (``table_nbytes``).
_WHOLE_BUFFERS_UP_TO = 64 * 1024
# Explicit options: the defaults re-read environment variables on every call.
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions()
_READ_OPTIONS = pa.ipc.IpcReadOptions()


def default_shm_root() -> Path:
    """``/dev/shm`` where it exists (Linux), else the temp directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def make_shm_dir(tag: str, root: Path | None = None) -> Path:
    """A new private directory (mode 0700, with an owner file) in ``root`` (the
    shared-memory root by default), named like the store's sessions: if its owner
    crashes, the next session's ``remove_dead_sessions`` removes it. The caller
    removes it when done.

    >>> path = make_shm_dir("split")  # doctest: +SKIP
    >>> shutil.rmtree(path)  # doctest: +SKIP
    """
    base = root if root is not None else default_shm_root()
    return make_session_dir(base / f"{_PREFIX}{tag}-{secrets.token_hex(6)}")


def table_nbytes(table: pa.Table | pa.RecordBatch) -> int:
    """The bytes ``table`` (or a record batch) counts for in the store and the
    budgets: those of the buffer ranges it references (Arrow's ``nbytes``).

    ``Table.nbytes`` releases the GIL, so a thread that contends for it waits
    up to the 5 ms switch interval per call (measured: 6.6 us alone, 5.2 ms
    beside one busy thread), and tasks on threads size every small block.
    ``get_total_buffer_size()`` keeps the GIL (0.2 us a column) and counts
    whole buffers: the same bytes unless a column slices bigger buffers, and
    never fewer. Up to 64 KiB of buffers its answer stands (over by less than
    that); above, the exact count costs little next to the block's own work.

    >>> table_nbytes(pa.table({"x": pa.array(range(1000), pa.int64())}))
    8000
    """
    total = table.get_total_buffer_size()
    return total if total <= _WHOLE_BUFFERS_UP_TO else table.nbytes


def default_capacity(shm_root: Path) -> int:
    """30 % of RAM, but never more than the free space of the shm filesystem
    (containers often mount a small /dev/shm)."""
    ram = int(psutil.virtual_memory().total * 0.3)
    return min(ram, int(shutil.disk_usage(shm_root).free * 0.9))


@dataclass(frozen=True)
class StoreLocation:
    """Where one session's objects live; picklable, handed to worker processes."""

    session: str
    shm_dir: str
    spill_dir: str


class StoreClient:
    """Reads and writes objects of one session by id, without accounting.

    >>> client = StoreClient(store.location, id_prefix="w1")  # doctest: +SKIP
    """

    def __init__(self, location: StoreLocation, id_prefix: str = "") -> None:
        self.location = location
        # Plain string paths: pathlib costs more than the syscalls of a small object.
        self._shm = location.shm_dir + os.sep
        self._spill = location.spill_dir + os.sep
        self._prefix = f"{id_prefix}{secrets.token_hex(4)}-"
        self._counter = itertools.count()

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._counter)}"

    def shm_path(self, object_id: str) -> Path:
        return Path(self._shm + object_id + _SUFFIX)

    def spill_path(self, object_id: str) -> Path:
        return Path(self._spill + object_id + _SUFFIX)

    def write(self, table: pa.Table, *, to_disk: bool = False) -> ObjectRef:
        """Write ``table`` as a new object (shared memory, or the spill dir)."""
        return self._write_file(self.new_id(), table, to_disk)

    def _write_file(self, object_id: str, table: pa.Table, to_disk: bool) -> ObjectRef:
        path = (self._spill if to_disk else self._shm) + object_id + _SUFFIX
        try:
            nbytes = _write_ipc(path, table)
        except OSError as exc:
            _unlink_quietly(path)  # a full disk leaves a partial file behind
            if to_disk:
                raise spill_error(self.location.spill_dir, table_nbytes(table), exc) from exc
            raise
        location = "disk" if to_disk else "shm"
        return ObjectRef(object_id, nbytes, table.num_rows, location, self.location.session)

    def read(self, ref: ObjectRef) -> pa.Table:
        """Memory-map ``ref``'s file and return its table (zero-copy); small
        objects are read into memory, which is cheaper than a mapping."""
        if ref.session != self.location.session:
            raise ObjectLostError(
                f"{ref!r} belongs to store session {ref.session!r}, not to this one "
                f"({self.location.session!r}): refs do not outlive their backend"
            )
        for base in (self._shm, self._spill):
            path = base + ref.id + _SUFFIX
            try:
                if ref.nbytes < _SMALL_BYTES:
                    source = pa.py_buffer(_read_file(path, ref.nbytes))
                else:
                    source = pa.memory_map(path, "r")
            except FileNotFoundError:
                continue
            return pa.ipc.RecordBatchFileReader(source, options=_READ_OPTIONS).read_all()
        raise ObjectLostError(
            f"{ref!r} is not in the object store: it was freed or its session ended"
        )

    def unlink(self, object_id: str, spilled: bool | None = None) -> None:
        """Remove an object's file (``spilled`` None: wherever it is)."""
        bases = {None: (self._shm, self._spill), False: (self._shm,), True: (self._spill,)}
        for base in bases[spilled]:
            try:
                os.unlink(base + object_id + _SUFFIX)
            except FileNotFoundError:
                pass


def _write_ipc(path: str, table: pa.Table) -> int:
    """Write ``table`` as an Arrow IPC file at ``path`` (a new file); its size."""
    if table_nbytes(table) < _SMALL_BYTES:
        # Serializing to memory and writing once costs half of streaming
        # through an OSFile for small blocks, which dominate task overhead.
        sink = pa.BufferOutputStream()
        with pa.ipc.RecordBatchFileWriter(sink, table.schema, options=_WRITE_OPTIONS) as w:
            w.write_table(table)
        data = sink.getvalue()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked (a nearly full disk)
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return data.size
    with pa.OSFile(path, "wb") as sink:
        with pa.ipc.RecordBatchFileWriter(sink, table.schema, options=_WRITE_OPTIONS) as w:
            w.write_table(table)
        return sink.tell()


def _unlink_quietly(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def spill_error(directory: str, nbytes: int, exc: OSError) -> SpillError:
    """The error of a failed spill write: names the directory, the cause and the knobs.

    >>> str(spill_error("/d", 3 << 20, OSError(errno.ENOSPC, "No space left on device")))[:72]
    'spilling a 3.0 MiB block to /d failed: the disk is full (No space left o'
    """
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    what = "the disk is full" if exc.errno in _DISK_FULL else "the write failed"
    return SpillError(
        f"spilling a {nbytes / (1 << 20):.1f} MiB block to {directory} failed: {what} "
        f"({reason}); the object store spills blocks that do not fit in "
        "object_store_memory: free space there, point DataContext.spill_path (or "
        "init(spill_dir=...)) at a bigger disk, or raise object_store_memory",
        directory,
    )


def _read_file(path: str, size: int) -> bytes:
    """The whole file (``size`` is a hint: an exported object's file is a bit
    bigger than its table's bytes)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(fd, size + 4096)]
        while chunks[-1]:
            chunks.append(os.read(fd, 1 << 16))
    finally:
        os.close(fd)
    return b"".join(chunks)


class ObjectStore(StoreClient):
    """The driver's store: accounting against a capacity, spill, lifetime.

    ``capacity_bytes`` defaults to 30 % of RAM; ``spill_root`` (default: the
    temp directory) receives the oldest objects when new ones do not fit.
    """

    def __init__(
        self,
        capacity_bytes: int | None = None,
        *,
        shm_root: str | os.PathLike | None = None,
        spill_root: str | os.PathLike | None = None,
    ) -> None:
        shm_base = Path(shm_root) if shm_root is not None else default_shm_root()
        spill_base = Path(spill_root) if spill_root is not None else Path(tempfile.gettempdir())
        if capacity_bytes is not None and capacity_bytes <= 0:
            raise ValueError(
                f"object_store_memory must be a positive number of bytes, got {capacity_bytes}"
            )
        spill_base.mkdir(parents=True, exist_ok=True)  # e.g. DataContext.spill_path
        for base in {shm_base, spill_base}:
            remove_dead_sessions(base)
        session = f"{os.getpid()}-{secrets.token_hex(6)}"
        shm_dir = make_session_dir(shm_base / f"{_PREFIX}{session}")
        spill_dir = make_session_dir(spill_base / f"{_PREFIX}spill-{session}")
        super().__init__(StoreLocation(session, str(shm_dir), str(spill_dir)), id_prefix="d")
        # Removes both directories within seconds if this process dies by kill -9.
        self._janitor = start_janitor([shm_dir, spill_dir])
        # A store dropped without shutdown() still closes the janitor's pipe (its
        # directories go then, not at exit) and leaves no unclosed file behind.
        self._stop_janitor = weakref.finalize(self, stop_janitor, self._janitor)
        self.capacity_bytes = (
            capacity_bytes if capacity_bytes is not None else default_capacity(shm_base)
        )
        self._lock = threading.Lock()
        self._objects: dict[str, tuple[int, bool]] = {}  # id -> (nbytes, spilled)
        self._local: dict[str, pa.Table] = {}  # in-process objects (put_local), no file yet
        # Objects held in memory (shared or in-process), oldest first: spilled first.
        self._resident: OrderedDict[str, None] = OrderedDict()
        # Victims being written to disk outside the lock (id -> bytes): still in
        # memory and in ``_used``, no longer resident (no one picks them twice).
        self._spilling: dict[str, int] = {}
        self._spilling_bytes = 0
        self._used = 0
        self._peak = 0
        self._spilled_total = 0
        self._restored_total = 0
        self._spill_write_s = 0.0
        self._closed = False
        _live_stores.add(self)
        _install_exit_hooks()

    @property
    def session_dirs(self) -> tuple[Path, Path]:
        return Path(self.location.shm_dir), Path(self.location.spill_dir)

    def put(self, table: pa.Table) -> ObjectRef:
        """Write ``table`` into the store (older objects spill to make room; it
        goes straight to disk if it can never fit)."""
        self._check_open("put")
        with self._lock:
            fits, victims = self._make_room(table_nbytes(table))
        self._spill_victims(victims)
        start = time.perf_counter()
        ref = self.write(table, to_disk=not fits)
        if not fits:
            with self._lock:
                self._spill_write_s += time.perf_counter() - start
        self.adopt(ref)
        return ref

    def put_local(self, table: pa.Table) -> ObjectRef:
        """Keep ``table`` in this process as an object (no file, no copy) when it
        fits in the capacity, else write it to disk; ``export`` writes it to
        shared memory when a worker process needs it."""
        self._check_open("put")
        nbytes = table_nbytes(table)
        victims: list[str] = []
        with self._lock:
            # The common case first, with nothing to spill: every task on a
            # driver thread puts its blocks here (``overhead``: 2,000 a run).
            fits = self._fits(nbytes)
            if not fits:
                fits, victims = self._make_room(nbytes)
            if fits:
                object_id = self.new_id()
                self._local[object_id] = table
                self._objects[object_id] = (nbytes, False)
                self._resident[object_id] = None
                self._add_used(nbytes)
        ref = (
            ObjectRef(object_id, nbytes, table.num_rows, "mem", self.location.session)
            if fits
            else None
        )
        if victims:
            try:
                self._spill_victims(victims)
            except SpillError:
                if ref is not None:
                    self.free((ref,))
                raise
        return ref if ref is not None else self.put(table)

    def get(self, ref: ObjectRef) -> pa.Table:
        self._check_open("get")
        table = self._local.get(ref.id)
        if table is not None:
            return table
        self._count_restores((ref,))
        return self.read(ref)

    def _count_restores(self, refs: Sequence[ObjectRef]) -> None:
        """Count the spilled objects among ``refs`` as read back from disk."""
        restored = 0
        for ref in refs:
            entry = self._objects.get(ref.id)
            if entry is not None and entry[1]:
                restored += entry[0]
        if restored:
            with self._lock:
                self._restored_total += restored

    def export(self, refs: Sequence[ObjectRef]) -> None:
        """Write the in-process objects among ``refs`` to shared memory under
        their ids, for a worker process to read (bytes in use do not change).
        The spilled ones count as restored: the worker reads them from disk."""
        self._count_restores(refs)
        for ref in refs:
            table = self._local.get(ref.id)
            if table is None:
                continue
            self._write_file(ref.id, table, to_disk=False)
            with self._lock:
                self._local.pop(ref.id, None)
                entry = self._objects.get(ref.id)
                if entry is None or entry[1]:  # freed, or spilled meanwhile: not this copy
                    self.unlink(ref.id, spilled=False)

    def adopt(self, ref: ObjectRef) -> None:
        """Account an object written into the session by another process (a
        worker's task output); older objects spill to make room for it (it
        spills itself if it can never fit). A failed spill removes the new
        object's file and raises ``SpillError``."""
        with self._lock:
            if self._closed:
                self.unlink(ref.id)
                return
            fits, victims = self._make_room(ref.nbytes) if ref.location == "shm" else (False, [])
            if fits:
                self._resident[ref.id] = None
                self._add_used(ref.nbytes)
                self._objects[ref.id] = (ref.nbytes, False)
        start = 0.0
        try:
            self._spill_victims(victims)
            if not fits and ref.location == "shm":  # it can never fit: to disk itself
                start = time.perf_counter()
                self._copy_to_disk(ref.id)
        except SpillError:
            if fits:
                self.free((ref,))
            else:
                self.unlink(ref.id, spilled=False)
            raise
        if fits:
            return
        with self._lock:
            if self._closed:  # shut down while it was copied
                self.unlink(ref.id)
                return
            if start:
                self._spill_write_s += time.perf_counter() - start
            self._spilled_total += ref.nbytes
            self._objects[ref.id] = (ref.nbytes, True)

    def remove_unadopted(self, id_prefix: str) -> int:
        """Unlink the objects whose id starts with ``id_prefix`` that were never
        adopted: the outputs of a dead worker whose replies were lost with it.
        Returns how many were removed."""
        removed = 0
        with self._lock:
            for directory in self.session_dirs:
                for path in directory.glob(f"{id_prefix}*{_SUFFIX}"):
                    if path.name[: -len(_SUFFIX)] not in self._objects:
                        path.unlink(missing_ok=True)
                        removed += 1
        return removed

    def _add_used(self, nbytes: int) -> None:
        """Account ``nbytes`` more in memory (lock held). The peak leaves out the
        victims being written to disk: they are on their way out."""
        self._used += nbytes
        self._peak = max(self._peak, self._used - self._spilling_bytes)

    def _fits(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit in memory (lock held); victims on their
        way to disk count as gone."""
        return self._used - self._spilling_bytes + nbytes <= self.capacity_bytes

    def _make_room(self, nbytes: int) -> tuple[bool, list[str]]:
        """Pick the oldest resident objects to spill until ``nbytes`` more fit
        (called with the lock held): whether they fit, and the victims, which
        the caller writes out with ``_spill_victims`` after releasing the lock
        (a spill takes seconds; other threads put, get and free meanwhile).
        Victims on their way out count as gone. An object bigger than the
        capacity evicts nothing: it goes to disk itself."""
        if nbytes > self.capacity_bytes:
            return False, []
        victims: list[str] = []
        while not self._fits(nbytes) and self._resident:
            object_id, _ = self._resident.popitem(last=False)
            size = self._objects[object_id][0]
            self._spilling[object_id] = size
            self._spilling_bytes += size
            victims.append(object_id)
        return self._fits(nbytes), victims

    def _spill_victims(self, victims: list[str]) -> None:
        """Write ``victims`` (picked by ``_make_room``) to the spill directory,
        without the lock. A victim freed meanwhile loses its spill file; on a
        SpillError the victims not yet written stay in memory."""
        for i, object_id in enumerate(victims):
            table = self._local.get(object_id)
            start = time.perf_counter()
            try:
                if table is not None:
                    self._write_file(object_id, table, to_disk=True)
                else:
                    self._copy_to_disk(object_id)
            except SpillError:
                with self._lock:
                    for kept in victims[i:]:
                        size = self._spilling.pop(kept, None)
                        if size is not None:
                            self._spilling_bytes -= size
                            self._resident[kept] = None
                raise
            except FileNotFoundError:  # freed meanwhile: its file went with it
                pass
            with self._lock:
                self._spill_write_s += time.perf_counter() - start
                size = self._spilling.pop(object_id, None)
                if size is None:  # freed while being written
                    self.unlink(object_id, spilled=True)
                    continue
                self._spilling_bytes -= size
                self._used -= size
                self._spilled_total += size
                self._objects[object_id] = (size, True)
                self._local.pop(object_id, None)
                # Its memory copy goes (a copy exported meanwhile too: readers
                # that mapped it keep their mapping, the others read the spill file).
                self.unlink(object_id, spilled=False)

    def _copy_to_disk(self, object_id: str) -> None:
        """Copy an object's shared-memory file to the spill directory and remove
        the original; a failed copy leaves no partial file and raises SpillError.
        FileNotFoundError: the object was freed."""
        src, dst = self.shm_path(object_id), self.spill_path(object_id)
        tmp = dst.with_suffix(".tmp")
        try:
            shutil.copyfile(src, tmp)
        except FileNotFoundError:
            _unlink_quietly(tmp)
            raise
        except OSError as exc:
            _unlink_quietly(tmp)
            size = src.stat().st_size if src.exists() else 0
            raise spill_error(self.location.spill_dir, size, exc) from exc
        os.rename(tmp, dst)
        _unlink_quietly(src)

    def free(self, refs: list[ObjectRef] | tuple[ObjectRef, ...]) -> None:
        """Unlink ``refs``' files; unknown or already freed refs are ignored.
        Readers that mapped an object keep a valid mapping."""
        with self._lock:
            for ref in refs:
                entry = self._objects.pop(ref.id, None)
                if entry is None:
                    continue
                nbytes, spilled = entry
                if not spilled:
                    self._used -= nbytes
                    self._resident.pop(ref.id, None)
                    on_its_way = self._spilling.pop(ref.id, None)
                    if on_its_way is not None:  # being written out: _spill_victims unlinks it
                        self._spilling_bytes -= on_its_way
                if self._local.pop(ref.id, None) is None:
                    self.unlink(ref.id, spilled)

    def stats(self) -> StoreStats:
        """Bytes in shared memory now, capacity, peak, live objects, and the
        spill counters so far (bytes spilled and restored, seconds writing)."""
        with self._lock:
            return StoreStats(
                self._used,
                self.capacity_bytes,
                self._peak,
                self._spilled_total,
                len(self._objects),
                restored_bytes=self._restored_total,
                spill_write_s=self._spill_write_s,
                spill_dir=self.location.spill_dir,
            )

    def shutdown(self) -> None:
        """Remove the session's directories and everything in them (idempotent)."""
        with self._lock:
            self._closed = True
            self._objects.clear()
            self._local.clear()
            self._resident.clear()
            self._spilling.clear()
            self._used = self._spilling_bytes = 0
        for directory in self.session_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self._stop_janitor()
        _live_stores.discard(self)

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise ObjectLostError(f"ObjectStore.{what}: the store was shut down")


def remove_dead_sessions(root: Path) -> list[Path]:
    """Remove this user's session directories under ``root`` whose owner process
    is dead (a crashed or SIGKILLed driver); return the removed paths."""
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(_PREFIX) or not entry.is_dir():
            continue
        try:
            alive = owner_alive((entry / OWNER_FILE).read_text())
        except FileNotFoundError:
            alive = time.time() - entry.stat().st_mtime < _ORPHAN_GRACE_S
        except OSError:
            continue
        if not alive:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


# -- cleanup at interpreter exit and SIGTERM ---------------------------------

_live_stores: weakref.WeakSet[ObjectStore] = weakref.WeakSet()
_hooks_installed = False
_previous_sigterm: object = signal.SIG_DFL


def _shutdown_all() -> None:
    for store in list(_live_stores):
        store.shutdown()


def _on_sigterm(signum: int, frame: object) -> None:
    _shutdown_all()
    if callable(_previous_sigterm):
        _previous_sigterm(signum, frame)
        return
    # Die of SIGTERM as the default action would, so the parent sees the signal.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _install_exit_hooks() -> None:
    global _hooks_installed, _previous_sigterm
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_shutdown_all)
    # Signal handlers can only be set from the main thread; a store created
    # elsewhere still gets atexit and dead-owner cleanup.
    if threading.current_thread() is threading.main_thread():
        previous = signal.getsignal(signal.SIGTERM)
        if previous is not signal.SIG_IGN:
            _previous_sigterm = previous
            signal.signal(signal.SIGTERM, _on_sigterm)
