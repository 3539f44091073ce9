"""The exception tree of dataflow.

DataflowError
  UserCodeError        user code raised; names operator, block/file, remote traceback
  SourceError          an input is missing, corrupt or unreadable; names the path
  PlanError            the pipeline is invalid (bad expression, unknown column, ...)
  WorkerCrashedError   a worker died past ``max_task_retries``
  ResourceError        a stage asks for resources the backend can never give
  ServiceClosedError   the batch service (streaming_split, serve) stopped under a consumer
  ServiceUsageError    a consumer of the batch service asked out of order
  SplitStartTimeoutError  a streaming_split consumer never began the epoch
  SpillError           the object store could not spill to disk; names the directory
  MemoryLimitError     the process tree went over DataContext.memory_limit; names the operator
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from runtime.errors import ResourceError as _RuntimeResourceError
from runtime.errors import SpillError as _RuntimeSpillError
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
    """An input path is missing, corrupt or unreadable; ``path`` names it.

    Credentials in the message or path (``scheme://user:password@host``,
    ``password=...``) are masked, so a URI or connection string can be named
    without leaking its secret."""

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(redact(message))
        self.path = redact(path)

    def __reduce__(self) -> tuple:
        # Keep ``path`` across processes (Exception pickles only ``args``).
        return (_source_error, (str(self), self.path))


class PlanError(DataflowError, ValueError):
    """The pipeline cannot be planned: bad arguments, expression or column."""


def unknown_columns(
    where: str, missing: Sequence[str], available: Sequence[str], detail: str = ""
) -> PlanError:
    """The error for columns a dataset lacks, worded the same wherever it is
    found (a method's arguments, an expression, a task at run time).

    >>> str(unknown_columns("sort", ["c"], ["a", "b"]))
    "sort: unknown column 'c'; available columns: a, b"
    """
    return PlanError(
        f"{where}: unknown column {', '.join(repr(m) for m in missing)}{detail}; "
        f"available columns: {', '.join(available) or '(none)'}"
    )


class WorkerCrashedError(DataflowError, _RuntimeWorkerCrashed):
    """A worker process died (signal, segfault, OOM kill) past ``max_task_retries``."""


class ResourceError(DataflowError, _RuntimeResourceError):
    """A stage needs resources that this backend can never provide."""


class ServiceClosedError(DataflowError):
    """The batch service (``streaming_split``, ``serve``) was stopped, or the
    consumer went away, while blocks were still wanted."""


class ServiceUsageError(DataflowError, ValueError):
    """A consumer of the batch service asked for something out of order (a
    split, an epoch or a state the service is not in)."""


class SplitStartTimeoutError(DataflowError, TimeoutError):
    """Some ``streaming_split`` consumer did not begin an epoch in time, so the
    epoch could not start for the others."""


# The names of the two service stacks that became one (user code may catch them).
SplitClosedError = FeedClosedError = ServiceClosedError
SplitUsageError = FeedUsageError = ServiceUsageError


class SpillError(DataflowError, _RuntimeSpillError):
    """Blocks that did not fit in ``object_store_memory`` could not be written to
    the spill directory (``directory``): the disk is full, over quota or failing.
    The failed write leaves no partial file; the pipeline's objects are freed."""

    @classmethod
    def from_runtime(cls, error: _RuntimeSpillError) -> SpillError:
        out = cls(str(error), error.directory)
        out.__cause__ = error.__cause__
        return out


class MemoryLimitError(DataflowError):
    """The resident memory of the process tree (driver and workers) stayed over
    ``DataContext.memory_limit``; ``operator`` names the operator whose task was
    stopped (its worker process was ended, or, on driver threads, the run)."""

    def __init__(self, message: str, *, operator: str = "", rss_bytes: int = 0) -> None:
        super().__init__(message)
        self.operator = operator
        self.rss_bytes = rss_bytes


# ``scheme://user:secret@``: the secret; ``password=secret`` (DSNs, ODBC, query strings).
_URL_SECRET = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^/@\s:]*:)([^/@\s]+)(@)")
_KEY_SECRET = re.compile(
    r"(\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|secret[_-]?access[_-]?key)"
    r"\s*[=:]\s*)('[^']*'|\"[^\"]*\"|[^\s;&,'\")]+)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """``text`` with the credentials of URIs and connection strings masked.

    >>> redact("postgresql://bob:hunter2@db:5432/x and host=db password=hunter2")
    'postgresql://bob:***@db:5432/x and host=db password=***'
    """
    if not text:
        return text
    return _KEY_SECRET.sub(r"\1***", _URL_SECRET.sub(r"\1***\3", text))


def _source_error(message: str, path: str) -> SourceError:
    return SourceError(message, path=path)


__all__ = [
    "DataflowError",
    "MemoryLimitError",
    "PlanError",
    "ResourceError",
    "ServiceClosedError",
    "ServiceUsageError",
    "SourceError",
    "SplitStartTimeoutError",
    "SpillError",
    "UserCodeError",
    "WorkerCrashedError",
    "redact",
]
