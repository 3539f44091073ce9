"""Aggregations for ``groupby(...).aggregate(...)`` and ``Dataset.aggregate``.

Built-ins (``Count``, ``Sum``, ``Min``, ``Max``, ``Mean``, ``Std``, ``Unique``)
are vectorized: each input block is reduced to one row per group of small
*state* columns with pyarrow's ``group_by`` (map side), so the exchange moves
only partial tables; the reduce side merges the states of each group and
finalizes them. ``AggregateFn(init, merge, name, accumulate_block=...)`` is the
user-defined form, as in Ray Data; its accumulators travel pickled.

Result columns are named as Ray Data names them: ``count()``, ``sum(a)``,
``mean(a)``, ``std(a)``, ... The engine that runs them over blocks is
``dataflow.exec.exchange.aggregation``.

>>> Mean("a").name
'mean(a)'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataflow.acero import group_by
from dataflow.block import array_from_numpy, column_to_numpy, fill_nulls


class AggregateFn:
    """A user-defined aggregation, computed per group (or over the whole dataset).

    ``init(key)`` makes an empty accumulator for a group (``key`` is the key
    value, a tuple for several keys, None for a global aggregation);
    ``accumulate_block(acc, block)`` folds a ``pa.Table`` of the group's rows
    into it (or ``accumulate_row(acc, row)`` one row dict at a time);
    ``merge(a, b)`` combines two accumulators built on different blocks;
    ``finalize(acc)`` gives the result (default: the accumulator itself).
    Accumulators must pickle.

    >>> product = AggregateFn(
    ...     init=lambda key: 1,
    ...     accumulate_block=lambda acc, block: acc * int(np.prod(block["a"].to_numpy())),
    ...     merge=lambda a, b: a * b,
    ...     name="prod(a)",
    ... )
    """

    def __init__(
        self,
        init: Callable[[Any], Any],
        merge: Callable[[Any, Any], Any],
        name: str,
        accumulate_row: Callable[[Any, dict[str, Any]], Any] | None = None,
        accumulate_block: Callable[[Any, pa.Table], Any] | None = None,
        finalize: Callable[[Any], Any] | None = None,
    ) -> None:
        if (accumulate_row is None) == (accumulate_block is None):
            raise ValueError(
                f"AggregateFn({name!r}): give exactly one of accumulate_row or accumulate_block"
            )
        if not isinstance(name, str) or not name:
            raise TypeError("AggregateFn: name must be a non-empty string (the result column)")
        self.name = name
        self.init = init
        self.merge = merge
        self.accumulate_row = accumulate_row
        self.accumulate_block = accumulate_block
        self.finalize = finalize if finalize is not None else _identity
        self.on: str | None = None

    runs_python = True
    """Its init/accumulate/merge/finalize are Python (they run in worker processes)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # Python path: used by the engine for aggregations that are not VectorizedAggregateFn.
    def _accumulate(self, acc: Any, block: pa.Table) -> Any:
        if self.accumulate_block is not None:
            return self.accumulate_block(acc, block)
        for row in block.to_pylist():
            acc = self.accumulate_row(acc, row)
        return acc


def _identity(acc: Any) -> Any:
    return acc


class VectorizedAggregateFn(AggregateFn):
    """A built-in aggregation computed with pyarrow kernels and numpy.

    Subclasses declare their map-side ``states`` (``(column, hash function,
    options)`` triples for ``Table.group_by().aggregate``), how each state
    merges (``merge_fns``) and ``_finalize``."""

    merge_fns: tuple[str, ...] = ()
    runs_python = False  # Arrow kernels and numpy: the GIL is released

    def __init__(self, on: str | None, name: str, ignore_nulls: bool = True) -> None:
        if on is not None and not isinstance(on, str):
            raise TypeError(f"{type(self).__name__}: on must be a column name, got {on!r}")
        self.on = on
        self.name = name
        self.ignore_nulls = ignore_nulls

    def states(self) -> list[tuple[Any, str, Any]]:
        raise NotImplementedError

    def merge_states(self, states: pa.Table, gid: np.ndarray, ngroups: int) -> list[pa.Array]:
        """Merge the state columns of rows with the same group id (``gid`` is
        sorted, so ``group_by`` keeps groups in id order)."""
        specs = [
            (name, fn, self._scalar_opts()) for name, fn in zip(states.column_names, self.merge_fns)
        ]
        merged = group_by(states.append_column("__gid", array_from_numpy(gid)), ["__gid"], specs)
        return [merged.column(i + 1).combine_chunks() for i in range(len(specs))]

    def finalize_states(self, states: list[pa.Array]) -> pa.Array:
        return states[0]

    def _scalar_opts(self) -> pc.ScalarAggregateOptions:
        return pc.ScalarAggregateOptions(skip_nulls=self.ignore_nulls, min_count=1)


class Count(VectorizedAggregateFn):
    """Rows per group (``on=None``), or values of ``on`` (nulls too unless
    ``ignore_nulls``). Result column ``count()`` / ``count(a)``."""

    merge_fns = ("sum",)

    def __init__(
        self, on: str | None = None, ignore_nulls: bool = False, alias_name: str | None = None
    ) -> None:
        super().__init__(on, alias_name or f"count({on or ''})", ignore_nulls)

    def states(self) -> list[tuple[Any, str, Any]]:
        if self.on is None:
            return [([], "count_all", None)]
        mode = "only_valid" if self.ignore_nulls else "all"
        return [(self.on, "count", pc.CountOptions(mode=mode))]

    def _scalar_opts(self) -> pc.ScalarAggregateOptions:
        return pc.ScalarAggregateOptions(skip_nulls=True, min_count=0)


class Sum(VectorizedAggregateFn):
    """Sum of ``on`` per group; null for a group with no values (or, with
    ``ignore_nulls=False``, any null)."""

    merge_fns = ("sum",)

    def __init__(self, on: str, ignore_nulls: bool = True, alias_name: str | None = None) -> None:
        super().__init__(on, alias_name or f"sum({on})", ignore_nulls)

    def states(self) -> list[tuple[Any, str, Any]]:
        return [(self.on, "sum", self._scalar_opts())]


class Min(VectorizedAggregateFn):
    """Smallest value of ``on`` per group (numbers, strings, dates)."""

    merge_fns = ("min",)

    def __init__(self, on: str, ignore_nulls: bool = True, alias_name: str | None = None) -> None:
        super().__init__(on, alias_name or f"min({on})", ignore_nulls)

    def states(self) -> list[tuple[Any, str, Any]]:
        return [(self.on, "min", self._scalar_opts())]


class Max(VectorizedAggregateFn):
    """Largest value of ``on`` per group (numbers, strings, dates)."""

    merge_fns = ("max",)

    def __init__(self, on: str, ignore_nulls: bool = True, alias_name: str | None = None) -> None:
        super().__init__(on, alias_name or f"max({on})", ignore_nulls)

    def states(self) -> list[tuple[Any, str, Any]]:
        return [(self.on, "max", self._scalar_opts())]


class Mean(VectorizedAggregateFn):
    """Mean of ``on`` per group (float64); null for a group with no values."""

    merge_fns = ("sum", "sum")

    def __init__(self, on: str, ignore_nulls: bool = True, alias_name: str | None = None) -> None:
        super().__init__(on, alias_name or f"mean({on})", ignore_nulls)

    def states(self) -> list[tuple[Any, str, Any]]:
        return [
            (self.on, "sum", self._scalar_opts()),
            (self.on, "count", pc.CountOptions(mode="only_valid")),
        ]

    def merge_states(self, states: pa.Table, gid: np.ndarray, ngroups: int) -> list[pa.Array]:
        total = states.column(0).cast(pa.float64())
        table = pa.Table.from_arrays(
            [total, states.column(1), array_from_numpy(gid)], ["s", "n", "__gid"]
        )
        merged = group_by(table, ["__gid"], [("s", "sum", self._scalar_opts()), ("n", "sum")])
        return [merged.column(1).combine_chunks(), merged.column(2).combine_chunks()]

    def finalize_states(self, states: list[pa.Array]) -> pa.Array:
        s, n = states
        quotient = pc.divide(s.cast(pa.float64()), n.cast(pa.float64()))
        empty = column_to_numpy(n) == 0  # no values: null (Python scalars would import pandas)
        if not empty.any():
            return quotient
        return pc.if_else(array_from_numpy(~empty), quotient, pa.nulls(len(n), pa.float64()))


class Std(VectorizedAggregateFn):
    """Standard deviation of ``on`` per group with divisor ``N - ddof`` (float64).

    Partial states are (count, mean, M2) per block, merged with Chan et al.'s
    parallel formula, so large means do not cancel. NaN when ``N <= ddof``,
    null for a group with no values."""

    merge_fns = ("sum", "sum", "sum", "sum")

    def __init__(
        self, on: str, ddof: int = 1, ignore_nulls: bool = True, alias_name: str | None = None
    ) -> None:
        super().__init__(on, alias_name or f"std({on})", ignore_nulls)
        self.ddof = ddof

    def states(self) -> list[tuple[Any, str, Any]]:
        return [
            (self.on, "count", pc.CountOptions(mode="only_valid")),
            (self.on, "mean", pc.ScalarAggregateOptions(skip_nulls=True, min_count=1)),
            (self.on, "variance", pc.VarianceOptions(ddof=0, min_count=1)),
            (self.on, "count", pc.CountOptions(mode="only_null")),
        ]

    def merge_states(self, states: pa.Table, gid: np.ndarray, ngroups: int) -> list[pa.Array]:
        n = column_to_numpy(states.column(0)).astype(np.float64)
        mean = column_to_numpy(fill_nulls(states.column(1), 0.0))
        m2 = column_to_numpy(fill_nulls(states.column(2), 0.0)) * n
        nulls = np.bincount(gid, weights=column_to_numpy(states.column(3)), minlength=ngroups)
        total = np.bincount(gid, weights=n, minlength=ngroups)
        with np.errstate(invalid="ignore", divide="ignore"):
            group_mean = np.bincount(gid, weights=n * mean, minlength=ngroups) / total
        m2_total = np.bincount(
            gid, weights=m2 + n * (mean - np.nan_to_num(group_mean[gid])) ** 2, minlength=ngroups
        )
        return [array_from_numpy(total), array_from_numpy(m2_total), array_from_numpy(nulls)]

    def finalize_states(self, states: list[pa.Array]) -> pa.Array:
        total, m2, nulls = (column_to_numpy(s) for s in states)
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.where(total - self.ddof > 0, np.sqrt(m2 / (total - self.ddof)), np.nan)
        missing = (total == 0) | ((nulls > 0) & (not self.ignore_nulls))
        return array_from_numpy(std, mask=missing)


class Unique(VectorizedAggregateFn):
    """The distinct values of ``on`` per group, as a list (nulls included unless
    ``ignore_nulls``), sorted."""

    def __init__(self, on: str, ignore_nulls: bool = False, alias_name: str | None = None) -> None:
        super().__init__(on, alias_name or f"unique({on})", ignore_nulls)

    def states(self) -> list[tuple[Any, str, Any]]:
        mode = "only_valid" if self.ignore_nulls else "all"
        return [(self.on, "distinct", pc.CountOptions(mode=mode))]

    def merge_states(self, states: pa.Table, gid: np.ndarray, ngroups: int) -> list[pa.Array]:
        lists = states.column(0).combine_chunks()
        parents = column_to_numpy(pc.list_parent_indices(lists))
        pairs = pa.table({"g": gid[parents], "v": pc.list_flatten(lists)})
        pairs = group_by(pairs, ["g", "v"], [])
        pairs = pairs.sort_by([("g", "ascending", "at_end"), ("v", "ascending", "at_end")])
        offsets = np.searchsorted(column_to_numpy(pairs.column("g")), np.arange(ngroups + 1))
        values = pairs.column("v").combine_chunks()
        return [pa.ListArray.from_arrays(array_from_numpy(offsets.astype(np.int32)), values)]


__all__ = ["AggregateFn", "Count", "Max", "Mean", "Min", "Std", "Sum", "Unique"]
