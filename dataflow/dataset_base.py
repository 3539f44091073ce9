"""What every part of ``Dataset`` builds on: the plan, the plumbing that runs
it, and the declaration of the methods the parts call on each other.

``Dataset`` is assembled from method mixins (``dataset_columns``,
``dataset_all_to_all``, ``dataset_write``...), each in its own module so that
no file grows into a god file. They all derive from ``DatasetBase``, which
holds the state and the execution plumbing and declares (for type checkers:
no runtime stubs) the public ``Dataset`` methods one part calls on another.

>>> import dataflow as df
>>> isinstance(df.range(3), DatasetBase)
True
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dataflow.context import DataContext
from dataflow.iterators import DataIterator
from dataflow.plan.logical import LogicalOperator
from dataflow.plan.optimizer import optimize

if TYPE_CHECKING:
    import pyarrow as pa

    from dataflow.dataset import Dataset
    from dataflow.plan.planner import OutputStream
    from dataflow.sources.datasource import Datasink
    from runtime.backends.base import Backend
    from runtime.refs import ObjectRef


class DatasetBase:
    """A lazy, immutable plan and the means to run it (see ``Dataset``)."""

    def __init__(self, plan: LogicalOperator) -> None:
        self._plan = plan
        self._last_stream: OutputStream | None = None
        self._name: str | None = None

    def _then(self, node: LogicalOperator) -> Dataset:
        """A dataset with ``node`` appended to this one's plan."""
        return self._named(type(self)(node.with_inputs(self._plan)))  # type: ignore[return-value]

    def _named(self, ds: Dataset) -> Dataset:
        """``ds`` (derived from this dataset) with this dataset's name."""
        ds._name = self._name
        return ds

    def _optimized(self) -> LogicalOperator:
        return optimize(self._plan, DataContext.get_current().optimizer_flags)

    def _open_stream(
        self, plan: LogicalOperator | None = None, *, ordered: bool = False
    ) -> OutputStream:
        """Start executing ``plan`` (default: this dataset's), recorded as this
        dataset's last run for ``stats()``; ``ordered`` forces dataset order."""
        from dataflow.plan.planner import execute

        ctx = DataContext.get_current().copy()
        if ordered:
            ctx.preserve_order = True
        stream = execute(optimize(plan or self._plan, ctx.optimizer_flags), ctx)
        self._last_stream = stream
        return stream

    def _iterator(self, plan: LogicalOperator) -> DataIterator:
        """An iterator running ``plan`` (derived from this dataset) as this dataset."""
        return DataIterator(
            lambda: self._open_stream(plan),
            name=self._name or summary(plan),
            dataset=self if plan is self._plan else None,
        )

    if TYPE_CHECKING:
        # Public Dataset methods that one part calls on another (each is
        # defined once, in the module named beside it).

        # dataset.py
        def iterator(self) -> DataIterator: ...
        def count(self) -> int: ...
        def schema(self, fetch_if_missing: bool = True) -> pa.Schema | None: ...
        def columns(self, fetch_if_missing: bool = True) -> list[str] | None: ...
        def take_all(self, limit: int | None = None) -> list[dict[str, Any]]: ...
        def to_arrow(self) -> pa.Table: ...
        def materialize(self) -> Dataset: ...
        def _materialize(self, *, ordered: bool = False) -> Dataset: ...
        def map_batches(self, fn: Any, **kwargs: Any) -> Dataset: ...
        def limit(self, limit: int) -> Dataset: ...

        # dataset_columns.py
        def select_columns(self, cols: str | Sequence[str], **kwargs: Any) -> Dataset: ...
        def rename_columns(
            self, names: Mapping[str, str] | Sequence[str], **kwargs: Any
        ) -> Dataset: ...

        # dataset_all_to_all.py
        def sort(self, key: str | Sequence[str], descending: Any = False) -> Dataset: ...

        # dataset_write.py
        def _write(self, datasink: Datasink, **settings: Any) -> None: ...


def summary(node: LogicalOperator) -> str:
    """``a -> b -> c`` for a chain, ``union(x, y)`` where inputs branch."""
    if not node.inputs:
        return node.name
    if len(node.inputs) == 1:
        return f"{summary(node.input)} -> {node.name}"
    return f"{node.name}({', '.join(summary(i) for i in node.inputs)})"


class BlockOwner:
    """Owns the store objects of a materialized dataset (or of a split or
    re-cut of one): frees ``refs`` when it is garbage-collected, and keeps the
    ``parents`` (owners of blocks it borrows) alive as long as it lives.

    >>> owner = BlockOwner(backend, new_refs, parents=[node.owner])  # doctest: +SKIP
    """

    def __init__(
        self, backend: Backend, refs: Sequence[ObjectRef], parents: Sequence[Any] = ()
    ) -> None:
        self.parents = tuple(p for p in parents if p is not None)
        self._finalizer = weakref.finalize(self, _free, backend, tuple(refs))


def _free(backend: Backend, refs: tuple[ObjectRef, ...]) -> None:
    if refs:
        try:
            backend.free(refs)
        except Exception:  # the session already shut down, which freed everything
            pass


__all__ = ["BlockOwner", "DatasetBase", "summary"]
