"""Old home of ``Dataset.serve``'s errors (now ``dataflow.errors``), kept so that
code importing them from here keeps working."""

from dataflow.errors import FeedClosedError, FeedUsageError

__all__ = ["FeedClosedError", "FeedUsageError"]
