"""Running task functions: the shared execution core and the worker process.

``execute`` runs one task function under a ``TaskContext`` and puts what it
yields into a store; every backend uses it (worker processes, the driver's
thread pool, the inline backend), so all of them validate outputs, time tasks
and report counters the same way. ``main`` is the loop of a worker process,
started by ``runtime.pool`` as ``python -m runtime.worker`` (see protocol.py).
"""

from __future__ import annotations

import faulthandler
import importlib
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

import pyarrow as pa

from runtime.backends.base import TaskResult
from runtime.errors import RemoteTaskError, dumps_exception, traceback_text
from runtime.fnpickle import loads_function
from runtime.lifeline import watch_driver
from runtime.protocol import (
    Hello,
    ReleaseFunction,
    RunTask,
    Shutdown,
    StartActor,
    TaskDone,
    TaskFailed,
    WorkerInit,
    decode,
    encode,
)
from runtime.refs import ObjectRef
from runtime.store import StoreClient
from runtime.task import TaskContext, set_current_task


def execute(
    fn: Callable[..., Any],
    tables: list[pa.Table],
    args: tuple,
    ctx: TaskContext,
    put: Callable[[pa.Table], ObjectRef],
    discard: Callable[[list[ObjectRef]], None],
) -> TaskResult:
    """Run ``fn(tables, *args)`` with ``ctx`` installed and ``put`` each table
    it yields. On an exception the outputs already put are ``discard``ed and
    the exception propagates."""
    refs: list[ObjectRef] = []
    schemas: list[pa.Schema] = []
    set_current_task(ctx)
    start, cpu0 = time.time(), time.thread_time()
    try:
        out = fn(tables, *args)
        if isinstance(out, pa.Table):  # a single table instead of an iterable
            out = (out,)
        elif out is None or isinstance(out, (str, bytes, dict)):
            raise TypeError(
                f"task {ctx.task_name} returned {type(out).__name__}; task functions "
                "return or yield pyarrow.Table objects"
            )
        for table in out:
            if not isinstance(table, pa.Table):
                raise TypeError(
                    f"task {ctx.task_name} yielded {type(table).__name__}; task functions "
                    "yield pyarrow.Table objects"
                )
            refs.append(put(table))
            schemas.append(table.schema)
    except BaseException:
        discard(refs)
        raise
    finally:
        set_current_task(None)
    return TaskResult(
        refs, schemas, ctx.worker_id, start, time.time(), time.thread_time() - cpu0, ctx.counters
    )


def failure_message(task_id: int, exc: BaseException) -> TaskFailed:
    """``exc`` as a message (``RemoteTaskError.capture``'s rule: the exception
    itself travels only if it pickles both ways)."""
    text = traceback_text(exc)
    return TaskFailed(task_id, type(exc).__name__, str(exc), text, dumps_exception(exc))


def error_from_failure(msg: TaskFailed, task_name: str) -> RemoteTaskError:
    cause = None
    if msg.cause is not None:
        try:
            cause = pickle.loads(msg.cause)
        except Exception:  # a class importable in the worker but not here
            cause = None
    return RemoteTaskError(msg.type_name, msg.message, msg.traceback_text, cause, task_name)


def worker_object_prefix(worker_id: int) -> str:
    """How the ids of the objects worker ``worker_id`` writes start."""
    return f"w{worker_id}."


def function_path(shm_dir: str, fn_id: str) -> Path:
    """Where the driver writes a registered function for workers to load."""
    return Path(shm_dir) / f"fn-{fn_id}.pkl"


def stack_path(shm_dir: str, pid: int) -> Path:
    """Where worker ``pid`` dumps its Python stack on SIGUSR1 (stall diagnosis)."""
    return Path(shm_dir) / f"stack-{pid}.txt"


class _WorkerLoop:
    def __init__(self, conn: Connection, init: WorkerInit) -> None:
        self.conn = conn
        self.store = StoreClient(init.store, id_prefix=worker_object_prefix(init.worker_id))
        self.worker_id = str(os.getpid())
        self.functions: dict[str, Callable[..., Any]] = {}
        self.actor_state: Callable[..., Any] | None = None

    def function(self, fn_id: str) -> Callable[..., Any]:
        fn = self.functions.get(fn_id)
        if fn is None:
            path = function_path(self.store.location.shm_dir, fn_id)
            fn = self.functions[fn_id] = loads_function(path.read_bytes())
        return fn

    def discard(self, refs: Sequence[ObjectRef]) -> None:
        for ref in refs:
            self.store.unlink(ref.id)

    def run(self, msg: RunTask) -> TaskDone:
        fn = self.actor_state if msg.actor else self.function(msg.fn_id)
        ctx = TaskContext(msg.name, self.worker_id, msg.gpu_ids)
        tables = [self.store.read(ref) for ref in msg.inputs]
        result = execute(fn, tables, msg.args, ctx, self.store.write, self.discard)
        return TaskDone(
            msg.task_id,
            tuple(result.refs),
            tuple(s.serialize().to_pybytes() for s in result.schemas),
            result.start_ts,
            result.end_ts,
            result.cpu_s,
            result.counters,
        )

    def start_actor(self, msg: StartActor) -> TaskDone:
        factory = self.function(msg.fn_id)
        ctx = TaskContext(msg.name, self.worker_id, msg.gpu_ids)
        set_current_task(ctx)
        start, cpu0 = time.time(), time.thread_time()
        try:
            self.actor_state = factory()
        finally:
            set_current_task(None)
        return TaskDone(msg.task_id, (), (), start, time.time(), time.thread_time() - cpu0)

    def serve(self) -> None:
        while True:
            try:
                msg = decode(self.conn.recv_bytes())
            except (EOFError, OSError):  # the driver went away
                return
            if isinstance(msg, Shutdown):
                return
            if isinstance(msg, ReleaseFunction):
                self.functions.pop(msg.fn_id, None)
                continue
            try:
                reply = self.run(msg) if isinstance(msg, RunTask) else self.start_actor(msg)
            except Exception as exc:
                reply = failure_message(msg.task_id, exc)
            try:
                self.conn.send_bytes(encode(reply))
            except (EOFError, OSError):
                return


def main() -> None:
    """Worker entry point: read ``WorkerInit`` from stdin, connect, serve."""
    # Ctrl-C reaches the whole process group; the driver decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_driver()  # leave at once when the driver dies, even mid-task (kill -9)
    init: WorkerInit = pickle.load(sys.stdin.buffer)
    # The driver's import path, so functions pickled by reference resolve here.
    sys.path[:] = list(init.sys_path)
    # Modules every task will need, imported before saying hello: a worker that
    # reports ready runs its first task without paying for them.
    for module in init.preload:
        importlib.import_module(module)
    # The driver diagnoses a stalled task by asking for this stack; faulthandler
    # dumps it from the signal handler, even while the task is stuck in C code.
    try:
        stack_file = open(stack_path(init.store.shm_dir, os.getpid()), "w")  # noqa: SIM115
        faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
        conn = Client(init.address, family="AF_UNIX", authkey=init.authkey)
        conn.send_bytes(encode(Hello(init.worker_id, os.getpid())))
    except (FileNotFoundError, ConnectionError, EOFError):
        # The session ended while this worker was booting (its directory or
        # socket is gone): nothing is waiting for it, so leave without a traceback.
        return
    _WorkerLoop(conn, init).serve()
    conn.close()


if __name__ == "__main__":
    main()
