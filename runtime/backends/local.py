"""The ``local`` backend: worker processes over a shared-memory object store.

The embedded default. Nothing starts at construction: the first process task
starts the pool's reactor thread and its first workers, which are then
reused; tasks submitted with ``in_driver=True`` run on a driver thread pool.

>>> backend = LocalBackend(num_cpus=2)
>>> fn = backend.register_function(lambda tables, k: [t.append_column("k", [[k] * t.num_rows]) for t in tables])
>>> ref = backend.put(pa.table({"x": [1, 2]}))
>>> result = backend.submit(fn, [ref], (7,)).result()
>>> backend.get(result.refs[0]).to_pydict()
{'x': [1, 2], 'k': [7, 7]}
>>> backend.shutdown()
"""

from __future__ import annotations

import atexit
import itertools
import math
import os
import secrets
import sys
import threading
import traceback
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import psutil

from runtime.backends.base import FunctionHandle, StoreStats, TaskFuture
from runtime.errors import RemoteTaskError, SpillError, TaskCancelledError
from runtime.fnpickle import dumps_function
from runtime.futures import Future, wait_any
from runtime.pool import Actor, WorkerPool
from runtime.refs import ObjectRef
from runtime.resources import Resources, detect_num_cpus, detect_num_gpus
from runtime.store import ObjectStore
from runtime.task import TaskContext
from runtime.worker import execute, function_path

if TYPE_CHECKING:
    import pyarrow as pa


def _gpu_names(count: int) -> list[str]:
    """Device names for ``count`` GPUs: this process's CUDA_VISIBLE_DEVICES
    entries when it lists enough of them, else 0..count-1."""
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    visible = [d for d in visible if d and d != "-1"]
    return visible[:count] if len(visible) >= count else [str(i) for i in range(count)]


class LocalBackend:
    """Worker processes on this machine; see ``runtime.backends.base.Backend``.

    Options: ``memory`` (bytes schedulable as the ``memory`` resource, default
    RAM), ``resources`` (custom resources, e.g. ``{"disk_io": 2}``),
    ``max_workers`` (cap on task worker processes), ``spill_dir`` (where
    objects that do not fit in ``object_store_memory`` go), ``preload``
    (modules a worker imports before it reports ready).
    """

    name = "local"
    driver_threads = True

    def __init__(
        self,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        object_store_memory: int | None = None,
        *,
        memory: float | None = None,
        resources: dict[str, float] | None = None,
        max_workers: int | None = None,
        spill_dir: str | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        cpus = float(num_cpus) if num_cpus is not None else float(detect_num_cpus())
        gpus = int(num_gpus) if num_gpus is not None else detect_num_gpus()
        if cpus <= 0 or gpus < 0 or (num_gpus is not None and num_gpus != gpus):
            raise ValueError(
                f"LocalBackend: num_cpus must be > 0 and num_gpus a whole number >= 0, "
                f"got num_cpus={num_cpus}, num_gpus={num_gpus}"
            )
        mem = float(memory) if memory is not None else float(psutil.virtual_memory().total)
        self._total = Resources.of(cpus, gpus, mem, resources)
        self._store = ObjectStore(object_store_memory, spill_root=spill_dir)
        self._pool = WorkerPool(self._store, self._total, _gpu_names(gpus), max_workers, preload)
        self._functions: dict[str, Callable[..., Any]] = {}
        self._shipped: set[str] = set()
        self._fn_ids = itertools.count()
        self._fn_prefix = secrets.token_hex(4)
        self._threads: ThreadPoolExecutor | None = None
        self._closed = False
        _live_backends.add(self)

    # -- objects -----------------------------------------------------------

    def put(self, table: pa.Table) -> ObjectRef:
        # Kept in the driver; written to shared memory only when a worker needs it.
        return self._store.put_local(table)

    def get(self, ref: ObjectRef) -> pa.Table:
        return self._store.get(ref)

    def free(self, refs: Sequence[ObjectRef]) -> None:
        self._store.free(refs)

    def store_stats(self) -> StoreStats:
        return self._store.stats()

    @property
    def store(self) -> ObjectStore:
        return self._store

    # -- tasks -------------------------------------------------------------

    def register_function(self, fn: Callable[..., Any], name: str = "") -> FunctionHandle:
        if not callable(fn):
            raise TypeError(f"register_function expects a callable, got {type(fn).__name__}")
        fn_id = f"{self._fn_prefix}{next(self._fn_ids)}"
        self._functions[fn_id] = fn
        label = name or getattr(fn, "__qualname__", None) or type(fn).__name__
        return FunctionHandle(fn_id, label)

    def release_function(self, handle: FunctionHandle) -> None:
        self._functions.pop(handle.id, None)
        if handle.id in self._shipped:
            self._shipped.discard(handle.id)
            function_path(self._store.location.shm_dir, handle.id).unlink(missing_ok=True)
            self._pool.release_function(handle.id)

    def _ship(self, handle: FunctionHandle) -> None:
        """Pickle a function once, into the session directory, for workers to load."""
        if handle.id in self._shipped:
            return
        fn = self._function(handle)
        try:
            payload = dumps_function(fn)
        except Exception as exc:
            raise TypeError(
                f"{handle.name} cannot be pickled for worker processes ({exc}); "
                "create unpicklable state (clients, locks, models) inside the function "
                "or in an actor's constructor"
            ) from exc
        function_path(self._store.location.shm_dir, handle.id).write_bytes(payload)
        self._shipped.add(handle.id)

    def _function(self, handle: FunctionHandle) -> Callable[..., Any]:
        try:
            return self._functions[handle.id]
        except KeyError:
            raise ValueError(
                f"function {handle.name} ({handle.id}) is not registered with this backend "
                "(released, or registered with another one)"
            ) from None

    def submit(
        self,
        fn: FunctionHandle,
        inputs: Sequence[ObjectRef] = (),
        args: tuple = (),
        *,
        resources: Resources = Resources(cpu=1),
        max_retries: int = 3,
        name: str = "",
        in_driver: bool = False,
    ) -> TaskFuture:
        name = name or fn.name
        if in_driver:
            return self._submit_in_driver(fn, tuple(inputs), tuple(args), resources, name)
        self._ship(fn)
        self._store.export(inputs)
        return self._pool.submit(fn.id, tuple(inputs), tuple(args), resources, max_retries, name)

    def _submit_in_driver(
        self, handle: FunctionHandle, inputs: tuple, args: tuple, resources: Resources, name: str
    ) -> Future:
        """Run on a driver thread: no process hop, no resource lease (the
        executor uses it for GIL-releasing Arrow work)."""
        self._pool.check_fits(resources, f"task {name}")
        fn = self._function(handle)
        future = Future(name, self._pool.cv)
        if self._threads is None:
            self._threads = ThreadPoolExecutor(
                max(1, math.ceil(self._total.cpu)), thread_name_prefix="dataflow-driver"
            )
        store, cv = self._store, self._pool.cv

        def run() -> None:
            future.thread = threading.get_ident()
            # One worker id per driver thread: traces show a track per thread.
            ctx = TaskContext(name, f"driver-{threading.current_thread().name.rsplit('_', 1)[-1]}")
            try:
                tables = [store.get(ref) for ref in inputs]
                result = execute(fn, tables, args, ctx, store.put_local, store.free)
            except SpillError as exc:  # the store's failure, not the task's code
                with cv:
                    future.thread = None
                    future.resolve(exc=exc)
                return
            except Exception as exc:
                with cv:
                    future.thread = None
                    future.resolve(exc=RemoteTaskError.capture(exc, name))
                return
            with cv:
                future.thread = None
                if future.done():  # cancelled while running
                    store.free(result.refs)
                future.resolve(result)

        self._threads.submit(run)
        return future

    def prestart(self, wait: float | None = None) -> bool:
        """Boot the CPU workers in the background (the planner calls this for a
        plan that needs them; driver-only plans never start a worker). With
        ``wait``, block up to that many seconds until they are ready."""
        return self._pool.prestart(wait)

    def cancel(self, future: TaskFuture) -> None:
        assert isinstance(future, Future)
        if future._task is not None:
            self._pool.cancel(future)
            return
        with self._pool.cv:  # a driver-thread task cannot be stopped, only abandoned
            future.resolve(exc=TaskCancelledError(f"task {future.name} was cancelled"))

    def wait_any(self, futures: Sequence[TaskFuture], timeout: float | None) -> list[TaskFuture]:
        return wait_any(self._pool.cv, futures, timeout)  # type: ignore[arg-type]

    # -- actors ------------------------------------------------------------

    def start_actor(
        self, factory: FunctionHandle, *, resources: Resources = Resources(cpu=1), name: str = ""
    ) -> Actor:
        self._ship(factory)
        return self._pool.start_actor(factory.id, resources, name or factory.name)

    def submit_actor(
        self,
        actor: Actor,
        inputs: Sequence[ObjectRef] = (),
        args: tuple = (),
        *,
        name: str = "",
    ) -> TaskFuture:
        self._store.export(inputs)
        return self._pool.submit_actor(actor, tuple(inputs), tuple(args), name or actor.name)

    def stop_actor(self, actor: Actor) -> None:
        self._pool.stop_actor(actor)

    # -- resources and lifetime --------------------------------------------

    def total_resources(self) -> Resources:
        return self._total

    def available_resources(self) -> Resources:
        return self._pool.available()

    def worker_rss_bytes(self) -> int:
        return self._pool.worker_rss_bytes()

    def worker_pids(self) -> list[int]:
        """Pids of the live worker processes (for tests and diagnostics)."""
        return self._pool.worker_pids()

    def task_pid(self, future: TaskFuture) -> int | None:
        """The pid of the process running ``future`` now: its worker, or this
        process for a driver-thread task; None while it waits or once done (the
        executor's memory guard asks, to name the task that holds the memory)."""
        if not isinstance(future, Future) or future.done():
            return None
        if future._task is None:
            return os.getpid() if future.thread is not None else None
        return self._pool.running_pid(future)

    def task_stack(self, future: TaskFuture, timeout: float = 1.0) -> str | None:
        """The Python stack of the worker or driver thread running ``future``
        (None if nothing runs it now)."""
        if not isinstance(future, Future):
            return None
        if future._task is None:  # a driver-thread task: this process's own stack
            ident = future.thread
            frame = sys._current_frames().get(ident) if ident is not None else None
            if frame is None:
                return None
            stack = "".join(traceback.format_stack(frame))
            return f"Driver thread {ident:#x} (most recent call last):\n{stack}"
        return self._pool.task_stack(future, timeout)

    def shutdown(self) -> None:
        """Stop every worker, abandon driver-thread tasks and remove every
        object of the session (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
        self._store.shutdown()
        _live_backends.discard(self)


_live_backends: weakref.WeakSet[LocalBackend] = weakref.WeakSet()


@atexit.register
def _shutdown_live_backends() -> None:
    for backend in list(_live_backends):
        backend.shutdown()
