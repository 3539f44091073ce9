"""Runtime failures. ``dataflow.errors`` re-exports them under its own tree."""

from __future__ import annotations


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
