"""``GroupedData``: what ``Dataset.groupby(key)`` returns.

Each method appends one ``Aggregate`` or ``MapGroups`` node and returns a new
``Dataset``; result columns are the keys then one column per aggregation,
named as Ray Data names them (``count()``, ``sum(a)``, ``mean(a)``...).

>>> import dataflow as df
>>> ds = df.from_items([{"k": "a", "v": 1}, {"k": "b", "v": 2}, {"k": "a", "v": 3}])
>>> ds.groupby("k").sum("v").take_all()  # doctest: +SKIP
[{'k': 'a', 'sum(v)': 4}, {'k': 'b', 'sum(v)': 2}]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dataflow.aggregate import AggregateFn, Count, Max, Mean, Min, Std, Sum
from dataflow.block import check_batch_format
from dataflow.compat import check_ray_only, merge_remote_args
from dataflow.errors import PlanError
from dataflow.expressions import Expr, check_columns
from dataflow.plan.logical import Aggregate, MapGroups
from dataflow.udf import fn_name, resources_of
from dataflow.validate import (
    as_expr,
    check_aggs,
    check_callable,
    check_known_columns,
    check_name,
    column_names,
    positive_int,
)

if TYPE_CHECKING:
    from dataflow.dataset import Dataset
    from dataflow.dataset_base import DatasetBase


class GroupedData:
    """Rows of a dataset grouped by ``key`` columns (None: one global group)."""

    def __init__(
        self,
        dataset: DatasetBase,
        key: str | Sequence[str] | None,
        num_partitions: int | None = None,
    ) -> None:
        self._dataset = dataset
        self._keys = column_names("groupby", key, allow_none=True)
        check_known_columns("groupby", self._keys, dataset._plan.output_schema())
        if num_partitions is not None:
            positive_int("groupby", "num_partitions", num_partitions)
        self._num_partitions = num_partitions

    def __repr__(self) -> str:
        return f"GroupedData({self._dataset!r}, key={list(self._keys)})"

    def aggregate(self, *aggs: AggregateFn) -> Dataset:
        """One row per group with one column per aggregation.

        >>> ds.groupby("k").aggregate(Count(), Mean("v"))  # doctest: +SKIP
        """
        where = f"groupby({', '.join(self._keys)}).aggregate"
        aggs_ = check_aggs(aggs, where)
        check_known_columns(
            where, [a.on for a in aggs_ if a.on is not None], self._dataset._plan.output_schema()
        )
        clash = [a.name for a in aggs_ if a.name in self._keys]
        if clash:
            raise PlanError(f"{where}: aggregation {clash[0]!r} has the name of a key column")
        return self._dataset._then(
            Aggregate(keys=self._keys, aggs=tuple(aggs_), num_partitions=self._num_partitions)
        )

    def count(self) -> Dataset:
        """Rows per group, in column ``count()``."""
        return self.aggregate(Count())

    def sum(self, on: str | Sequence[str] | None = None, ignore_nulls: bool = True) -> Dataset:
        """Sum of ``on`` (a column, a list, or None for every non-key column)."""
        return self.aggregate(*(Sum(c, ignore_nulls) for c in self._targets(on)))

    def min(self, on: str | Sequence[str] | None = None, ignore_nulls: bool = True) -> Dataset:
        """Minimum of ``on`` per group."""
        return self.aggregate(*(Min(c, ignore_nulls) for c in self._targets(on)))

    def max(self, on: str | Sequence[str] | None = None, ignore_nulls: bool = True) -> Dataset:
        """Maximum of ``on`` per group."""
        return self.aggregate(*(Max(c, ignore_nulls) for c in self._targets(on)))

    def mean(self, on: str | Sequence[str] | None = None, ignore_nulls: bool = True) -> Dataset:
        """Mean of ``on`` per group (float64)."""
        return self.aggregate(*(Mean(c, ignore_nulls) for c in self._targets(on)))

    def std(
        self, on: str | Sequence[str] | None = None, ddof: int = 1, ignore_nulls: bool = True
    ) -> Dataset:
        """Standard deviation of ``on`` per group, divisor ``N - ddof`` (NaN when N <= ddof)."""
        return self.aggregate(*(Std(c, ddof, ignore_nulls) for c in self._targets(on)))

    def map_groups(
        self,
        fn: Callable[..., Any],
        *,
        zero_copy_batch: bool = True,
        compute: Any = None,
        batch_format: str | None = "default",
        fn_args: Sequence[Any] | None = None,
        fn_kwargs: dict[str, Any] | None = None,
        fn_constructor_args: Sequence[Any] | None = None,
        fn_constructor_kwargs: dict[str, Any] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: float | None = None,
        concurrency: int | tuple[int, ...] | None = None,
        ray_remote_args_fn: Callable[[], dict[str, Any]] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Call ``fn(batch)`` once per group (all its rows in one batch of
        ``batch_format``); its returned batch (or iterator of batches) forms the
        output. Groups run in the reduce tasks of a hash exchange (``groupby``'s
        ``num_partitions`` of them), each reserving ``num_cpus`` (default 1),
        ``num_gpus``, ``memory`` or ``ray_remote_args``' resources. A callable
        class is built once per reduce task with ``fn_constructor_args`` /
        ``fn_constructor_kwargs``. ``zero_copy_batch=False`` hands writable
        numpy arrays. ``compute`` and ``concurrency`` (actor pools) are refused:
        there is no pool on the reduce side.

        >>> ds.groupby("k").map_groups(lambda df: df.head(1), batch_format="pandas")  # doctest: +SKIP
        """
        where = f"map_groups({fn_name(fn)})"
        check_callable(where if isinstance(fn, type) else "map_groups", fn)
        if (fn_constructor_args or fn_constructor_kwargs) and not isinstance(fn, type):
            raise PlanError(f"{where}: fn_constructor_args/kwargs need fn to be a callable class")
        check_ray_only(where, ray_remote_args_fn=ray_remote_args_fn)
        for name, value in (("compute", compute), ("concurrency", concurrency)):
            if value is not None:
                raise PlanError(
                    f"{where}: {name}={value!r} sizes an actor pool; map_groups runs in the "
                    "exchange's reduce tasks (groupby(..., num_partitions=n) sets how many), "
                    "where a callable class is built once per task: drop it"
                )
        amounts = merge_remote_args(
            where, ray_remote_args or None, num_cpus=num_cpus, num_gpus=num_gpus, memory=memory
        )
        fmt = check_batch_format(batch_format, "map_groups")
        if not self._keys:
            raise PlanError("map_groups: give groupby a key column; groupby(None) has no groups")
        node = MapGroups(
            keys=self._keys,
            fn=fn,
            batch_format=fmt,
            fn_args=tuple(fn_args or ()),
            fn_kwargs=tuple(sorted((fn_kwargs or {}).items())),
            resources=resources_of(where, **amounts),
            num_partitions=self._num_partitions,
            fn_constructor_args=tuple(fn_constructor_args or ()),
            fn_constructor_kwargs=tuple(sorted((fn_constructor_kwargs or {}).items())),
            zero_copy_batch=bool(zero_copy_batch),
        )
        return self._dataset._then(node)

    def with_column(self, column_name: str, expr: Expr | str, **ray_remote_args: Any) -> Dataset:
        """Every row, grouped by key (the groups come out as ``map_groups``'
        do), with column ``column_name`` computed from ``expr`` (``col(...)`` or
        a string such as ``"a * 2"``) over each group; ``ray_remote_args`` as in
        ``map_groups`` (``num_cpus``, ``num_gpus``, ``memory``...).

        >>> ds.groupby("g").with_column("twice", df.col("v") * 2).sort(["g", "v"])  # doctest: +SKIP
        """
        where = f"groupby().with_column({column_name})"
        check_name("with_column", column_name)
        e = as_expr(where, expr)
        check_columns(e, self._dataset._plan.output_schema(), where)
        return self.map_groups(
            GroupProjector(column_name, e), batch_format="pyarrow", **ray_remote_args
        )

    def _targets(self, on: str | Sequence[str] | None) -> list[str]:
        if on is None:
            return [c for c in self._dataset.columns() if c not in self._keys]
        return list(column_names("groupby aggregation", on))


class GroupProjector:
    """``GroupedData.with_column``'s group function: appends (or replaces)
    ``name`` computed from ``expr`` over a group's Arrow table."""

    def __init__(self, name: str, expr: Expr) -> None:
        self.name = name
        self.expr = expr

    def __call__(self, table: pa.Table) -> pa.Table:
        column = self.expr.eval(table)
        if self.name in table.column_names:
            return table.set_column(table.column_names.index(self.name), self.name, column)
        return table.append_column(self.name, column)

    def __repr__(self) -> str:  # the function's name in plans and errors
        return f"with_column({self.name})"


__all__ = ["GroupedData"]
