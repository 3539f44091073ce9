"""Futures of tasks that complete under a pool's condition variable.

A backend resolves them from its reactor thread; ``wait_any`` blocks on the same
condition, so the executor never polls.

>>> cv = threading.Condition()
>>> f = Future("t", cv)
>>> with cv:
...     f.resolve(exc=ValueError("boom"))
>>> wait_any(cv, [f], timeout=0) == [f]
True
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from runtime.backends.base import TaskResult


class Future:
    """A task's result-to-be; completes under the pool's condition."""

    __slots__ = ("name", "_cv", "_done", "_result", "_exc", "_task", "thread")

    def __init__(self, name: str, cv: threading.Condition) -> None:
        self.name = name
        self._cv = cv
        self._done = False
        self._result: TaskResult | None = None
        self._exc: BaseException | None = None
        self._task: Any = None  # the pool's record of the running task, for cancel
        self.thread: int | None = None
        """The ident of the driver thread running the task (driver-thread tasks)."""

    def done(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> TaskResult:
        if not self._done:
            with self._cv:
                if not self._cv.wait_for(lambda: self._done, timeout):
                    raise TimeoutError(f"task {self.name} did not finish within {timeout} s")
        if self._exc is not None:
            raise self._exc
        assert self._result is not None
        return self._result

    def resolve(self, result: TaskResult | None = None, exc: BaseException | None = None) -> None:
        """Complete the future; the caller holds the condition's lock."""
        if not self._done:
            self._result, self._exc, self._done = result, exc, True
            self._cv.notify_all()

    def __repr__(self) -> str:
        return f"Future({self.name}, done={self._done})"


def wait_any(cv: threading.Condition, futures: Sequence[Future], timeout: float | None) -> list:
    """Block on ``cv`` until one of ``futures`` is done; return the done ones."""
    with cv:
        cv.wait_for(lambda: any(f._done for f in futures), timeout)
        return [f for f in futures if f._done]
