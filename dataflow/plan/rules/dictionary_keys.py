"""Dictionary keys.

* ``Aggregate[keys]`` right above a ``Read`` (no predicate) whose source can
  read dictionary-encoded columns becomes ``Aggregate`` over
  ``Read[dictionary_columns=keys]``: a Parquet string column is stored
  dictionary-encoded, so reading it as a dictionary skips building the strings
  (12 vs 32 ms per million rows of a 20-value column, measured), and the
  map-side partial aggregation groups the dictionary indices. The partial
  aggregates decode their keys, so the result's types are what they would
  have been; the dictionary never leaves the aggregation. A predicate in the
  read keeps plain strings (it may compare them).

>>> from dataflow.plan.logical import Aggregate, Read
>>> from dataflow.sources.parquet import ParquetDatasource
>>> read = Read(ParquetDatasource(["/data/x.parquet"]), columns=("cat", "a"))
>>> apply(Aggregate(keys=("cat",), aggs=(), inputs=(read,))).input.dictionary_columns
('cat',)
"""

from __future__ import annotations

import dataclasses

from dataflow.plan.logical import Aggregate, LogicalOperator, Read


def _rewrite(node: LogicalOperator) -> LogicalOperator:
    if not isinstance(node, Aggregate) or not node.keys or not isinstance(node.input, Read):
        return node
    read = node.input
    if (
        read.predicate is not None
        or not read.datasource.supports_dictionary_read
        or read.dictionary_columns == node.keys
    ):
        return node
    return node.with_inputs(dataclasses.replace(read, dictionary_columns=tuple(node.keys)))


def apply(plan: LogicalOperator) -> LogicalOperator:
    return plan.transform_up(_rewrite)
