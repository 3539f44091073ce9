"""The ``ray`` backend: the Backend protocol on a Ray cluster.

The streaming executor stays in the driver; only tasks, actors and objects move
to Ray:

* **Objects.** Blocks live in Ray's object store. Our ``ObjectRef`` (location
  ``"ray"``) is a small handle whose ``id`` keys a driver-side table of Ray
  ``ObjectRef``s; ``get`` maps the block zero-copy from plasma, ``free`` drops
  the Ray ref so that Ray's reference counting reclaims the bytes.
* **Tasks.** Every task runs through one Ray streaming-generator function. It
  resolves the registered function (``ray.put`` once by the driver, cached in
  each worker by id), installs the ``TaskContext``, yields each output table
  (Ray stores it, owned by the driver; the bytes never pass through the
  driver) and yields a small ``_Outcome`` last: rows, bytes and schema of each
  block, timings, counters, or the user error. Tasks and actors are spread
  over the nodes (``SPREAD``, as in Ray Data) to balance blocks between object
  stores; a task reading over 50 MiB runs where its inputs are instead.
* **Actors.** A Ray actor builds ``state = factory()`` once and serves
  ``state(tables, *args)`` through the same generator protocol.
* **Failures.** User exceptions are caught in the worker and come back as
  ``RemoteTaskError`` (never retried); a dead worker is retried by Ray
  (``max_retries``) and then raises ``WorkerCrashedError``. A block lost with its
  node is rebuilt from lineage (its task runs again), so a shuffle survives it.

``ray`` is imported inside functions only, so that importing this module
stays cheap and ``import dataflow`` never loads Ray.

>>> backend = RayBackend(num_cpus=2)  # doctest: +SKIP
>>> ref = backend.put(pa.table({"x": [1, 2]}))  # doctest: +SKIP
>>> backend.get(ref).num_rows  # doctest: +SKIP
2
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from runtime.backends.base import FunctionHandle, StoreStats, TaskResult
from runtime.errors import (
    ObjectLostError,
    RemoteTaskError,
    ResourceError,
    RuntimeFailure,
    TaskCancelledError,
    WorkerCrashedError,
)
from runtime.fnpickle import dumps_function, loads_function
from runtime.refs import ObjectRef
from runtime.resources import Resources
from runtime.sessiondirs import OWNER_FILE, make_session_dir, owner_alive
from runtime.store import table_nbytes
from runtime.task import TaskContext, set_current_task

if TYPE_CHECKING:
    import ray

    from runtime.backends.base import TaskFuture

# Ray resource names that map onto Resources fields rather than custom resources.
_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")

# Private Ray temp directories (sessions, logs, spill files) made by start_local_ray.
_TEMP_PREFIX = f"dataflow-ray-{os.getuid()}-"

_LARGE_INPUT_BYTES = 50 << 20  # tasks reading more run near their inputs (as Ray Data)

# Functions each worker keeps unpickled; released handles age out of it.
_FUNCTION_CACHE_SIZE = 64

# -- worker side ------------------------------------------------------------

_function_cache: OrderedDict[str, Callable[..., Any]] = OrderedDict()


def _resolve_function(fn_id: str, boxed_ref: list[ray.ObjectRef]) -> Callable[..., Any]:
    """The registered function ``fn_id``: fetched and unpickled once per worker.

    The driver passes the Ray ref inside a list so that Ray does not resolve
    (and unpickle) it for every task.
    """
    import ray

    fn = _function_cache.get(fn_id)
    if fn is None:
        fn = loads_function(ray.get(boxed_ref[0]))
        _function_cache[fn_id] = fn
        if len(_function_cache) > _FUNCTION_CACHE_SIZE:
            _function_cache.popitem(last=False)
    else:
        _function_cache.move_to_end(fn_id)
    return fn


@dataclass
class _Outcome:
    """The last item a task yields: how it ran, and the user error if any."""

    blocks: list[tuple[int, int, pa.Schema]]
    node_id: str
    pid: int
    start_ts: float
    end_ts: float
    cpu_s: float
    counters: dict[str, float] = field(default_factory=dict)
    error: RemoteTaskError | None = None

    @property
    def worker_id(self) -> str:
        return _worker_id(self.node_id, self.pid)


def _worker_id(node_id: str, pid: int) -> str:
    return f"{node_id[:12]}:{pid}"


def _run(
    get_fn: Callable[[], Callable[..., Any]],
    tables: Sequence[pa.Table],
    args: tuple,
    task_name: str,
) -> Iterator[Any]:
    """Run the task function: yield each output table, then one ``_Outcome``."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    # Ray names GPUs by index, or by UUID when CUDA_VISIBLE_DEVICES does: keep indices.
    gpu_ids = tuple(int(g) for g in ray.get_gpu_ids() if str(g).isdigit())
    ctx = TaskContext(task_name, _worker_id(node_id, os.getpid()), gpu_ids)
    blocks: list[tuple[int, int, pa.Schema]] = []
    error = None
    start_ts, start_cpu = time.time(), time.process_time()
    set_current_task(ctx)
    try:
        for table in get_fn()(list(tables), *args):
            if not isinstance(table, pa.Table):
                raise TypeError(
                    f"task {task_name!r} yielded a {type(table).__name__}; "
                    "task functions must yield pyarrow.Table objects"
                )
            blocks.append((table_nbytes(table), table.num_rows, table.schema))
            yield table
    except Exception as exc:
        error = RemoteTaskError.capture(exc, task_name)
    finally:
        set_current_task(None)
    yield _Outcome(
        blocks,
        node_id,
        os.getpid(),
        start_ts,
        time.time(),
        time.process_time() - start_cpu,
        ctx.counters,
        error,
    )


def _task_entry(
    fn_id: str, boxed_ref: list[ray.ObjectRef], task_name: str, args: tuple, *tables: pa.Table
) -> Iterator[Any]:
    """Body of the Ray remote function every task runs (Ray resolved ``tables``)."""
    yield from _run(lambda: _resolve_function(fn_id, boxed_ref), tables, args, task_name)


class _ActorHost:
    """Body of the Ray actor behind ``start_actor``: ``state = factory()`` once."""

    def __init__(self, fn_id: str, boxed_ref: list[ray.ObjectRef], name: str) -> None:
        self._state: Callable[..., Any] | None = None

        def construct(_tables: list[pa.Table]) -> tuple[()]:
            self._state = _resolve_function(fn_id, boxed_ref)()
            return ()

        # The factory runs like a task so that ready() reports its error with its identity.
        *_, self._outcome = _run(lambda: construct, (), (), name)

    def ready(self) -> Iterator[Any]:
        yield self._outcome

    def call(self, task_name: str, args: tuple, *tables: pa.Table) -> Iterator[Any]:
        if self._state is None:
            yield self._outcome
            return
        state = self._state
        yield from _run(lambda: state, tables, args, task_name)


@cache
def _remote_task() -> Any:
    import ray

    return ray.remote(num_returns="streaming")(_task_entry)


@cache
def _remote_actor() -> Any:
    import ray

    return ray.remote(_ActorHost)


# -- driver side -------------------------------------------------------------


def _resources_of(amounts: Mapping[str, float]) -> Resources:
    """Ray's resource dict as Resources (``memory`` in bytes, the rest custom)."""
    custom = {k: v for k, v in amounts.items() if k not in _BUILTIN_RESOURCES}
    return Resources.of(
        amounts.get("CPU", 0.0), amounts.get("GPU", 0.0), amounts.get("memory", 0.0), custom
    )


def _ray_options(resources: Resources, input_bytes: int = 0) -> dict[str, Any]:
    """Ray scheduling options for ``resources``; spread over the nodes unless
    the inputs are large (then Ray's default, locality-aware policy)."""
    opts: dict[str, Any] = {
        "num_cpus": resources.cpu,
        "num_gpus": resources.gpu,
        "scheduling_strategy": "DEFAULT" if input_bytes > _LARGE_INPUT_BYTES else "SPREAD",
    }
    if resources.memory:
        opts["memory"] = int(resources.memory)
    if resources.custom:
        opts["resources"] = resources.custom_dict
    return opts


@contextmanager
def _scoped_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def remove_dead_temp_dirs(root: Path) -> list[Path]:
    """Remove the ``dataflow-ray-*`` directories under ``root`` whose owning
    driver is dead (each holds the owner's pid file); return the removed paths."""
    removed = []
    for entry in root.glob(f"{_TEMP_PREFIX}*"):
        try:
            owner = (entry / OWNER_FILE).read_text()
        except OSError:
            continue  # not ours, or its owner is still writing it
        if not owner_alive(owner):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def start_local_ray(
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    object_store_memory: int | None = None,
    **options: Any,
) -> str | None:
    """Start a new single-node Ray bound to 127.0.0.1 for this process
    (``ray.init``'s ``_node_ip_address`` alone is not enough, see below).

    Returns the temp directory made for Ray's sessions, logs and spill files
    (the caller removes it after ``ray.shutdown()``), or None when the caller
    chose ``_temp_dir``.

    >>> temp_dir = start_local_ray(num_cpus=2)  # doctest: +SKIP
    """
    import ray
    from ray._private import ray_constants

    # "local" starts a new instance even when `ray start` runs on this host.
    kwargs: dict[str, Any] = {
        "address": "local",
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "object_store_memory": object_store_memory,
        "_node_ip_address": "127.0.0.1",
        "include_dashboard": False,
    }
    kwargs.update(options)
    temp_dir = None
    if "_temp_dir" not in kwargs:
        # Ray keeps /tmp/ray/session_* forever; a private directory goes away with us,
        # and one a hard-killed driver left behind goes at the next start.
        root = Path(tempfile.gettempdir())
        remove_dead_temp_dirs(root)
        path = make_session_dir(root / f"{_TEMP_PREFIX}{secrets.token_hex(6)}")
        temp_dir = kwargs["_temp_dir"] = str(path)
    # Ray's processes inherit the environment they start with:
    # * PYTHONPATH: workers see the driver's extra import paths (as the local
    #   backend's spawned workers do), so functions from the user's modules
    #   unpickle. Not a job runtime_env: its workers would not be the ones Ray
    #   prestarts, and each task would wait for a fresh worker to boot.
    # * Ray swaps 127.0.0.1 for the host's routable address (and its servers
    #   then listen on every interface) unless its multi-node mode is off. The
    #   driver read that flag at import time: set the constant too.
    prefixes = (sys.prefix, sys.base_prefix)
    extra = [p for p in sys.path if p and os.path.isdir(p) and not p.startswith(prefixes)]
    env = {ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR: "0"}
    if extra:
        env["PYTHONPATH"] = os.pathsep.join(extra)
    saved_flag = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        with _scoped_environ(env):
            ray.init(**kwargs)
    except BaseException:
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
    return temp_dir


class _RayFuture:
    """A task or actor call running on Ray (the TaskFuture protocol)."""

    def __init__(self, backend: RayBackend, gen: Any, name: str, force_cancel: bool) -> None:
        self.name = name
        self._backend = backend
        self._gen = gen
        self.done_ref = gen.completed()
        self._force_cancel = force_cancel
        self._lock = threading.Lock()
        self._result: TaskResult | None = None
        self._error: BaseException | None = None

    @property
    def settled(self) -> bool:
        return self._result is not None or self._error is not None

    def done(self) -> bool:
        import ray

        if self.settled:
            return True
        ready, _ = ray.wait([self.done_ref], timeout=0, fetch_local=False)
        return bool(ready)

    def result(self, timeout: float | None = None) -> TaskResult:
        import ray

        with self._lock:
            if not self.settled:
                ready, _ = ray.wait([self.done_ref], timeout=timeout, fetch_local=False)
                if not ready:
                    raise TimeoutError(f"task {self.name!r} did not finish within {timeout} s")
                self._settle()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def cancel(self) -> None:
        import ray

        with self._lock:
            if self.settled:
                return
            # Ray refuses force=True for actor calls; a running actor call is
            # left to finish and its outputs are dropped with this future.
            ray.cancel(self._gen, force=self._force_cancel)
            self._finish(error=TaskCancelledError(f"task {self.name!r} was cancelled"))

    def _settle(self) -> None:
        import ray
        import ray.exceptions as rex

        try:
            ray.get(self.done_ref)
            refs = list(self._gen)
            outcome: _Outcome = ray.get(refs[-1])
        except rex.RayError as exc:
            self._finish(error=self._translate(exc))
            return
        if outcome.error is not None:
            self._finish(error=outcome.error)
        else:
            self._finish(result=self._backend._task_result(refs[:-1], outcome))

    def _translate(self, exc: BaseException) -> BaseException:
        """A Ray failure of this task as the runtime's exception."""
        import ray.exceptions as rex

        if isinstance(exc, rex.TaskCancelledError):
            return TaskCancelledError(f"task {self.name!r} was cancelled")
        died = (
            rex.WorkerCrashedError,
            rex.RayActorError,
            rex.NodeDiedError,
            rex.OutOfMemoryError,
            rex.LocalRayletDiedError,
        )
        if isinstance(exc, died):
            detail = str(exc).splitlines()[0] if str(exc) else "no detail"
            return WorkerCrashedError(
                f"task {self.name!r}: its Ray worker died ({type(exc).__name__}: {detail}) "
                "after all retries"
            )
        if isinstance(exc, rex.ObjectLostError):
            return ObjectLostError(f"task {self.name!r}: an input was lost: {exc}")
        if isinstance(exc, rex.RayTaskError):  # Ray could not run the wrapper (bad arguments)
            cause = exc.cause
            return RemoteTaskError(
                type(cause).__name__ if cause else "RayTaskError",
                str(cause or exc),
                exc.traceback_str,
                cause,
                self.name,
            )
        return RuntimeFailure(f"task {self.name!r}: Ray failed to run it: {exc}")

    def _finish(self, result: TaskResult | None = None, error: BaseException | None = None) -> None:
        self._result, self._error = result, error
        self._gen = None  # drops the refs of outputs that were not adopted
        self._backend._forget(self)


@dataclass
class _RayActor:
    """A started actor (the ActorHandle protocol)."""

    id: str
    name: str
    ready: _RayFuture
    handle: Any


class RayBackend:
    """Runs tasks and actors on Ray; blocks live in Ray's object store.

    ``address`` (``dataflow.init`` fills it from ``DATAFLOW_RAY_ADDRESS``, else
    ``RAY_ADDRESS``): ``None`` starts a single-node Ray on 127.0.0.1, ``"auto"``,
    ``"host:port"`` or ``"ray://host:port"`` connects to a cluster.
    When Ray is already initialized in this process it is reused as it is
    (``num_cpus`` and the other start options are then ignored); a Ray this
    backend started or connected to is shut down by ``shutdown()``. Other
    keywords go to ``ray.init``.

    >>> backend = RayBackend(num_cpus=2)  # doctest: +SKIP
    >>> fn = backend.register_function(lambda tables: tables)  # doctest: +SKIP
    >>> backend.submit(fn, [backend.put(table)]).result().refs  # doctest: +SKIP
    """

    name = "ray"
    driver_threads = False  # ``in_driver`` is ignored: every task is a Ray task

    def __init__(
        self,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        object_store_memory: int | None = None,
        address: str | None = None,
        **options: Any,
    ) -> None:
        import ray

        self._temp_dir: str | None = None
        if ray.is_initialized():
            self._owns_ray = False
        elif address is not None:
            ray.init(address=address, **options)
            self._owns_ray = True
        else:
            self._temp_dir = start_local_ray(num_cpus, num_gpus, object_store_memory, **options)
            self._owns_ray = True
        self._session = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._closed = False
        self._objects: dict[str, tuple[ray.ObjectRef, int]] = {}
        self._used_bytes = 0
        self._peak_bytes = 0
        self._functions: dict[str, ray.ObjectRef] = {}
        self._actors: dict[str, _RayActor] = {}
        self._pending: set[_RayFuture] = set()
        self._worker_pids: set[int] = set()
        self._node_id = ray.get_runtime_context().get_node_id()
        capacity = int(ray.cluster_resources().get("object_store_memory", 0))
        if object_store_memory is not None and (capacity == 0 or object_store_memory < capacity):
            capacity = int(object_store_memory)
        self._capacity = capacity
        self._node_resources = self._alive_node_resources()

    # -- objects -----------------------------------------------------------

    def put(self, table: pa.Table) -> ObjectRef:
        import ray

        self._check_open("put")
        if not isinstance(table, pa.Table):
            raise TypeError(f"RayBackend.put expects a pyarrow.Table, got {type(table).__name__}")
        return self._adopt(ray.put(table), table_nbytes(table), table.num_rows)

    def get(self, ref: ObjectRef) -> pa.Table:
        import ray
        import ray.exceptions as rex

        try:
            return ray.get(self._ray_ref(ref, "get"))
        except rex.ObjectLostError as exc:
            raise ObjectLostError(f"{ref!r} was lost by Ray (its node died?): {exc}") from None

    def free(self, refs: Sequence[ObjectRef]) -> None:
        with self._lock:
            for ref in refs:
                entry = self._objects.pop(ref.id, None)
                if entry is not None:
                    self._used_bytes -= entry[1]

    def store_stats(self) -> StoreStats:
        """Bytes this session holds against the cluster's object store capacity.

        Ray spills on its own and does not report it cheaply: ``spilled_bytes`` is 0.
        """
        with self._lock:
            return StoreStats(
                self._used_bytes, self._capacity, self._peak_bytes, 0, len(self._objects)
            )

    # -- tasks -------------------------------------------------------------

    def register_function(self, fn: Callable[..., Any], name: str = "") -> FunctionHandle:
        import ray

        self._check_open("register_function")
        if not callable(fn):
            raise TypeError(f"register_function expects a callable, got {type(fn).__name__}")
        label = name or getattr(fn, "__qualname__", None) or repr(fn)
        try:
            # Pickled here, not by Ray: tracebacks then name the user's files and
            # lines on every backend alike (see runtime/fnpickle.py).
            fn_ref = ray.put(dumps_function(fn))
        except Exception as exc:
            raise TypeError(
                f"register_function({label}): the function does not pickle ({exc}); "
                "define it at module level or drop unpicklable state such as locks or files"
            ) from exc
        handle = FunctionHandle(uuid.uuid4().hex, label)
        with self._lock:
            self._functions[handle.id] = fn_ref
        return handle

    def release_function(self, handle: FunctionHandle) -> None:
        with self._lock:
            self._functions.pop(handle.id, None)

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
    ) -> _RayFuture:
        """Run ``fn`` as a Ray task (``in_driver`` is ignored: blocks stay in Ray)."""
        self._check_open("submit")
        label = name or fn.name
        fn_ref = self._function_ref(fn, "submit")
        ray_inputs = [self._ray_ref(r, "submit") for r in inputs]
        self._check_fits(resources, label)
        opts = _ray_options(resources, sum(r.nbytes for r in inputs))
        gen = (
            _remote_task()
            .options(max_retries=max_retries, retry_exceptions=False, name=label, **opts)
            .remote(fn.id, [fn_ref], label, tuple(args), *ray_inputs)
        )
        return self._track(_RayFuture(self, gen, label, force_cancel=True))

    def cancel(self, future: _RayFuture) -> None:
        future.cancel()

    def wait_any(self, futures: Sequence[_RayFuture], timeout: float | None) -> list[_RayFuture]:
        """``ray.wait`` on the pending futures; returns every one that is done."""
        import ray

        pending = {f.done_ref: f for f in futures if not f.settled}
        if len(pending) < len(futures):
            timeout = 0  # something is done already: do not block
        ready: set[Any] = set()
        if pending:
            refs = list(pending)
            first, _ = ray.wait(refs, num_returns=1, timeout=timeout, fetch_local=False)
            if first:
                done, _ = ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
                ready = set(done) | set(first)
        return [f for f in futures if f.settled or f.done_ref in ready]

    # -- actors ------------------------------------------------------------

    def start_actor(
        self, factory: FunctionHandle, *, resources: Resources = Resources(cpu=1), name: str = ""
    ) -> _RayActor:
        self._check_open("start_actor")
        label = name or factory.name
        fn_ref = self._function_ref(factory, "start_actor")
        self._check_fits(resources, label)
        handle = (
            _remote_actor()
            .options(max_restarts=0, max_task_retries=0, **_ray_options(resources))
            .remote(factory.id, [fn_ref], label)
        )
        ready = self._track(_RayFuture(self, handle.ready.remote(), label, force_cancel=False))
        actor = _RayActor(uuid.uuid4().hex, label, ready, handle)
        with self._lock:
            self._actors[actor.id] = actor
        return actor

    def submit_actor(
        self,
        actor: _RayActor,
        inputs: Sequence[ObjectRef] = (),
        args: tuple = (),
        *,
        name: str = "",
    ) -> _RayFuture:
        self._check_open("submit_actor")
        if actor.id not in self._actors:
            raise ValueError(f"submit_actor: actor {actor.name!r} was stopped or is not ours")
        label = name or actor.name
        ray_inputs = [self._ray_ref(r, "submit_actor") for r in inputs]
        gen = actor.handle.call.remote(label, tuple(args), *ray_inputs)
        return self._track(_RayFuture(self, gen, label, force_cancel=False))

    def stop_actor(self, actor: _RayActor) -> None:
        import ray

        with self._lock:
            known = self._actors.pop(actor.id, None)
        if known is not None:
            ray.kill(known.handle, no_restart=True)

    # -- resources and lifetime --------------------------------------------

    def total_resources(self) -> Resources:
        import ray

        return _resources_of(ray.cluster_resources())

    def available_resources(self) -> Resources:
        import ray

        return _resources_of(ray.available_resources())

    def prestart(self, wait: float | None = None) -> bool:
        return False  # Ray starts and pools its own workers

    def task_stack(self, future: TaskFuture, timeout: float = 1.0) -> str | None:
        return None  # a Ray worker's stack is `ray stack`'s to show

    def worker_pids(self) -> list[int]:
        return []  # Ray's workers are Ray's: it started them and stops them

    def worker_rss_bytes(self) -> int:
        """RSS of the Ray workers on this node that ran our tasks or actors."""
        import psutil

        with self._lock:
            pids = list(self._worker_pids)
        total = 0
        for pid in pids:
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.Error:  # exited (Ray reaps idle workers): forget it
                with self._lock:
                    self._worker_pids.discard(pid)
        return total

    def shutdown(self) -> None:
        """Cancel running tasks, stop actors, drop every object; stop Ray if we started it."""
        import ray

        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending, self._pending = list(self._pending), set()
            actors, self._actors = list(self._actors.values()), {}
            self._objects.clear()
            self._functions.clear()
            self._used_bytes = 0
        if ray.is_initialized():
            for future in pending:
                future.cancel()
            for actor in actors:
                ray.kill(actor.handle, no_restart=True)
            if self._owns_ray:
                ray.shutdown()
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)

    # -- helpers -----------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise RuntimeFailure(
                f"RayBackend.{what}: the backend was shut down; call dataflow.init() again"
            )

    def _adopt(self, ray_ref: ray.ObjectRef, nbytes: int, num_rows: int) -> ObjectRef:
        ref = ObjectRef(ray_ref.hex(), nbytes, num_rows, "ray", self._session)
        with self._lock:
            self._objects[ref.id] = (ray_ref, nbytes)
            self._used_bytes += nbytes
            self._peak_bytes = max(self._peak_bytes, self._used_bytes)
        return ref

    def _ray_ref(self, ref: ObjectRef, what: str) -> ray.ObjectRef:
        with self._lock:
            entry = self._objects.get(ref.id)
        if entry is None:
            if ref.session != self._session:
                raise ObjectLostError(
                    f"RayBackend.{what}: {ref!r} belongs to another backend session "
                    f"({ref.session[:8]}); pass refs only to the backend that made them"
                )
            raise ObjectLostError(f"RayBackend.{what}: {ref!r} was already freed")
        return entry[0]

    def _function_ref(self, handle: FunctionHandle, what: str) -> ray.ObjectRef:
        with self._lock:
            fn_ref = self._functions.get(handle.id)
        if fn_ref is None:
            raise ValueError(
                f"RayBackend.{what}: function {handle.name!r} is not registered "
                "(released, or registered on another backend): call register_function first"
            )
        return fn_ref

    def _alive_node_resources(self) -> list[Resources]:
        import ray

        return [_resources_of(n["Resources"]) for n in ray.nodes() if n.get("Alive")]

    def _check_fits(self, resources: Resources, label: str) -> None:
        """Raise ResourceError if no node can ever run ``resources`` (Ray would wait forever)."""
        if any(resources.fits_in(node) for node in self._node_resources):
            return
        self._node_resources = self._alive_node_resources()  # nodes may have joined
        if any(resources.fits_in(node) for node in self._node_resources):
            return
        biggest = max(self._node_resources, key=lambda r: (r.gpu, r.cpu), default=Resources())
        raise ResourceError(
            f"{label} needs {resources!r}, but no Ray node has that much (largest node: "
            f"{biggest!r}): lower num_cpus/num_gpus/resources or add nodes with them"
        )

    def _track(self, future: _RayFuture) -> _RayFuture:
        with self._lock:
            self._pending.add(future)
        return future

    def _forget(self, future: _RayFuture) -> None:
        with self._lock:
            self._pending.discard(future)

    def _task_result(self, ray_refs: list[ray.ObjectRef], outcome: _Outcome) -> TaskResult:
        if outcome.node_id == self._node_id:
            with self._lock:
                self._worker_pids.add(outcome.pid)
        refs = [
            self._adopt(ray_ref, nbytes, rows)
            for ray_ref, (nbytes, rows, _schema) in zip(ray_refs, outcome.blocks, strict=True)
        ]
        return TaskResult(
            refs=refs,
            schemas=[schema for _n, _r, schema in outcome.blocks],
            worker_id=outcome.worker_id,
            start_ts=outcome.start_ts,
            end_ts=outcome.end_ts,
            cpu_s=outcome.cpu_s,
            counters=dict(outcome.counters),
        )
