"""dataflow: a streaming dataset engine for Python (Ray Data's API, Daft's speed bar)."""

from __future__ import annotations

from dataflow.context import DataContext
from dataflow.errors import (
    DataflowError,
    PlanError,
    ResourceError,
    SourceError,
    UserCodeError,
    WorkerCrashedError,
)
from dataflow.session import init, shutdown

__version__ = "0.1.0"

__all__ = [
    "DataContext",
    "DataflowError",
    "PlanError",
    "ResourceError",
    "SourceError",
    "UserCodeError",
    "WorkerCrashedError",
    "__version__",
    "init",
    "shutdown",
]
