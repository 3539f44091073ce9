"""The Backend protocol: what the executor needs from an execution substrate.

A backend runs *task functions* over Arrow tables held in its object store:

    fn(inputs: list[pa.Table], *args) -> Iterable[pa.Table]

Each table the function yields is put into the store and comes back as an
``ObjectRef``. Functions are registered once (``register_function``: pickled
once, shipped to each worker once and cached there by id) and then submitted
many times with different inputs and arguments. Actors are workers that build
``state = factory()`` once and then serve ``state(inputs, *args)`` calls.

Constructors take ``(num_cpus=None, num_gpus=None, object_store_memory=None,
**options)``; None means detect (CPUs from the affinity mask, GPUs from
CUDA_VISIBLE_DEVICES / nvidia-smi, store = 30 % of RAM).

Implementations: ``local`` (worker processes + shared memory, the default),
``inline`` (in-process, synchronous; deterministic tests) and ``ray``.
Every implementation passes ``tests/contracts/backend_contract.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from runtime.refs import ObjectRef
from runtime.resources import Resources

if TYPE_CHECKING:
    import pyarrow as pa

TaskFn = Callable[..., Iterable["pa.Table"]]


@dataclass(frozen=True)
class FunctionHandle:
    """A registered task function or actor factory (``id`` is unique per backend)."""

    id: str
    name: str


@dataclass
class TaskResult:
    """What a finished task returns: refs of its outputs and how it ran.

    ``counters`` are the values the function added with
    ``runtime.task.current_task().add(name, value)`` (rows skipped, bytes read...).
    """

    refs: list[ObjectRef]
    schemas: list[pa.Schema]
    worker_id: str
    start_ts: float
    end_ts: float
    cpu_s: float
    counters: dict[str, float] = field(default_factory=dict)
    attempts: int = 1

    @property
    def wall_s(self) -> float:
        return self.end_ts - self.start_ts


class TaskFuture(Protocol):
    """A submitted task. ``result`` raises ``RemoteTaskError`` for errors in user
    code, ``WorkerCrashedError`` after retries and ``TaskCancelledError``."""

    name: str

    def done(self) -> bool: ...

    def result(self, timeout: float | None = None) -> TaskResult: ...


class ActorHandle(Protocol):
    """A started actor; ``ready`` resolves when its factory has run."""

    id: str
    name: str
    ready: TaskFuture


@dataclass(frozen=True)
class StoreStats:
    """Object store usage in bytes; the spill counters are cumulative over the session."""

    used_bytes: int
    capacity_bytes: int
    peak_bytes: int
    spilled_bytes: int
    num_objects: int
    restored_bytes: int = 0
    """Bytes of spilled objects read back (each read of a spilled object counts)."""
    spill_write_s: float = 0.0
    """Seconds spent writing spill files (for the disk's write bandwidth)."""
    spill_dir: str = ""
    """The directory spilled objects go to ("" when the backend does not say)."""


class Backend(Protocol):
    """The execution substrate the streaming executor drives."""

    name: str
    driver_threads: bool
    """Whether ``submit(in_driver=True)`` runs tasks on driver threads (False:
    every task runs in the backend's workers, e.g. ray, which ignores it)."""

    # -- objects -----------------------------------------------------------
    def put(self, table: pa.Table) -> ObjectRef: ...

    def get(self, ref: ObjectRef) -> pa.Table: ...

    def free(self, refs: Sequence[ObjectRef]) -> None: ...

    def store_stats(self) -> StoreStats: ...

    # -- tasks -------------------------------------------------------------
    def register_function(self, fn: Callable[..., Any], name: str = "") -> FunctionHandle: ...

    def release_function(self, handle: FunctionHandle) -> None: ...

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
        """Run ``fn(tables_of(inputs), *args)`` somewhere with ``resources`` free.

        ``in_driver=True`` runs it on the backend's thread pool in the driver
        process (no process hop): for GIL-releasing Arrow work and tiny plans
        with no Python UDF. Backends without a driver pool may ignore it."""
        ...

    def cancel(self, future: TaskFuture) -> None: ...

    def wait_any(self, futures: Sequence[TaskFuture], timeout: float | None) -> list[TaskFuture]:
        """Block until at least one of ``futures`` is done or ``timeout`` passes;
        return the done ones (possibly empty on timeout)."""
        ...

    # -- actors ------------------------------------------------------------
    def start_actor(
        self, factory: FunctionHandle, *, resources: Resources = Resources(cpu=1), name: str = ""
    ) -> ActorHandle: ...

    def submit_actor(
        self,
        actor: ActorHandle,
        inputs: Sequence[ObjectRef] = (),
        args: tuple = (),
        *,
        name: str = "",
    ) -> TaskFuture: ...

    def stop_actor(self, actor: ActorHandle) -> None: ...

    # -- resources and lifetime --------------------------------------------
    def total_resources(self) -> Resources: ...

    def available_resources(self) -> Resources: ...

    def worker_rss_bytes(self) -> int:
        """Resident memory of all worker processes together (0 where unknown)."""
        ...

    def shutdown(self) -> None: ...

    # -- optional capabilities: every backend answers, some with "cannot" ------
    def prestart(self, wait: float | None = None) -> bool:
        """Start booting worker processes now, so that the first tasks do not
        wait for them (the planner asks for a plan that needs workers); with
        ``wait``, block up to that many seconds until they are ready. True when
        workers are ready; False where there are none to boot (inline, ray: Ray
        starts its own) or they are not ready yet."""
        ...

    def task_stack(self, future: TaskFuture, timeout: float = 1.0) -> str | None:
        """The Python stack of whatever runs ``future`` now (stall reports), or
        None when nothing runs it or the backend cannot look."""
        ...

    def worker_pids(self) -> list[int]:
        """Pids of the live worker processes this backend started (none where it
        starts none)."""
        ...
