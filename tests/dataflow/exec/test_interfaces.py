"""dataflow.exec.interfaces: helpers every physical operator shares."""

from __future__ import annotations

import threading

from dataflow.exec.interfaces import cancel_or_collect
from runtime.backends.base import TaskResult
from runtime.errors import TaskCancelledError
from runtime.futures import Future
from runtime.refs import ObjectRef


def result_of(*ids: str) -> TaskResult:
    refs = [ObjectRef(i, 8, 1, "shm", "s") for i in ids]
    return TaskResult(refs, [], "w1", 0.0, 1.0, 1.0)


class RacingBackend:
    """A backend whose task finishes just before ``cancel`` reaches it: the
    future holds the result and the cancel has nothing left to stop."""

    def __init__(self, result: TaskResult | None) -> None:
        self.result = result
        self.cancelled: list[Future] = []

    def cancel(self, fut: Future) -> None:
        self.cancelled.append(fut)
        with fut._cv:
            if self.result is not None:
                fut.resolve(self.result)  # the task won the race
            fut.resolve(exc=TaskCancelledError(f"task {fut.name} was cancelled"))


def future() -> Future:
    return Future("t", threading.Condition())


def test_a_task_finishing_while_cancelled_gives_its_outputs_to_free():
    """The shutdown race behind leaked objects after an error: the task's
    result lands between ``done()`` and ``cancel``; its refs must still be freed."""
    fut = future()
    backend = RacingBackend(result_of("a", "b"))
    assert [r.id for r in cancel_or_collect(backend, fut)] == ["a", "b"]
    assert backend.cancelled == [fut]


def test_a_cancelled_task_holds_nothing_and_a_done_one_is_not_cancelled():
    fut = future()
    assert cancel_or_collect(RacingBackend(None), fut) == []
    assert isinstance(fut._exc, TaskCancelledError)
    done = future()
    with done._cv:
        done.resolve(result_of("c"))
    backend = RacingBackend(None)
    assert [r.id for r in cancel_or_collect(backend, done)] == ["c"]
    assert backend.cancelled == []
    failed = future()
    with failed._cv:
        failed.resolve(exc=ValueError("boom"))
    assert cancel_or_collect(backend, failed) == []
