"""The ``inline`` backend: the Backend protocol in-process and synchronously.

Tasks run inside ``submit`` (and actors' factories inside ``start_actor``), in
submission order, with objects in a dict: runs are deterministic and a
debugger or ``print`` sees user code directly. Errors keep the semantics of
the process backends (``RemoteTaskError`` with the traceback text).

>>> backend = InlineBackend()
>>> double = backend.register_function(lambda tables: [t.set_column(0, "x", [[2 * v for v in t["x"].to_pylist()]]) for t in tables])
>>> ref = backend.put(pa.table({"x": [1, 2]}))
>>> backend.get(backend.submit(double, [ref]).result().refs[0]).to_pydict()
{'x': [2, 4]}
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psutil

from runtime.backends.base import FunctionHandle, StoreStats, TaskFuture, TaskResult
from runtime.errors import ObjectLostError, RemoteTaskError, ResourceError, TaskCancelledError
from runtime.futures import Future, wait_any
from runtime.refs import ObjectRef
from runtime.resources import Resources, check_fits, detect_num_cpus, detect_num_gpus
from runtime.store import table_nbytes
from runtime.task import TaskContext, set_current_task
from runtime.worker import execute

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(eq=False)
class InlineActor:
    """An actor of the inline backend: its state lives in this process."""

    id: str
    name: str
    ready: Future
    resources: Resources
    state: Callable[..., Any] | None = None
    error: BaseException | None = None


class InlineBackend:
    """Runs everything in the calling thread; see ``runtime.backends.base.Backend``."""

    name = "inline"
    driver_threads = True  # everything runs in the driver
    synchronous = True
    """Futures are done when ``submit`` returns (the contract suite reads this)."""

    def __init__(
        self,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        object_store_memory: int | None = None,
        *,
        resources: dict[str, float] | None = None,
    ) -> None:
        cpus = float(num_cpus) if num_cpus is not None else float(detect_num_cpus())
        gpus = float(num_gpus) if num_gpus is not None else float(detect_num_gpus())
        ram = psutil.virtual_memory().total
        self._total = Resources.of(cpus, gpus, float(ram), resources)
        self._capacity = object_store_memory or int(ram * 0.3)
        self._session = f"inline-{secrets.token_hex(6)}"
        self._objects: dict[str, pa.Table] = {}
        self._ids = itertools.count()
        self._functions: dict[str, Callable[..., Any]] = {}
        self._actors: dict[str, InlineActor] = {}
        self._used = self._peak = 0
        self._cv = threading.Condition()
        self._lock = threading.Lock()  # the executor may call from its own thread

    # -- objects -----------------------------------------------------------

    def put(self, table: pa.Table) -> ObjectRef:
        with self._lock:
            object_id = f"m{next(self._ids)}"
            self._objects[object_id] = table
            nbytes = table_nbytes(table)
            self._used += nbytes
            self._peak = max(self._peak, self._used)
        return ObjectRef(object_id, nbytes, table.num_rows, "mem", self._session)

    def get(self, ref: ObjectRef) -> pa.Table:
        try:
            return self._objects[ref.id] if ref.session == self._session else self._missing(ref)
        except KeyError:
            return self._missing(ref)

    def _missing(self, ref: ObjectRef) -> pa.Table:
        raise ObjectLostError(
            f"{ref!r} is not in the inline store (session {self._session}): it was freed "
            "or belongs to another backend"
        )

    def free(self, refs: Sequence[ObjectRef]) -> None:
        with self._lock:
            for ref in refs:
                if ref.session == self._session and self._objects.pop(ref.id, None) is not None:
                    self._used -= ref.nbytes

    def store_stats(self) -> StoreStats:
        with self._lock:
            return StoreStats(self._used, self._capacity, self._peak, 0, len(self._objects))

    # -- tasks -------------------------------------------------------------

    def register_function(self, fn: Callable[..., Any], name: str = "") -> FunctionHandle:
        if not callable(fn):
            raise TypeError(f"register_function expects a callable, got {type(fn).__name__}")
        fn_id = f"f{next(self._ids)}"
        self._functions[fn_id] = fn
        return FunctionHandle(fn_id, name or getattr(fn, "__qualname__", type(fn).__name__))

    def release_function(self, handle: FunctionHandle) -> None:
        self._functions.pop(handle.id, None)

    def _function(self, handle: FunctionHandle) -> Callable[..., Any]:
        try:
            return self._functions[handle.id]
        except KeyError:
            raise ValueError(
                f"function {handle.name} ({handle.id}) is not registered with this backend"
            ) from None

    def _run(
        self, fn: Callable[..., Any], inputs: Sequence[ObjectRef], args: tuple, name: str
    ) -> Future:
        future = Future(name, self._cv)
        ctx = TaskContext(name, "inline")
        try:
            tables = [self.get(ref) for ref in inputs]
            result: TaskResult | None = execute(fn, tables, tuple(args), ctx, self.put, self.free)
            error = None
        except Exception as exc:
            result, error = None, RemoteTaskError.capture(exc, name)
        with self._cv:
            future.resolve(result, error)
        return future

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
        check_fits(resources, self._total, f"task {name}")
        return self._run(self._function(fn), inputs, args, name)

    def cancel(self, future: TaskFuture) -> None:
        """Tasks are done when submitted: nothing is left to cancel."""

    def wait_any(self, futures: Sequence[TaskFuture], timeout: float | None) -> list[TaskFuture]:
        return wait_any(self._cv, futures, timeout)  # type: ignore[arg-type]

    # -- actors ------------------------------------------------------------

    def start_actor(
        self, factory: FunctionHandle, *, resources: Resources = Resources(cpu=1), name: str = ""
    ) -> InlineActor:
        name = name or factory.name
        check_fits(resources, self._total, f"actor {name}")
        if not resources.fits_in(self.available_resources()):
            raise ResourceError(
                f"actor {name} needs {resources}, and the inline backend has only "
                f"{self.available_resources()} left: it cannot queue actors, stop one first"
            )
        actor = InlineActor(f"actor-{next(self._ids)}", name, Future(name, self._cv), resources)
        start, ctx = time.time(), TaskContext(name, "inline")
        set_current_task(ctx)
        try:
            actor.state = self._function(factory)()
            outcome = TaskResult([], [], "inline", start, time.time(), 0.0, ctx.counters)
            error = None
        except Exception as exc:
            outcome, error = None, RemoteTaskError.capture(exc, name)
            actor.error = error
        finally:
            set_current_task(None)
        with self._cv:
            actor.ready.resolve(outcome, error)
        if error is None:
            self._actors[actor.id] = actor
        return actor

    def submit_actor(
        self,
        actor: InlineActor,
        inputs: Sequence[ObjectRef] = (),
        args: tuple = (),
        *,
        name: str = "",
    ) -> TaskFuture:
        name = name or actor.name
        if actor.error is not None or actor.state is None:
            future = Future(name, self._cv)
            with self._cv:
                future.resolve(exc=actor.error or TaskCancelledError(f"actor {name} is stopped"))
            return future
        return self._run(actor.state, inputs, args, name)

    def stop_actor(self, actor: InlineActor) -> None:
        self._actors.pop(actor.id, None)
        actor.state = None
        actor.error = actor.error or TaskCancelledError(f"actor {actor.name} was stopped")

    # -- resources and lifetime --------------------------------------------

    def total_resources(self) -> Resources:
        return self._total

    def available_resources(self) -> Resources:
        available = self._total
        for actor in self._actors.values():
            available = available - actor.resources
        return available

    def worker_rss_bytes(self) -> int:
        return 0

    def prestart(self, wait: float | None = None) -> bool:
        return False  # no workers: tasks run in the caller's thread

    def task_stack(self, future: TaskFuture, timeout: float = 1.0) -> str | None:
        return None  # a task is done when submit returns: nothing runs it later

    def worker_pids(self) -> list[int]:
        return []

    def shutdown(self) -> None:
        with self._lock:
            self._objects.clear()
            self._used = 0
        self._actors.clear()
        self._functions.clear()
