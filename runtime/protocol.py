"""Messages between the driver and its worker processes.

Transport: one authenticated ``multiprocessing.connection`` socket per worker
(a Unix socket in the session's 0700 directory, challenge-checked with a random
authkey). Only these small messages travel through it: block bytes stay in the
shared-memory store and move as ``ObjectRef``; a task function travels once per
worker, as a file in the session directory that the worker loads on first use
and caches by function id.

Driver -> worker: ``RunTask``, ``StartActor``, ``ReleaseFunction``, ``Shutdown``.
Worker -> driver: ``Hello`` (once, after connecting), ``TaskDone``, ``TaskFailed``.
A worker runs the messages it receives strictly in order, so the driver may
queue a second task behind a running one (pipelining).

>>> decode(encode(Shutdown()))
Shutdown()
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import cloudpickle

from runtime.refs import ObjectRef

if TYPE_CHECKING:
    from runtime.store import StoreLocation


def _message(cls: type) -> type:
    """A frozen message class that pickles as a plain tuple of its fields
    (dataclasses' generic slots state costs several times more per task)."""
    cls = dataclass(frozen=True, slots=True)(cls)
    names = tuple(f.name for f in fields(cls))

    def __reduce__(self: Any) -> tuple:
        return (cls, tuple([getattr(self, n) for n in names]))

    cls.__reduce__ = __reduce__
    return cls


@_message
class WorkerInit:
    """Written to a new worker's stdin: where to connect and what to load."""

    address: str
    authkey: bytes
    worker_id: int
    store: StoreLocation
    sys_path: tuple[str, ...]
    preload: tuple[str, ...] = ()


@_message
class Hello:
    worker_id: int
    pid: int


@_message
class RunTask:
    """Run function (or, with ``actor``, the actor's state) on ``inputs``."""

    task_id: int
    fn_id: str
    inputs: tuple[ObjectRef, ...]
    args: tuple
    name: str
    gpu_ids: tuple[int, ...] = ()
    actor: bool = False


@_message
class StartActor:
    """Build the actor's state with ``factory()`` (function ``fn_id``)."""

    task_id: int
    fn_id: str
    name: str
    gpu_ids: tuple[int, ...] = ()


@_message
class ReleaseFunction:
    fn_id: str


@_message
class Shutdown:
    pass


@_message
class TaskDone:
    """A finished task; ``schemas`` are Arrow-serialized (cheaper than pickling)."""

    task_id: int
    refs: tuple[ObjectRef, ...]
    schemas: tuple[bytes, ...]
    start_ts: float
    end_ts: float
    cpu_s: float
    counters: dict[str, float] = field(default_factory=dict)


@_message
class TaskFailed:
    """User code raised; ``cause`` is the pickled exception when it pickles."""

    task_id: int
    type_name: str
    message: str
    traceback_text: str
    cause: bytes | None = None


def encode(message: Any) -> bytes:
    """Pickle a message; arguments that plain pickle refuses (lambdas, local
    classes) go through cloudpickle, whose output plain ``pickle`` loads."""
    try:
        return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        return cloudpickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> Any:
    return pickle.loads(data)
