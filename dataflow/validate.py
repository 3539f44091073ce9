"""Checks of the arguments of ``Dataset`` (and ``GroupedData``) methods.

One function per kind of mistake, so that the same mistake reads the same and
raises the same type in every method: ``PlanError`` (a ``ValueError``, as Ray
Data raises for these), naming the method, the argument and what would do.
Each method calls these before it appends its node; nothing here runs a plan.

>>> column_names("select_columns", ["a", "b"])
('a', 'b')
>>> check_known_columns("sort", ["c"], pa.schema([("a", pa.int64())]))
Traceback (most recent call last):
...
dataflow.errors.PlanError: sort: unknown column 'c'; available columns: a
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dataflow.aggregate import AggregateFn
from dataflow.errors import PlanError, unknown_columns
from dataflow.expressions import Expr, parse

if TYPE_CHECKING:
    from dataflow.plan.logical import LogicalOperator


def check_name(where: str, name: Any) -> None:
    """A new column's name: a non-empty string."""
    if not isinstance(name, str) or not name:
        raise PlanError(f"{where}: column name must be a non-empty string, got {name!r}")


def column_names(where: str, cols: Any, *, allow_none: bool = False) -> tuple[str, ...]:
    """A column name or a non-empty list of distinct ones (``allow_none``:
    None or an empty list is no column, as ``groupby(None)``)."""
    if allow_none and (cols is None or (isinstance(cols, (list, tuple)) and not cols)):
        return ()
    names = (cols,) if isinstance(cols, str) else cols
    if not isinstance(names, Sequence) or not names or not all(isinstance(c, str) for c in names):
        raise PlanError(f"{where}: expected a column name or a list of them, got {cols!r}")
    if len(set(names)) != len(names):
        raise PlanError(f"{where}: duplicate column names in {list(names)}")
    return tuple(names)


def check_known_columns(where: str, names: Sequence[str], schema: pa.Schema | None) -> None:
    """Every one of ``names`` is a column of ``schema`` (a plan's
    ``output_schema()``; None, not known before running: checked when it runs)."""
    if schema is None:
        return
    missing = [n for n in names if n not in schema.names]
    if missing:
        raise unknown_columns(where, missing, schema.names)


def positive_int(where: str, name: str, value: Any) -> int:
    """An int >= 1 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(f"{where}: {name} must be an int >= 1, got {value!r}")
    return value


def non_negative_int(where: str, name: str, value: Any) -> int:
    """An int >= 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlanError(f"{where}: {name} must be a non-negative int, got {value!r}")
    return value


def check_seed(where: str, seed: Any) -> None:
    """A random seed: None or an int >= 0."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise PlanError(f"{where}: seed must be None or an int >= 0, got {seed!r}")


def check_callable(where: str, fn: Any) -> None:
    """A user function, or a class whose instances are callable."""
    if isinstance(fn, type) and not is_callable_class(fn):
        raise PlanError(f"{where}: class {fn.__name__} has no __call__ method")
    if not callable(fn):
        raise PlanError(f"{where}: fn must be a function or a callable class, got {fn!r}")


def is_callable_class(fn: Any) -> bool:
    """A class whose instances are callable (a class UDF)."""
    return isinstance(fn, type) and any("__call__" in vars(k) for k in fn.__mro__[:-1])


def as_expr(where: str, expr: Any) -> Expr:
    """A ``col(...)`` expression, or a string parsed into one."""
    if isinstance(expr, str):
        return parse(expr)
    if not isinstance(expr, Expr):
        raise PlanError(
            f"{where}: expr must be a dataflow expression (col(...)) or a string, "
            f"got {type(expr).__name__}"
        )
    return expr


def dataset_plans(where: str, others: Sequence[Any]) -> tuple[LogicalOperator, ...]:
    """The plans of one or more other ``Dataset`` arguments (union, zip, join)."""
    from dataflow.dataset_base import DatasetBase

    if not others:
        raise PlanError(f"{where}: pass at least one other Dataset")
    bad = [type(o).__name__ for o in others if not isinstance(o, DatasetBase)]
    if bad:
        raise PlanError(f"{where}: expected Dataset arguments, got {bad[0]}")
    return tuple(o._plan for o in others)


def check_aggs(aggs: Sequence[Any], where: str) -> list[AggregateFn]:
    """What the user passed to ``aggregate``: AggregateFn instances with
    distinct result names."""
    if not aggs:
        raise PlanError(f"{where}: give at least one aggregation, e.g. Count() or Sum('a')")
    for a in aggs:
        if not isinstance(a, AggregateFn):
            raise PlanError(
                f"{where}: expected AggregateFn instances (Count(), Sum('a'), ...), "
                f"got {type(a).__name__}"
            )
    names = [a.name for a in aggs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise PlanError(f"{where}: two aggregations produce column {dupes[0]!r}; pass alias_name=")
    return list(aggs)


__all__ = [
    "as_expr",
    "check_aggs",
    "check_callable",
    "check_known_columns",
    "check_name",
    "check_seed",
    "column_names",
    "dataset_plans",
    "is_callable_class",
    "non_negative_int",
    "positive_int",
]
