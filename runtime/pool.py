"""Worker processes and the scheduling of tasks and actors onto them.

State (all guarded by ``WorkerPool._lock``; ``_cv`` is its condition and is
notified whenever a future completes):

* ``_available`` and ``_gpu_free``: resources not leased to any worker. A task
  worker holds a *lease* of its task's resources while it has tasks; an actor
  worker holds its lease for the actor's life.
* ``_pending``: tasks not yet placed, one FIFO per resource shape (so one shape
  that cannot fit does not block the others); actor starts come first.
* each worker's ``inflight``: the tasks sent to it, in the order it runs them
  (a worker serves its socket strictly in order), the first one running.

Placement of a task with resources R: (1) if R fits in what is available,
lease it to an idle worker with the right GPUs or to a new one; (2) else queue
it behind a running task of the same shape on a worker with fewer than
``PIPELINE_DEPTH`` tasks, so that the worker finds its next task in its socket
instead of idling for a driver round trip, unless an actor start is pending
(queued tasks would keep the lease it waits for); (3) else leave it pending.
The depth is ``SHORT_PIPELINE_DEPTH`` for functions whose tasks have been
short (a running mean per function).

A reactor thread blocks in ``multiprocessing.connection.wait`` on the listening
socket, every worker's socket and process fd, and a wake-up pipe; it accepts
new workers, turns replies into completed futures, and handles deaths: the
running task of a dead worker is retried on a fresh one up to ``max_retries``
(the tasks queued behind it are re-placed without being charged), past which
its future fails with ``WorkerCrashedError``.

Workers are fresh interpreters (``python -m runtime.worker``), never forks: the
driver has threads (this reactor, the executor, Arrow's pools) and forking a
threaded process can deadlock the child on a lock some other thread held; a
fresh interpreter also gets ``CUDA_VISIBLE_DEVICES`` in its environment before
anything can initialize CUDA.
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from pathlib import Path

import psutil
import pyarrow as pa

import runtime
from runtime.backends.base import TaskResult
from runtime.errors import SpillError, TaskCancelledError, WorkerCrashedError
from runtime.futures import Future
from runtime.lifeline import LIFELINE_ENV, driver_lifeline
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
from runtime.resources import Resources, check_fits
from runtime.store import ObjectStore
from runtime.worker import error_from_failure, stack_path, worker_object_prefix

PIPELINE_DEPTH = 2
SHORT_PIPELINE_DEPTH = 8
"""Queue depth per worker for a function whose tasks are short (under
``SHORT_TASK_S`` on average): many short tasks queue in the worker's socket,
which then never idles for a driver round trip. Long tasks queue only
``PIPELINE_DEPTH`` deep, so that none waits behind a busy worker while another
frees up."""
SHORT_TASK_S = 0.005
_EPS = 1e-9
_RUNTIME_ROOT = str(Path(runtime.__file__).resolve().parent.parent)


@dataclass(eq=False)
class _Task:
    id: int
    fn_id: str
    inputs: tuple[ObjectRef, ...]
    args: tuple
    name: str
    resources: Resources
    max_retries: int
    future: Future
    actor: Actor | None = None
    is_actor_start: bool = False
    crashes: int = 0
    worker: _Worker | None = None


@dataclass(eq=False)
class Actor:
    """A started actor (``runtime.backends.base.ActorHandle``)."""

    id: str
    name: str
    ready: Future
    resources: Resources
    worker: _Worker | None = None
    backlog: list[_Task] = field(default_factory=list)
    error: BaseException | None = None


@dataclass(eq=False)
class _Worker:
    id: int
    proc: subprocess.Popen
    devices: tuple[int, ...]
    pidfd: int | None
    conn: Connection | None = None
    inflight: deque[_Task] = field(default_factory=deque)
    lease: Resources | None = None
    actor: Actor | None = None
    known_fns: set[str] = field(default_factory=set)
    stopping: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class WorkerPool:
    """Runs tasks and actors on worker processes started on demand.

    >>> pool = WorkerPool(store, Resources(cpu=2), gpu_names=[])  # doctest: +SKIP
    """

    def __init__(
        self,
        store: ObjectStore,
        total: Resources,
        gpu_names: Sequence[str],
        max_workers: int | None = None,
        preload: Sequence[str] = (),
    ) -> None:
        self._preload = tuple(preload)
        self._store = store
        self._total = total
        self._available = total
        self._gpu_names = list(gpu_names)
        self._gpu_free = [1.0] * len(self._gpu_names)
        self._max_workers = max_workers or max(8, 4 * math.ceil(total.cpu))
        self._max_idle = max(2, math.ceil(total.cpu))
        self._lock = threading.Lock()
        self.cv = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._workers: dict[int, _Worker] = {}
        self._idle: dict[tuple[int, ...], list[_Worker]] = {}
        self._busy: dict[Resources, set[_Worker]] = {}
        self._pending: dict[Resources, deque[_Task]] = {}
        self._pending_actors: deque[_Task] = deque()
        self._closing = False
        self._started = False
        self._authkey = secrets.token_bytes(32)
        self._address = str(Path(store.location.shm_dir) / "workers.sock")
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = -1, -1
        # A persistent epoll set: building a new one per wait costs more than
        # the rest of a task's driver-side handling.
        self._selector = selectors.DefaultSelector()
        self._schemas: dict[bytes, pa.Schema] = {}
        self._task_s: dict[str, float] = {}  # running mean task seconds per function
        self._reactor: threading.Thread | None = None

    # -- public API (called by the backend) --------------------------------

    def submit(
        self,
        fn_id: str,
        inputs: tuple[ObjectRef, ...],
        args: tuple,
        resources: Resources,
        max_retries: int,
        name: str,
    ) -> Future:
        self.check_fits(resources, f"task {name}")
        future = Future(name, self.cv)
        task = _Task(next(self._ids), fn_id, inputs, args, name, resources, max_retries, future)
        future._task = task
        with self._lock:
            self._check_open()
            self._pending.setdefault(resources, deque()).append(task)
            self._schedule()
        return future

    def start_actor(self, fn_id: str, resources: Resources, name: str) -> Actor:
        self.check_fits(resources, f"actor {name}")
        ready = Future(name, self.cv)
        actor = Actor(f"actor-{next(self._ids)}", name, ready, resources)
        task = _Task(next(self._ids), fn_id, (), (), name, resources, 0, ready, actor, True)
        ready._task = task
        with self._lock:
            self._check_open()
            self._pending_actors.append(task)
            self._schedule()
        return actor

    def submit_actor(
        self, actor: Actor, inputs: tuple[ObjectRef, ...], args: tuple, name: str
    ) -> Future:
        future = Future(name, self.cv)
        task = _Task(next(self._ids), "", inputs, args, name, actor.resources, 0, future, actor)
        future._task = task
        with self._lock:
            self._check_open()
            if actor.error is not None:
                future.resolve(exc=actor.error)
            elif actor.worker is not None:
                self._assign(actor.worker, task)
            else:
                actor.backlog.append(task)
        return future

    def stop_actor(self, actor: Actor) -> None:
        with self._lock:
            stopped = TaskCancelledError(f"actor {actor.name} was stopped")
            actor.ready.resolve(exc=stopped)
            if actor.error is None:
                actor.error = stopped
            for task in actor.backlog:
                task.future.resolve(exc=stopped)
            actor.backlog.clear()
            start = actor.ready._task
            if start in self._pending_actors:
                self._pending_actors.remove(start)
            worker = actor.worker
            if worker is not None:
                busy = any(not t.future.done() for t in worker.inflight)
                for task in worker.inflight:
                    task.future.resolve(exc=stopped)
                self._stop_worker(worker, kill=busy)
            self._schedule()

    def cancel(self, future: Future) -> None:
        killed: _Worker | None = None
        with self._lock:
            task = future._task
            if future.done() or task is None:
                return
            future.resolve(exc=TaskCancelledError(f"task {future.name} was cancelled"))
            queue = self._pending.get(task.resources)
            if queue is not None and task in queue:
                queue.remove(task)
            elif task.worker is not None and task.actor is None:
                worker = task.worker
                if worker.inflight and worker.inflight[0] is task:
                    # The only way to stop running user code is to end its process;
                    # the reactor re-places the tasks queued behind it.
                    _kill(worker)
                    killed = worker
            # A queued or actor task runs anyway; its outputs are freed on arrival.
            if killed is not None:
                # Return once the reactor has reaped it and removed the outputs of
                # tasks it finished unreported, so the caller sees nothing left over.
                self.cv.wait_for(lambda: killed.id not in self._workers or self._closing, 5)

    def prestart(self, wait: float | None = None) -> bool:
        """Start the CPU task workers now, in the background, so that the first
        tasks find them booted; a no-op once workers exist. With ``wait``, block
        up to that many seconds until every worker said hello; returns whether
        they all did."""
        with self._lock:
            self._check_open()
            n = min(self._max_idle, math.ceil(self._total.cpu)) - len(self._workers)
            idle = self._idle.setdefault((), [])
            for _ in range(n):
                idle.append(self._spawn(()))
            if wait is None:
                return False
            return self.cv.wait_for(
                lambda: self._closing or all(w.conn is not None for w in self._workers.values()),
                wait,
            )

    def release_function(self, fn_id: str) -> None:
        with self._lock:
            self._task_s.pop(fn_id, None)
            for worker in self._workers.values():
                if fn_id in worker.known_fns:
                    worker.known_fns.discard(fn_id)
                    self._send(worker, ReleaseFunction(fn_id))

    def available(self) -> Resources:
        with self._lock:
            return self._available

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self._workers.values()]

    def running_pid(self, future: Future) -> int | None:
        """The pid of the worker running ``future`` now (None: queued or done)."""
        with self._lock:
            task = future._task
            worker = task.worker if task is not None and not future.done() else None
            if worker is None or not worker.inflight or worker.inflight[0] is not task:
                return None
            return worker.pid

    def task_stack(self, future: Future, timeout: float) -> str | None:
        """The Python stack of the worker running ``future`` (its faulthandler
        dump on SIGUSR1); None when the task is not on a worker now."""
        with self._lock:
            worker = future._task.worker if future._task is not None else None
        if worker is None or worker.conn is None:
            # Not said hello yet: its SIGUSR1 handler may not be installed, and
            # the signal's default action would kill it.
            return None
        path = stack_path(self._store.location.shm_dir, worker.pid)
        start = path.stat().st_size if path.exists() else 0
        try:
            os.kill(worker.pid, signal.SIGUSR1)
        except ProcessLookupError:
            return None
        # The dump is written from a signal handler: wait until it stops growing.
        deadline, size = time.monotonic() + timeout, start
        while time.monotonic() < deadline:
            time.sleep(0.05)
            now = path.stat().st_size if path.exists() else 0
            if now > start and now == size:
                break
            size = now
        try:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace") or None
        except FileNotFoundError:  # the worker exited meanwhile, its directory with it
            return None

    def worker_rss_bytes(self) -> int:
        total = 0
        for pid in self.worker_pids():
            try:
                total += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                pass
        return total

    def check_fits(self, resources: Resources, what: str) -> None:
        check_fits(resources, self._total, what)

    def shutdown(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            gone = TaskCancelledError("the backend was shut down")
            for queue in [*self._pending.values(), self._pending_actors]:
                for task in queue:
                    task.future.resolve(exc=gone)
            workers = list(self._workers.values())
            for worker in workers:
                for task in worker.inflight:
                    task.future.resolve(exc=gone)
                if worker.actor is not None:
                    for task in worker.actor.backlog:
                        task.future.resolve(exc=gone)
                # A worker still booting has no socket to hear Shutdown on.
                self._stop_worker(worker, kill=bool(worker.inflight) or worker.conn is None)
        if self._reactor is not None:
            os.write(self._wake_w, b"x")
            self._reactor.join(timeout=10)
        for worker in workers:
            try:
                worker.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                _kill(worker)
                worker.proc.wait()
            self._close_worker(worker)
        self._selector.close()
        if self._listener is not None:
            self._listener.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    # -- scheduling (the caller holds the lock) ----------------------------

    def _check_open(self) -> None:
        if self._closing:
            raise RuntimeError("the backend was shut down; start a new one")

    def _schedule(self) -> None:
        while self._pending_actors and self._place_actor(self._pending_actors[0]):
            self._pending_actors.popleft()
        for queue in self._pending.values():
            while queue and self._place(queue[0]):
                queue.popleft()

    def _place(self, task: _Task) -> bool:
        worker = self._lease(task.resources)
        if worker is not None:
            self._busy.setdefault(task.resources, set()).add(worker)
            self._assign(worker, task)
            return True
        if self._pending_actors:
            return False  # let task leases drain: the actor start needs them
        short = self._task_s.get(task.fn_id, SHORT_TASK_S) < SHORT_TASK_S
        depth = SHORT_PIPELINE_DEPTH if short else PIPELINE_DEPTH
        for worker in self._busy.get(task.resources, ()):
            if len(worker.inflight) < depth:
                self._assign(worker, task)
                return True
        return False

    def _place_actor(self, task: _Task) -> bool:
        actor = task.actor
        assert actor is not None
        worker = self._lease(task.resources, for_actor=True)
        if worker is None:
            return False
        worker.actor, actor.worker = actor, worker
        self._assign(worker, task)
        for call in actor.backlog:
            self._assign(worker, call)
        actor.backlog.clear()
        return True

    def _lease(self, resources: Resources, for_actor: bool = False) -> _Worker | None:
        """Take ``resources`` and a worker with the right GPUs for them, or None."""
        if not resources.fits_in(self._available):
            return None
        devices = self._pick_devices(resources.gpu)
        if devices is None:
            return None
        idle = self._idle.get(devices)
        if idle:
            worker = idle.pop()
        else:
            if not for_actor and not self._make_room():
                return None
            worker = self._spawn(devices)
        self._available = self._available - resources
        for d in devices:
            self._gpu_free[d] -= min(resources.gpu, 1.0)
        worker.lease = resources
        return worker

    def _pick_devices(self, gpu: float) -> tuple[int, ...] | None:
        if gpu <= _EPS:
            return ()
        if gpu >= 1 - _EPS:
            free = [d for d, f in enumerate(self._gpu_free) if f >= 1 - _EPS]
            n = round(gpu)
            return tuple(free[:n]) if len(free) >= n else None
        # A fraction goes to the fullest device it fits on, so fractions pack
        # together and whole devices stay free for whole-GPU requests.
        fits = [d for d, f in enumerate(self._gpu_free) if f >= gpu - _EPS]
        return (min(fits, key=lambda d: self._gpu_free[d]),) if fits else None

    def _make_room(self) -> bool:
        """True when one more task worker may start (stopping an idle one of
        other GPUs if the pool is at ``max_workers``)."""
        task_workers = sum(1 for w in self._workers.values() if w.actor is None)
        if task_workers < self._max_workers:
            return True
        for idle in self._idle.values():
            if idle:
                self._stop_worker(idle.pop(), kill=False)
                return True
        return False

    def _release(self, worker: _Worker) -> None:
        lease, worker.lease = worker.lease, None
        if lease is None:
            return
        self._available = self._available + lease
        for d in worker.devices:
            self._gpu_free[d] += min(lease.gpu, 1.0)
        busy = self._busy.get(lease)
        if busy is not None:
            busy.discard(worker)

    def _assign(self, worker: _Worker, task: _Task) -> None:
        task.worker = worker
        worker.inflight.append(task)
        if worker.conn is not None:
            self._send_task(worker, task)

    def _send_task(self, worker: _Worker, task: _Task) -> None:
        if task.is_actor_start:
            msg: object = StartActor(
                task.id, task.actor.ready._task.fn_id, task.name, worker.devices
            )
        else:
            msg = RunTask(
                task.id,
                task.fn_id,
                task.inputs,
                task.args,
                task.name,
                worker.devices,
                task.actor is not None,
            )
            worker.known_fns.add(task.fn_id)
        self._send(worker, msg)

    def _send(self, worker: _Worker, msg: object) -> None:
        if worker.conn is None:
            return
        try:
            worker.conn.send_bytes(encode(msg))
        except OSError:
            pass  # the worker is dying; the reactor sees its exit and re-places the task

    def _spawn(self, devices: tuple[int, ...]) -> _Worker:
        if not self._started:
            self._start_reactor()
        worker_id = next(self._ids)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_RUNTIME_ROOT, env.get("PYTHONPATH")]))
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self._gpu_names[d] for d in devices)
        # The worker exits by itself when this process dies (runtime/lifeline.py).
        lifeline = driver_lifeline()
        env[LIFELINE_ENV] = str(lifeline)
        proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.worker"],
            stdin=subprocess.PIPE,
            env=env,
            pass_fds=(lifeline,),
        )
        init = WorkerInit(
            self._address,
            self._authkey,
            worker_id,
            self._store.location,
            tuple(sys.path),
            self._preload,
        )
        assert proc.stdin is not None
        proc.stdin.write(pickle.dumps(init))
        proc.stdin.close()
        pidfd = os.pidfd_open(proc.pid) if hasattr(os, "pidfd_open") else None
        worker = _Worker(worker_id, proc, devices, pidfd)
        self._workers[worker_id] = worker
        if pidfd is not None:  # else its death shows as its socket's EOF
            self._selector.register(pidfd, selectors.EVENT_READ, (worker, False))
        return worker

    def _stop_worker(self, worker: _Worker, kill: bool) -> None:
        worker.stopping = True
        self._release(worker)
        self._send(worker, Shutdown())
        if kill:
            _kill(worker)

    def _task_finished(self, worker: _Worker) -> None:
        if worker.actor is None and not worker.inflight and not worker.stopping:
            self._release(worker)
            idle = self._idle.setdefault(worker.devices, [])
            if sum(map(len, self._idle.values())) >= self._max_idle:
                self._stop_worker(worker, kill=False)
            else:
                idle.append(worker)
        self._schedule()

    # -- reactor thread ------------------------------------------------------

    def _start_reactor(self) -> None:
        self._started = True
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self._address)
        self._listener.listen(64)
        self._wake_r, self._wake_w = os.pipe()
        self._selector.register(self._wake_r, selectors.EVENT_READ, (None, False))
        self._selector.register(self._listener, selectors.EVENT_READ, (None, True))
        self._reactor = threading.Thread(
            target=self._run_reactor, name="dataflow-pool", daemon=True
        )
        self._reactor.start()

    def _run_reactor(self) -> None:
        while not self._closing:
            events = self._selector.select()
            # Replies before deaths: a worker may reply and then exit.
            events.sort(key=lambda event: not isinstance(event[0].fileobj, Connection))
            exited: list[_Worker] = []
            for key, _ in events:
                worker, is_listener = key.data
                if is_listener:
                    self._accept()
                elif worker is None:
                    os.read(self._wake_r, 4096)
                elif isinstance(key.fileobj, Connection):
                    if worker.conn is not key.fileobj:
                        continue  # closed by an earlier event of this round
                    try:
                        data = key.fileobj.recv_bytes()
                    except (EOFError, OSError):
                        exited.append(worker)
                        continue
                    self._on_reply(worker, decode(data))
                else:
                    exited.append(worker)
            for worker in dict.fromkeys(exited):
                self._on_exit(worker)

    def _accept(self) -> None:
        assert self._listener is not None
        sock, _ = self._listener.accept()
        conn = Connection(sock.detach())
        try:
            deliver_challenge(conn, self._authkey)
            answer_challenge(conn, self._authkey)
            hello = decode(conn.recv_bytes())
        except Exception:  # not one of our workers, or it died mid-handshake
            conn.close()
            return
        with self._lock:
            worker = self._workers.get(hello.worker_id) if isinstance(hello, Hello) else None
            if worker is None or worker.pid != hello.pid:
                conn.close()
                return
            worker.conn = conn
            self.cv.notify_all()  # prestart(wait=...) waits for this
            self._selector.register(conn, selectors.EVENT_READ, (worker, False))
            for task in worker.inflight:
                self._send_task(worker, task)

    def _on_reply(self, worker: _Worker, msg: TaskDone | TaskFailed) -> None:
        spill_failed: SpillError | None = None
        if isinstance(msg, TaskDone):
            try:
                for ref in msg.refs:
                    self._store.adopt(ref)
            except SpillError as exc:  # the disk is full: the task fails, its outputs go
                spill_failed = exc
                self._store.free(msg.refs)
                for ref in msg.refs:
                    self._store.unlink(ref.id)
        with self._lock:
            task = worker.inflight.popleft()
            assert task.id == msg.task_id, "a worker replies in the order it was sent tasks"
            if isinstance(msg, TaskFailed):
                error = error_from_failure(msg, task.name)
                task.future.resolve(exc=error)
                if task.is_actor_start:
                    self._actor_failed(worker, error)
            elif spill_failed is not None:
                task.future.resolve(exc=spill_failed)
            elif task.future.done():  # cancelled or its actor stopped: nobody wants it
                self._store.free(msg.refs)
            else:
                if task.actor is None:
                    seconds = msg.end_ts - msg.start_ts
                    mean = self._task_s.get(task.fn_id, seconds)
                    self._task_s[task.fn_id] = 0.8 * mean + 0.2 * seconds
                result = TaskResult(
                    list(msg.refs),
                    [self._schema(b) for b in msg.schemas],
                    str(worker.pid),
                    msg.start_ts,
                    msg.end_ts,
                    msg.cpu_s,
                    msg.counters,
                    task.crashes + 1,
                )
                task.future.resolve(result)
            self._task_finished(worker)

    def _schema(self, data: bytes) -> pa.Schema:
        """Deserialize a schema; tasks of one operator share theirs, so cache."""
        schema = self._schemas.get(data)
        if schema is None:
            if len(self._schemas) > 1024:
                self._schemas.clear()
            schema = self._schemas[data] = pa.ipc.read_schema(pa.py_buffer(data))
        return schema

    def _actor_failed(self, worker: _Worker, error: BaseException) -> None:
        actor = worker.actor
        assert actor is not None
        actor.error = error
        for task in [*worker.inflight, *actor.backlog]:
            task.future.resolve(exc=error)
        self._stop_worker(worker, kill=False)

    def _on_exit(self, worker: _Worker) -> None:
        try:
            code = worker.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # its socket closed but it lingers
            _kill(worker)
            code = worker.proc.wait()
        with self._lock:
            if self._workers.pop(worker.id, None) is None:
                return
            self._release(worker)
            idle = self._idle.get(worker.devices, [])
            if worker in idle:
                idle.remove(worker)
            self._close_worker(worker)
            # Tasks it finished whose replies died with it left unadopted outputs.
            self._store.remove_unadopted(worker_object_prefix(worker.id))
            tasks = list(worker.inflight)
            worker.inflight.clear()
            if worker.stopping or self._closing:
                for task in tasks:
                    task.future.resolve(exc=TaskCancelledError(f"task {task.name} was cancelled"))
            elif worker.actor is not None:
                error = WorkerCrashedError(
                    f"worker {worker.pid} of actor {worker.actor.name} {_exit_text(code)}", code
                )
                worker.actor.error = error
                for task in tasks:
                    task.future.resolve(exc=error)
            else:
                self._requeue(worker, tasks, code)
            self._schedule()
            self.cv.notify_all()  # a cancel() may wait for this worker to be gone

    def _requeue(self, worker: _Worker, tasks: list[_Task], code: int | None) -> None:
        """The first task was running when ``worker`` died: charge it a crash;
        the ones queued behind it go back to the front of their queues."""
        for i, task in reversed(list(enumerate(tasks))):
            if task.future.done():
                continue
            if i == 0:
                task.crashes += 1
                if task.crashes > task.max_retries:
                    task.future.resolve(
                        exc=WorkerCrashedError(
                            f"worker {worker.pid} running {task.name} {_exit_text(code)} "
                            f"(retried {task.max_retries} times)",
                            code,
                        )
                    )
                    continue
            task.worker = None
            self._pending.setdefault(task.resources, deque()).appendleft(task)

    def _close_worker(self, worker: _Worker) -> None:
        for fileobj in (worker.conn, worker.pidfd):
            if fileobj is not None and fileobj in self._selector.get_map():
                self._selector.unregister(fileobj)
        if worker.conn is not None:
            worker.conn.close()
            worker.conn = None
        if worker.pidfd is not None:
            os.close(worker.pidfd)
            worker.pidfd = None


def _kill(worker: _Worker) -> None:
    try:
        worker.proc.kill()
    except OSError:
        pass
