"""Old home of ``streaming_split``'s errors (now ``dataflow.errors``), kept so that
code importing them from here keeps working."""

from dataflow.errors import SplitClosedError, SplitStartTimeoutError, SplitUsageError

__all__ = ["SplitClosedError", "SplitStartTimeoutError", "SplitUsageError"]
