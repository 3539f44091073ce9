"""The ``Dataset`` facade: lazy, immutable, one logical node per transform.

A transform validates its arguments, appends ONE node from ``plan/logical.py``
and returns a new ``Dataset``; nothing runs until a consumption method
(``iter_batches``, ``take``, ``count``, ``write_*``...) optimizes the plan and
hands it to the planner.

>>> import dataflow as df
>>> ds = df.range(100).map_batches(lambda b: {"id": b["id"] * 2}).filter(expr="id > 10")
>>> ds
Dataset(read_range -> map_batches(<lambda>) -> filter(id > 10))
>>> ds.take(2)  # doctest: +SKIP
[{'id': 12}, {'id': 14}]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dataflow.aggregate import AggregateFn, Max, Mean, Min, Std, Sum
from dataflow.block import check_batch_format, concat, table_to_pandas
from dataflow.compat import check_ray_only, renamed_keywords
from dataflow.context import DataContext
from dataflow.dataset_all_to_all import AllToAllMethods
from dataflow.dataset_base import BlockOwner, summary
from dataflow.dataset_columns import ColumnMethods
from dataflow.dataset_feed import FeedMethods
from dataflow.dataset_frameworks import FrameworkMethods
from dataflow.dataset_info import InfoMethods
from dataflow.dataset_write import WriteMethods
from dataflow.dataset_write_files import FileWriteMethods
from dataflow.errors import PlanError
from dataflow.expressions import Expr, check_columns
from dataflow.iterators import DataIterator
from dataflow.plan.logical import (
    Filter,
    FlatMap,
    InputData,
    Limit,
    MapBatches,
    MapRows,
    MaterializedData,
    Union,
    Zip,
)
from dataflow.udf import UDF_ARGS, AddColumn, fn_name, udf_fields
from dataflow.validate import (
    as_expr,
    check_callable,
    check_known_columns,
    check_name,
    column_names,
    dataset_plans,
    non_negative_int,
    positive_int,
)

if TYPE_CHECKING:
    import pandas as pd

    from dataflow.service.server import BlockServer


class Dataset(
    ColumnMethods,
    AllToAllMethods,
    FeedMethods,
    WriteMethods,
    FileWriteMethods,
    FrameworkMethods,
    InfoMethods,
):
    """A lazy, immutable pipeline over blocks of rows (Arrow tables).

    Build one with ``dataflow.range``, ``from_*`` or ``read_*``; transforms return
    new Datasets; consumption methods execute the plan.
    """

    def __repr__(self) -> str:
        return f"Dataset({summary(self._plan)})"

    # -- row and batch transforms ----------------------------------------------

    def map(
        self,
        fn: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        compute: Any = None,
        fn_args: Iterable[Any] | None = None,
        fn_kwargs: Mapping[str, Any] | None = None,
        fn_constructor_args: Iterable[Any] | None = None,
        fn_constructor_kwargs: Mapping[str, Any] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: float | None = None,
        concurrency: int | tuple[int, ...] | None = None,
        label_selector: dict[str, str] | None = None,
        fallback_strategy: list[dict[str, Any]] | None = None,
        max_calls: int | None = None,
        resources: Mapping[str, float] | None = None,
        accelerator_type: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        ray_remote_args_fn: Callable[[], dict[str, Any]] | None = None,
        on_error: str = "raise",
        **ray_remote_args: Any,
    ) -> Dataset:
        """Apply ``fn`` (row dict -> row dict, or a callable class) to each row.

        >>> df.range(3).map(lambda r: {"sq": r["id"] ** 2})  # doctest: +SKIP
        """
        fields = udf_fields("map", **_udf_args(locals()))
        return self._then(MapRows(**fields))

    def flat_map(
        self,
        fn: Callable[[dict[str, Any]], list[dict[str, Any]]],
        *,
        compute: Any = None,
        fn_args: Iterable[Any] | None = None,
        fn_kwargs: Mapping[str, Any] | None = None,
        fn_constructor_args: Iterable[Any] | None = None,
        fn_constructor_kwargs: Mapping[str, Any] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: float | None = None,
        concurrency: int | tuple[int, ...] | None = None,
        label_selector: dict[str, str] | None = None,
        fallback_strategy: list[dict[str, Any]] | None = None,
        max_calls: int | None = None,
        resources: Mapping[str, float] | None = None,
        accelerator_type: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        ray_remote_args_fn: Callable[[], dict[str, Any]] | None = None,
        on_error: str = "raise",
        **ray_remote_args: Any,
    ) -> Dataset:
        """Apply ``fn`` (row dict -> list of row dicts) to each row; outputs are flattened.

        >>> df.range(2).flat_map(lambda r: [r, r])  # doctest: +SKIP
        """
        fields = udf_fields("flat_map", **_udf_args(locals()))
        return self._then(FlatMap(**fields))

    def map_batches(
        self,
        fn: Callable[[Any], Any],
        *,
        batch_size: int | None = None,
        compute: Any = None,
        batch_format: str | None = "default",
        zero_copy_batch: bool = False,
        fn_args: Iterable[Any] | None = None,
        fn_kwargs: Mapping[str, Any] | None = None,
        fn_constructor_args: Iterable[Any] | None = None,
        fn_constructor_kwargs: Mapping[str, Any] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: float | None = None,
        concurrency: int | tuple[int, ...] | None = None,
        udf_modifying_row_count: bool = True,
        label_selector: dict[str, str] | None = None,
        fallback_strategy: list[dict[str, Any]] | None = None,
        max_calls: int | None = None,
        resources: Mapping[str, float] | None = None,
        accelerator_type: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        ray_remote_args_fn: Callable[[], dict[str, Any]] | None = None,
        on_error: str = "raise",
        **ray_remote_args: Any,
    ) -> Dataset:
        """Apply ``fn`` to batches of ``batch_size`` rows (None, the default as in
        Ray Data: whole blocks). ``udf_modifying_row_count=False`` promises
        that ``fn`` returns as many rows as it gets, in order, so a later
        ``limit(n)`` runs before it and ``fn`` sees only ``n`` rows.

        ``fn`` is a function or a callable class (run in an actor pool of
        ``concurrency=n`` or ``(min, max)`` workers that build it once). It gets
        a batch in ``batch_format`` ("default"/"numpy", "pandas", "pyarrow",
        "cupy") and returns a dict of arrays, a DataFrame or an Arrow table.

        >>> df.range(8).map_batches(lambda b: {"x": b["id"] + 1}, batch_size=4)
        Dataset(read_range -> map_batches(<lambda>))
        """
        where = f"map_batches({fn_name(fn)})"
        if batch_size is not None:
            positive_int(where, "batch_size", batch_size)
        try:
            fmt = check_batch_format(batch_format, where)
        except ValueError as e:
            raise PlanError(str(e)) from None
        if not isinstance(zero_copy_batch, bool):
            raise PlanError(f"{where}: zero_copy_batch must be True or False")
        if not isinstance(udf_modifying_row_count, bool):
            raise PlanError(f"{where}: udf_modifying_row_count must be True or False")
        fields = udf_fields("map_batches", **_udf_args(locals()))
        fmt = "default" if batch_format in (None, "default") else fmt
        return self._then(
            MapBatches(
                batch_size=batch_size,
                batch_format=fmt,
                zero_copy_batch=zero_copy_batch,
                modifies_row_count=udf_modifying_row_count,
                **fields,
            )
        )

    def filter(
        self,
        fn: Callable[[dict[str, Any]], bool] | None = None,
        expr: Expr | str | None = None,
        *,
        compute: Any = None,
        fn_args: Iterable[Any] | None = None,
        fn_kwargs: Mapping[str, Any] | None = None,
        fn_constructor_args: Iterable[Any] | None = None,
        fn_constructor_kwargs: Mapping[str, Any] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: float | None = None,
        concurrency: int | tuple[int, ...] | None = None,
        label_selector: dict[str, str] | None = None,
        fallback_strategy: list[dict[str, Any]] | None = None,
        max_calls: int | None = None,
        resources: Mapping[str, float] | None = None,
        accelerator_type: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        ray_remote_args_fn: Callable[[], dict[str, Any]] | None = None,
        on_error: str = "raise",
        **ray_remote_args: Any,
    ) -> Dataset:
        """Keep the rows where ``fn(row)`` is true, or where ``expr`` holds.

        ``expr`` is a ``col(...)`` expression or a string such as
        ``"a > 0 and cat in ('x', 'y')"``; it runs in Arrow (no Python per row)
        and is pushed into sources that support it.

        >>> df.range(10).filter(expr="id % 2 == 0")
        Dataset(read_range -> filter(id % 2 == 0))
        """
        if (fn is None) == (expr is None):
            raise PlanError("filter: pass exactly one of fn (a row predicate) or expr=")
        if fn is None:
            e = as_expr("filter", expr)
            check_columns(e, self._plan.output_schema(), "filter")
            return self._then(Filter(expr=e))
        fields = udf_fields("filter", **_udf_args(locals()))
        return self._then(Filter(**fields))

    def add_column(
        self,
        col: str,
        fn: Callable[[Any], Any],
        *,
        batch_format: str | None = "pandas",
        compute: Any = None,
        concurrency: int | tuple[int, ...] | None = None,
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: float | None = None,
        label_selector: dict[str, str] | None = None,
        fallback_strategy: list[dict[str, Any]] | None = None,
        max_calls: int | None = None,
        resources: Mapping[str, float] | None = None,
        accelerator_type: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        **ray_remote_args: Any,
    ) -> Dataset:
        """Add (or replace) column ``col`` with ``fn(batch)``, the batch in
        ``batch_format`` (pandas by default, as in Ray Data); the other
        arguments are ``map_batches``'s.

        >>> df.range(3).add_column("twice", lambda b: b["id"] * 2)
        Dataset(read_range -> map_batches(add_column(twice)))
        """
        check_name("add_column", col)
        check_callable(f"add_column({col})", fn)
        fmt = "default" if batch_format in (None, "default") else batch_format
        if fmt not in ("default", "numpy", "pandas", "pyarrow"):
            raise PlanError(
                f"add_column({col}): batch_format must be 'pandas', 'numpy' or 'pyarrow', "
                f"got {batch_format!r}"
            )
        return self.map_batches(
            AddColumn(col, fn),
            batch_format=fmt,
            batch_size=None,
            **_udf_args({k: v for k, v in locals().items() if k != "fn"}),
            **ray_remote_args,
        )

    # -- row-count and multi-input transforms ----------------------------------

    @renamed_keywords(n="limit")
    def limit(self, limit: int) -> Dataset:
        """The first ``limit`` rows (``n=`` is the deprecated old keyword).

        >>> df.range(100).limit(5)
        Dataset(read_range -> limit(5))
        """
        return self._then(Limit(n=non_negative_int("limit", "limit", limit)))

    def union(self, *other: Dataset) -> Dataset:
        """The rows of this dataset followed by those of ``other`` (order across
        inputs is not guaranteed unless ``DataContext.preserve_order``).

        >>> df.range(2).union(df.range(3))
        Dataset(union(read_range, read_range))
        """
        plans = dataset_plans("union", other)
        return Dataset(Union(inputs=(self._plan, *plans)))

    def zip(self, *other: Dataset) -> Dataset:
        """Columns of this dataset and each of ``other`` side by side, row by row
        (all must have the same number of rows); zipping several is zipping
        them one after another.

        >>> df.range(2).zip(df.range(2))
        Dataset(zip(read_range, read_range))
        """
        plan = self._plan
        for other_plan in dataset_plans("zip", other):
            plan = Zip(inputs=(plan, other_plan))
        return Dataset(plan)

    # -- consumption ------------------------------------------------------------

    def iterator(self) -> DataIterator:
        """A ``DataIterator`` over this dataset (each iteration runs the plan).

        >>> [b["id"].tolist() for b in df.range(4).iterator().iter_batches(batch_size=2)]
        [[0, 1], [2, 3]]
        """
        return self._iterator(self._plan)

    def iter_batches(
        self,
        *,
        batch_size: int | None = 256,
        batch_format: str | None = "default",
        prefetch_batches: int = 1,
        drop_last: bool = False,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
    ) -> Iterator[Any]:
        """Batches of ``batch_size`` rows (see ``DataIterator.iter_batches``).

        >>> for batch in df.range(10).iter_batches(batch_size=4):  # doctest: +SKIP
        ...     print(batch["id"])
        """
        return self.iterator().iter_batches(
            batch_size=batch_size,
            batch_format=batch_format,
            prefetch_batches=prefetch_batches,
            drop_last=drop_last,
            local_shuffle_buffer_size=local_shuffle_buffer_size,
            local_shuffle_seed=local_shuffle_seed,
        )

    def streaming_split(
        self,
        n: int,
        *,
        equal: bool = False,
        locality_hints: list[Any] | None = None,
        host: str = "127.0.0.1",
        certfile: str | None = None,
        keyfile: str | None = None,
        ca: str | None = None,
        insecure: bool = False,
    ) -> list[DataIterator]:
        """``n`` picklable iterators over one shared execution, served to other
        processes by a gRPC coordinator in this one; ``equal=True`` gives each the
        same number of rows. An epoch begins when all ``n`` have asked for data, as
        in Ray Data. Off loopback ``host`` needs a token (made here, carried by the
        iterators) and TLS: ``certfile``/``keyfile`` (or ``$DATAFLOW_SERVICE_CERT``/
        ``_KEY``) and the consumers' ``ca`` (or ``$DATAFLOW_SERVICE_CA``), unless
        ``insecure=True``.

        >>> a, b = df.range(10).streaming_split(2, equal=True)  # doctest: +SKIP
        """
        from dataflow.service.split import streaming_split

        check_ray_only("streaming_split", locality_hints=locality_hints)
        return streaming_split(
            self._open_stream,
            n,
            equal=equal,
            host=host,
            name=repr(self),
            certfile=certfile,
            keyfile=keyfile,
            ca=ca,
            insecure=insecure,
        )

    def serve(
        self,
        address: str,
        *,
        token: str | None = None,
        epochs: int = 1,
        certfile: str | None = None,
        keyfile: str | None = None,
        insecure: bool = False,
    ) -> BlockServer:
        """Run this dataset ``epochs`` times and serve its batches at ``address``
        (``host:port``, port 0 picks one) to ``dataflow.connect`` consumers in
        other processes or hosts, which share each epoch's rows disjointly.

        Returns the running server (``.address``, ``.wait()``, ``.stop()``). Off
        loopback a ``token`` is required (default ``$DATAFLOW_SERVICE_TOKEN``) and
        TLS: ``certfile``/``keyfile`` (default ``$DATAFLOW_SERVICE_CERT``/``_KEY``),
        unless ``insecure=True`` (plaintext, on a network you trust).

        >>> server = df.range(1000).serve("127.0.0.1:0")          # doctest: +SKIP
        >>> it = df.connect(server.address)                        # doctest: +SKIP
        """
        from dataflow.service.server import serve

        return serve(
            self._open_stream,
            address,
            token=token,
            epochs=epochs,
            certfile=certfile,
            keyfile=keyfile,
            insecure=insecure,
        )

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Rows as dicts.

        >>> next(df.range(3).iter_rows())  # doctest: +SKIP
        {'id': 0}
        """
        return self.iterator().iter_rows()

    @renamed_keywords(n="limit")
    def take(self, limit: int = 20) -> list[dict[str, Any]]:
        """Up to ``limit`` rows as dicts (``n=`` is the deprecated old keyword).

        >>> df.range(10**10).take(2)  # doctest: +SKIP
        [{'id': 0}, {'id': 1}]
        """
        return list(self._iterator(self.limit(limit)._plan).iter_rows())

    def take_all(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Every row; raises ``ValueError`` if there are more than ``limit``.

        >>> df.range(3).take_all()
        [{'id': 0}, {'id': 1}, {'id': 2}]
        """
        plan = self._plan if limit is None else self.limit(limit + 1)._plan
        rows = list(self._iterator(plan).iter_rows())
        if limit is not None and len(rows) > limit:
            raise ValueError(
                f"take_all: the dataset has more than the given limit of {limit} rows; "
                "raise limit or use take(n) / iter_rows()"
            )
        return rows

    def take_batch(self, batch_size: int = 20, *, batch_format: str | None = "default") -> Any:
        """The first ``batch_size`` rows as one batch.

        >>> df.range(5).take_batch(2)
        {'id': array([0, 1])}
        """
        batches = self._iterator(self.limit(batch_size)._plan).iter_batches(
            batch_size=batch_size, batch_format=batch_format, prefetch_batches=0
        )
        batch = next(batches, None)
        batches.close()
        if batch is None:
            raise ValueError("take_batch: the dataset is empty")
        return batch

    @renamed_keywords(n="limit")
    def show(self, limit: int = 20) -> None:
        """Print up to ``limit`` rows (``n=`` is the deprecated old keyword).

        >>> df.range(2).show()
        {'id': 0}
        {'id': 1}
        """
        for row in self.take(limit):
            print(row)

    def count(self) -> int:
        """Number of rows. A plan with user code (``map``, ``filter(fn)``...) runs,
        as in Ray Data, so its errors surface; a plan without (reads, ``range``,
        projections, ``limit``) is answered from metadata without running.

        >>> df.range(10**10).count()  # doctest: +SKIP
        10000000000
        """
        n = self._optimized().num_rows()
        if n is not None:
            return n
        with self._open_stream() as stream:
            return stream.count_rows()

    def schema(self, fetch_if_missing: bool = True) -> pa.Schema | None:
        """The output schema (from metadata, or by running the plan up to its
        first block); None for a dataset with no blocks, or when it is not known
        without running and ``fetch_if_missing=False``.

        >>> df.range(3).schema()
        id: int64
        """
        known = self._optimized().output_schema()
        if known is not None or not fetch_if_missing:
            return known
        blocks = self._iterator(self.limit(1)._plan).iter_blocks()
        try:
            first = next(blocks, None)
        finally:
            blocks.close()
        return None if first is None else first.schema

    def columns(self, fetch_if_missing: bool = True) -> list[str] | None:
        """The output column names (None when the schema is not known without
        running and ``fetch_if_missing=False``).

        >>> df.range(3).columns()
        ['id']
        """
        schema = self.schema(fetch_if_missing=fetch_if_missing)
        if schema is None:
            return None if not fetch_if_missing else []
        return list(schema.names)

    def to_arrow(self) -> pa.Table:
        """Every row as one Arrow table.

        >>> df.range(3).to_arrow().num_rows
        3
        """
        blocks = list(self.iterator().iter_blocks())
        if not blocks:
            schema = self._plan.output_schema()
            return schema.empty_table() if schema is not None else pa.table({})
        return concat(blocks)

    def to_pandas(self, limit: int | None = None) -> pd.DataFrame:
        """Every row as one DataFrame (tensor cells as numpy arrays); raises
        ``ValueError`` if there are more than ``limit`` rows (as in Ray Data).

        >>> df.range(3).to_pandas()["id"].tolist()
        [0, 1, 2]
        """
        if limit is None:
            return table_to_pandas(self.to_arrow())
        non_negative_int("to_pandas", "limit", limit)
        table = self.limit(limit + 1).to_arrow()
        if table.num_rows > limit:
            raise ValueError(
                f"to_pandas: the dataset has more than the given limit of {limit} rows; "
                "raise limit, or call limit(n) first to keep the first n rows"
            )
        return table_to_pandas(table)

    def materialize(self) -> Dataset:
        """Run the plan and keep its blocks in the object store: a Dataset that
        later consumers read without recomputing. The blocks are freed when the
        returned Dataset is garbage-collected.

        >>> ds = df.range(5).map(lambda r: {"id": r["id"] * 2}).materialize()
        >>> ds.sum("id")
        20
        """
        return self._materialize()

    def _materialize(self, *, ordered: bool = False) -> Dataset:
        """``materialize()``; ``ordered`` runs in dataset order even when
        ``DataContext.preserve_order`` is off (splits are defined on that order)."""
        stream = self._open_stream(ordered=ordered)
        bundles: list = []
        with stream:
            try:
                bundles.extend(stream)
            except BaseException:  # the run failed: free what it delivered so far
                for bundle in bundles:
                    stream.free(bundle)
                raise
        owned = [r for b in bundles for r in b.refs if b.owns_blocks]
        held = tuple(dataclasses.replace(b, owns_blocks=False) for b in bundles)
        # Bundles passed through unchanged still belong to the materialized
        # inputs of the plan (a split of a split): keep those alive as well.
        parents = [
            n.owner
            for n in self._plan.walk()
            if isinstance(n, MaterializedData) and n.owner is not None
        ]
        owner = BlockOwner(stream.backend, owned, parents)
        ds = Dataset(MaterializedData(bundles=held, owner=owner))
        ds._last_stream = stream
        ds._name = self._name
        return ds

    def stats(self) -> str:
        """Execution statistics of the last run of this dataset.

        >>> ds = df.range(10)
        >>> _ = ds.take_all()
        >>> print(ds.stats())  # doctest: +SKIP
        """
        head = f"Dataset {self._name}: " if self._name else ""
        if self._last_stream is None:
            return f"{head}{summary(self._plan)}: not executed yet"
        body = str(self._last_stream.stats())
        return f"{head.rstrip()}\n{body}" if head else body

    def explain(self) -> None:
        """Print the logical plan, the plan after each optimizer rule and the
        physical plan.

        >>> df.range(10).filter(expr="id > 3").explain()  # doctest: +SKIP
        """
        from dataflow.plan.explain import explain_plan

        head = f"Dataset {self._name}\n" if self._name else ""
        print(head + explain_plan(self._plan, DataContext.get_current()))

    # -- aggregations ------------------------------------------------------------

    def sum(self, on: str | Sequence[str] | None = None, ignore_nulls: bool = True) -> Any:
        """Sum of column ``on`` (a dict ``{"sum(col)": ...}`` for several columns);
        None for an empty dataset, or when ``ignore_nulls=False`` and a null is seen.

        >>> df.range(5).sum("id")  # doctest: +SKIP
        10
        """
        return self._aggregate_on(Sum, on, ignore_nulls=ignore_nulls)

    def min(self, on: str | Sequence[str] | None = None, ignore_nulls: bool = True) -> Any:
        """Minimum of ``on`` (see ``sum`` for several columns and nulls).

        >>> df.range(5).min("id")
        0
        """
        return self._aggregate_on(Min, on, ignore_nulls=ignore_nulls)

    def max(self, on: str | Sequence[str] | None = None, ignore_nulls: bool = True) -> Any:
        """Maximum of ``on`` (see ``sum`` for several columns and nulls).

        >>> df.range(5).max("id")
        4
        """
        return self._aggregate_on(Max, on, ignore_nulls=ignore_nulls)

    def mean(self, on: str | Sequence[str] | None = None, ignore_nulls: bool = True) -> Any:
        """Mean of ``on`` (see ``sum`` for several columns and nulls).

        >>> df.range(5).mean("id")
        2.0
        """
        return self._aggregate_on(Mean, on, ignore_nulls=ignore_nulls)

    def std(
        self, on: str | Sequence[str] | None = None, ddof: int = 1, ignore_nulls: bool = True
    ) -> Any:
        """Standard deviation of ``on`` with divisor ``N - ddof`` (1: sample std);
        NaN when ``N <= ddof``, as in Ray Data and ``groupby().std()``.

        >>> round(df.from_items([1.0, 2.0, 3.0]).std("item"), 6)
        1.0
        """
        return self._aggregate_on(Std, on, ddof=ddof, ignore_nulls=ignore_nulls)

    def _aggregate_on(self, agg: type[AggregateFn], on: Any, **options: Any) -> Any:
        """``agg`` over column ``on`` (a list: each; None: every column) as one
        keyless ``Aggregate``, the path of ``aggregate()`` and ``groupby()``
        (Ray Data's ``_aggregate_on``). One column named as a string gives a
        scalar, otherwise a dict ``{"sum(col)": ...}``."""
        where = agg.__name__.lower()
        cols = list(self.columns()) if on is None else list(column_names(where, on))
        check_known_columns(where, cols, self._plan.output_schema())
        if not cols:
            return {}
        aggs = [agg(c, **options) for c in cols]
        row = self.aggregate(*aggs)
        return row[aggs[0].name] if isinstance(on, str) else row


# -- helpers -------------------------------------------------------------------------


def _udf_args(local_vars: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in local_vars.items() if k in UDF_ARGS}


def _blocks_to_dataset(blocks: list[pa.Table]) -> Dataset:
    return Dataset(InputData(blocks=tuple(blocks)))


DataIterator.blocks_to_dataset = staticmethod(_blocks_to_dataset)
