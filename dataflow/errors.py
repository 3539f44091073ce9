"""The exception tree of dataflow.

DataflowError
  UserCodeError        user code raised; names operator, block/file, remote traceback
  SourceError          an input is missing, corrupt or unreadable; names the path
  PlanError            the pipeline is invalid (bad expression, unknown column, ...)
  WorkerCrashedError   a worker died past ``max_task_retries``
  ResourceError        a stage asks for resources the backend can never give
"""

from __future__ import annotations

from runtime.errors import ResourceError as _RuntimeResourceError
from runtime.errors import WorkerCrashedError as _RuntimeWorkerCrashed


class DataflowError(Exception):
    """Base class of every error dataflow raises on purpose."""


class UserCodeError(DataflowError):
    """An exception raised by user code (a UDF, a callable class, a datasource).

    The message names the operator (e.g. ``map_batches(normalize)``), the block
    or file, and includes the remote traceback; ``__cause__`` is the original
    exception when it could be pickled back.
    """

    def __init__(
        self, message: str, *, operator: str = "", block: str = "", remote_traceback: str = ""
    ) -> None:
        super().__init__(message)
        self.operator = operator
        self.block = block
        self.remote_traceback = remote_traceback


class SourceError(DataflowError):
    """An input path is missing, corrupt or unreadable; ``path`` names it."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class PlanError(DataflowError, ValueError):
    """The pipeline cannot be planned: bad arguments, expression or column."""


class WorkerCrashedError(DataflowError, _RuntimeWorkerCrashed):
    """A worker process died (signal, segfault, OOM kill) past ``max_task_retries``."""


class ResourceError(DataflowError, _RuntimeResourceError):
    """A stage needs resources that this backend can never provide."""


__all__ = [
    "DataflowError",
    "PlanError",
    "ResourceError",
    "SourceError",
    "UserCodeError",
    "WorkerCrashedError",
]
