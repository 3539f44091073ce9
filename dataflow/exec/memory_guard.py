"""``DataContext.memory_limit`` as a cap on the whole process tree, not a hint.

Two mechanisms keep it. ``MemoryLimitPolicy`` (backpressure.py) starts nothing
new while the resident memory of the driver and its workers is over the limit:
enough when the memory belongs to blocks in flight, since the running tasks
finish and free it. Not enough when a task's own memory keeps growing (a UDF
that leaks: a list or cache that grows with every batch) or one task alone
needs more than the limit: holding new work changes nothing, and the kernel's
OOM killer would end a process without a word. ``MemoryGuard`` then stops the
run with ``MemoryLimitError`` naming the operator: when the tree has been over
the limit for ``GRACE_S`` while tasks ran, or at once past ``HARD_FACTOR``
times the limit.

Blame: of the running tasks, the one whose process holds the most private
(not shared-memory) bytes; for a task on a driver thread, the driver's growth
since the run began. Tasks of a leaking UDF may be short enough that none runs
when memory is sampled (the backpressure lets one task at a time start while
over the limit): then the operator that launched the latest task while over
the limit is named, beside the process that holds the most. The guard learns
launches as an executor observer. Stopping the run cancels every task, which
ends the worker processes running them (the only way to interrupt user code);
a driver thread cannot be ended and finishes its task unobserved.

>>> guard = MemoryGuard(2 << 30, backend)  # doctest: +SKIP
>>> guard.check(now, rss_bytes, ops)  # raises MemoryLimitError, or returns  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dataflow.errors import MemoryLimitError
from dataflow.exec.stats import ExecutorObserver

if TYPE_CHECKING:
    from dataflow.exec.interfaces import PhysicalOperator
    from runtime.backends.base import TaskFuture

GRACE_S = 2.0
"""Seconds over the limit, with tasks running, before the run is stopped: running
tasks that only hold blocks in flight finish (and free them) well within it."""
HARD_FACTOR = 1.5
"""Past this multiple of the limit the run stops at once (a fast leak)."""
GiB = 1024**3


def private_bytes(pid: int) -> int:
    """Resident bytes of ``pid`` that are its own: RSS minus file-backed and
    shared-memory pages (mapped blocks of the object store count in every
    process that maps them, a leak only in one)."""
    import psutil

    try:
        info = psutil.Process(pid).memory_info()
    except psutil.Error:
        return 0
    return max(0, info.rss - getattr(info, "shared", 0))


class MemoryGuard(ExecutorObserver):
    """Stops a run whose process tree stays over ``limit_bytes``; see the module."""

    def __init__(self, limit_bytes: int, backend: Any) -> None:
        self.limit_bytes = limit_bytes
        self.backend = backend
        self._over_since: float | None = None
        self._launched_over: PhysicalOperator | None = None
        """The operator of the latest task launched while over the limit."""
        self._driver_at_start = private_bytes(os.getpid())

    def on_task_start(self, op: PhysicalOperator, future: TaskFuture, now: float) -> None:
        if self._over_since is not None:
            self._launched_over = op

    def check(self, now: float, rss_bytes: int, ops: Sequence[PhysicalOperator]) -> None:
        """Called with each sample of the tree's RSS; raises ``MemoryLimitError``
        to stop the run, else returns."""
        if rss_bytes <= self.limit_bytes:
            self._over_since, self._launched_over = None, None
            return
        if self._over_since is None:
            self._over_since = now
        over_s = now - self._over_since
        if over_s < GRACE_S and rss_bytes <= self.limit_bytes * HARD_FACTOR:
            return
        running = [(op, fut) for op in ops for fut in op.active_tasks()]
        blamed = self._blame_running(running) if running else None
        if blamed is None and self._launched_over is not None:
            blamed = (self._launched_over, *self._largest_process(), "launched tasks")
        if blamed is None:
            return  # the memory is held by the consumer or the store: backpressure waits
        op, where, held, did = blamed
        raise MemoryLimitError(
            f"memory_limit: the process tree (driver and workers) held "
            f"{rss_bytes / GiB:.2f} GiB, over DataContext.memory_limit = "
            f"{self.limit_bytes / GiB:.2f} GiB for {over_s:.1f} s while {op.name} {did} "
            f"({where} held {held / GiB:.2f} GiB of its own); the run was stopped. A UDF "
            "that keeps memory across calls (a list or cache that grows) does this; if the "
            "memory is needed, raise memory_limit, or lower target_max_block_size or the "
            "operator's concurrency",
            operator=op.name,
            rss_bytes=rss_bytes,
        )

    def _held(self, pid: int) -> tuple[str, int]:
        """(the process in words, its private bytes; the driver's since the run began)."""
        if pid == os.getpid():
            return "the driver", private_bytes(pid) - self._driver_at_start
        return f"worker process {pid}", private_bytes(pid)

    def _blame_running(self, running: list[tuple[PhysicalOperator, Any]]) -> tuple | None:
        """(operator, process, private bytes, "ran") of the running task whose
        process holds the most memory of its own."""
        task_pid = getattr(self.backend, "task_pid", None)  # an optional Backend extra
        best: tuple | None = None
        for op, fut in running:
            pid = task_pid(fut) if task_pid is not None else None
            if pid is not None:
                where, held = self._held(pid)
                if best is None or held > best[2]:
                    best = (op, where, held, "ran")
        if best is None:  # the backend cannot tell which process runs what
            return running[0][0], "the process running it", 0, "ran"
        return best

    def _largest_process(self) -> tuple[str, int]:
        """(the process in words, its private bytes) of the one holding the most."""
        pids = [os.getpid(), *getattr(self.backend, "worker_pids", list)()]
        return max((self._held(pid) for pid in pids), key=lambda held: held[1])
