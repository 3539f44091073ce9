"""Runtime failures. ``dataflow.errors`` re-exports them under its own tree.

An exception raised by user code is captured once, here, whatever runs it (a
worker process, a driver thread, the inline backend, a Ray task, a map
stage): ``RemoteTaskError.capture`` keeps its type name, message and
traceback text, and the exception itself only when it survives the trip to
another process (``dumps_exception``: cloudpickle out, plain pickle back),
so every backend reports the same ``cause``.

>>> try:
...     raise ValueError("bad block 7")
... except ValueError as e:
...     err = RemoteTaskError.capture(e, "map_batches(f)")
>>> str(err), isinstance(err.cause, ValueError)
('ValueError: bad block 7', True)
"""

from __future__ import annotations

import pickle
import traceback

import cloudpickle


class RuntimeFailure(Exception):
    """Base of every failure raised by the runtime."""


class RemoteTaskError(RuntimeFailure):
    """User code raised inside a task or actor call.

    Carries the remote exception's type name, message and formatted traceback;
    ``cause`` is the exception itself when it could be pickled.
    """

    def __init__(
        self,
        type_name: str,
        message: str,
        traceback_text: str,
        cause: BaseException | None = None,
        task_name: str = "",
    ) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text
        self.cause = cause
        self.task_name = task_name

    def __reduce__(self):
        return (
            RemoteTaskError,
            (self.type_name, self.message, self.traceback_text, self.cause, self.task_name),
        )

    @classmethod
    def capture(
        cls, exc: BaseException, task_name: str = "", *, skip_file: str | None = None
    ) -> RemoteTaskError:
        """``exc`` as the error its caller sees: the cause is ``exc`` when it
        pickles both ways, else None (see ``traceback_text`` for ``skip_file``)."""
        cause = exc if dumps_exception(exc) is not None else None
        text = traceback_text(exc, skip_file)
        return cls(type(exc).__name__, str(exc), text, cause, task_name)


def dumps_exception(exc: BaseException) -> bytes | None:
    """``exc`` pickled for another process, or None when it cannot be rebuilt
    there (sockets, locks, a constructor whose arguments are not its ``args``).
    cloudpickle, so that exception classes defined in a script travel by value."""
    try:
        data = cloudpickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(data)
    except Exception:  # the failure must be reported even when its exception cannot travel
        return None
    return data


def traceback_text(exc: BaseException, skip_file: str | None = None) -> str:
    """``exc``'s formatted traceback; the leading frames in ``skip_file`` (the
    capturing module's own) are dropped so the text starts in user code."""
    tb = exc.__traceback__
    while skip_file is not None and tb is not None and tb.tb_frame.f_code.co_filename == skip_file:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


class WorkerCrashedError(RuntimeFailure):
    """A worker process died (signal, segfault, OOM kill) past all retries."""

    def __init__(self, message: str, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.exitcode = exitcode

    def __reduce__(self):
        return (WorkerCrashedError, (str(self), self.exitcode))


class TaskCancelledError(RuntimeFailure):
    """The task was cancelled before it finished."""


class SpillError(RuntimeFailure):
    """The object store could not write an object to its spill directory (disk
    full, over quota, file too large); ``directory`` names it."""

    def __init__(self, message: str, directory: str = "") -> None:
        super().__init__(message)
        self.directory = directory

    def __reduce__(self):
        return (SpillError, (str(self), self.directory))


class ObjectLostError(RuntimeFailure):
    """An object ref no longer resolves (freed, or its session ended)."""


class ResourceError(RuntimeFailure):
    """A request can never be satisfied by this backend's resources."""
