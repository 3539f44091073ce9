"""The context of the task running in this thread: counters reported back with its result.

>>> from runtime.task import current_task
>>> current_task().add("rows_skipped", 3)   # inside a task function
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class TaskContext:
    """Per-task state visible to the task function."""

    task_name: str = ""
    worker_id: str = ""
    gpu_ids: tuple[int, ...] = ()
    counters: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, value: float = 1.0) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + value


_local = threading.local()


def current_task() -> TaskContext:
    """The running task's context (a fresh throwaway one outside any task)."""
    ctx = getattr(_local, "ctx", None)
    return ctx if ctx is not None else TaskContext()


def set_current_task(ctx: TaskContext | None) -> None:
    """Install ``ctx`` for this thread (backends call this around each task)."""
    _local.ctx = ctx
