"""The all-to-all methods of ``Dataset`` (repartition, shuffles, sort, groupby,
join, unique, splits), kept out of ``dataset.py`` so that no file grows into a
god file. ``Dataset`` inherits them; each transform appends one node.

>>> import dataflow as df
>>> df.range(10).random_shuffle(seed=1).sort("id", descending=True).take(2)  # doctest: +SKIP
[{'id': 9}, {'id': 8}]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dataflow.aggregate import AggregateFn
from dataflow.compat import check_ray_only, renamed_keywords
from dataflow.dataset_base import BlockOwner, DatasetBase
from dataflow.errors import PlanError
from dataflow.grouped_data import GroupedData
from dataflow.plan.logical import (
    Aggregate,
    InputData,
    Join,
    MaterializedData,
    RandomizeBlockOrder,
    RandomShuffle,
    Repartition,
    Sort,
)
from dataflow.validate import (
    check_aggs,
    check_known_columns,
    check_seed,
    column_names,
    dataset_plans,
    positive_int,
)

if TYPE_CHECKING:
    from dataflow.dataset import Dataset

_JOIN_HOWS = {
    "inner": "inner",
    "left": "left_outer",
    "right": "right_outer",
    "outer": "full_outer",
}
"""The older ``how=`` names and the Ray Data join types they are."""
_JOIN_TYPES = {
    "inner": "inner",
    "left_outer": "left",
    "right_outer": "right",
    "full_outer": "outer",
    "left_semi": None,
    "right_semi": None,
    "left_anti": None,
    "right_anti": None,
}
"""Ray Data's join types and the hash join that runs each (None: not supported)."""


class AllToAllMethods(DatasetBase):
    """Part of ``Dataset``: operations that need every input block."""

    # -- transforms (lazy) -----------------------------------------------------------

    def repartition(
        self,
        num_blocks: int | None = None,
        target_num_rows_per_block: int | None = None,
        *,
        strict: bool = False,
        shuffle: bool = False,
        keys: Sequence[str] | None = None,
        sort: bool = False,
    ) -> Dataset:
        """Re-cut the rows into blocks, as Ray Data's ``repartition``:

        * ``num_blocks``: that many blocks of near-equal row counts, in row
          order; ``shuffle=True`` scatters rows randomly instead; ``keys=[...]``
          hash-partitions by those columns (rows with equal keys share a block,
          each block sorted by them with ``sort=True``). In row order it
          streams when the row count is known from metadata and order is
          preserved (each block is cut as soon as its rows are in); otherwise
          it waits for the whole input.
        * ``target_num_rows_per_block``: blocks of exactly that many rows but
          the last, in row order. Ray Data streams this and, unless
          ``strict=True``, lets a task's leftover rows make smaller blocks;
          dataflow materializes the dataset and cuts exact blocks either way.

        >>> [b.num_rows for b in df.range(10).repartition(target_num_rows_per_block=4,
        ...                                                  strict=True).iter_internal_blocks()]  # doctest: +SKIP
        [4, 4, 2]
        """
        if (num_blocks is None) == (target_num_rows_per_block is None):
            raise PlanError(
                "repartition: give exactly one of num_blocks or target_num_rows_per_block"
            )
        if target_num_rows_per_block is not None:
            positive_int("repartition", "target_num_rows_per_block", target_num_rows_per_block)
            if shuffle or keys:
                raise PlanError(
                    "repartition: target_num_rows_per_block re-cuts blocks in row order; "
                    "shuffle and keys need num_blocks"
                )
            return _exact_blocks(_materialized(self), target_num_rows_per_block)
        positive_int("repartition", "num_blocks", num_blocks)
        if strict:
            raise PlanError("repartition: strict applies to target_num_rows_per_block")
        key_cols = column_names("repartition", keys, allow_none=True)
        if key_cols:
            if shuffle:
                raise PlanError("repartition: give keys (hash partitioning) or shuffle, not both")
            check_known_columns("repartition", key_cols, self._plan.output_schema())
        elif sort:
            raise PlanError("repartition: sort=True sorts each block by keys; give keys")
        return self._then(
            Repartition(num_blocks=num_blocks, shuffle=shuffle, keys=key_cols, sort=sort)
        )

    def random_shuffle(
        self, *, seed: int | None = None, num_blocks: int | None = None, **ray_remote_args: Any
    ) -> Dataset:
        """Rows in a random order. With ``seed`` the order is the same on every run
        and for any number of workers (for the same input blocks). Ray's
        ``ray_remote_args`` are refused: the exchange's tasks take one CPU.

        >>> df.range(5).random_shuffle(seed=0).take_all()  # doctest: +SKIP
        """
        if ray_remote_args:
            name = next(iter(ray_remote_args))
            raise PlanError(
                f"random_shuffle: {name}= is a Ray remote() option; dataflow's shuffle runs "
                "as exchange tasks of one CPU each and takes none: drop it"
            )
        check_seed("random_shuffle", seed)
        if num_blocks is not None:
            positive_int("random_shuffle", "num_blocks", num_blocks)
        return self._then(RandomShuffle(seed=seed, num_blocks=num_blocks))

    def randomize_block_order(self, *, seed: int | None = None) -> Dataset:
        """Blocks in a random order (rows within a block keep their order); cheap."""
        check_seed("randomize_block_order", seed)
        return self._then(RandomizeBlockOrder(seed=seed))

    def sort(
        self,
        key: str | Sequence[str],
        descending: bool | Sequence[bool] = False,
        boundaries: Sequence[int | float] | None = None,
    ) -> Dataset:
        """Rows sorted by ``key`` (one column or a list); ``descending`` is one flag
        or one per key. Nulls sort last in either direction, as in pandas.
        ``boundaries`` (Ray Data: where to cut the first key into output
        blocks) is checked (sorted numbers) but dataflow cuts where its
        samples say; the sorted rows are the same either way.

        >>> ds.sort(["k", "v"], descending=[False, True])  # doctest: +SKIP
        """
        keys = column_names("sort", key)
        if not keys:
            raise PlanError("sort: give at least one key column")
        flags = (descending,) * len(keys) if isinstance(descending, bool) else tuple(descending)
        if len(flags) != len(keys) or not all(isinstance(f, bool) for f in flags):
            raise PlanError(
                f"sort: descending must be a bool or one bool per key ({len(keys)}), got {descending!r}"
            )
        check_known_columns("sort", keys, self._plan.output_schema())
        if boundaries is not None:
            bounds = list(boundaries)
            if not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds
            ) or bounds != sorted(bounds):
                raise PlanError(
                    f"sort: boundaries must be a sorted list of numbers, got {boundaries!r}"
                )
        return self._then(Sort(keys=keys, descending=flags))

    def groupby(
        self, key: str | Sequence[str] | None, num_partitions: int | None = None
    ) -> GroupedData:
        """Group rows by ``key`` columns for ``count``/``sum``/.../``aggregate`` or
        ``map_groups`` (None: the whole dataset is one group); ``num_partitions``
        sets how many hash partitions (reduce tasks) the groups are spread
        over (None: picked from the data).

        >>> ds.groupby("k", num_partitions=8).mean("v")  # doctest: +SKIP
        """
        return GroupedData(self, key, num_partitions)

    @renamed_keywords(other="ds")
    def join(
        self,
        ds: Dataset,
        join_type: str | None = None,
        num_partitions: int | None = None,
        on: str | Sequence[str] = ("id",),
        right_on: str | Sequence[str] | None = None,
        left_suffix: str | None = None,
        right_suffix: str | None = None,
        *,
        partition_size_hint: int | None = None,
        aggregator_ray_remote_args: dict[str, Any] | None = None,
        validate_schemas: bool = False,
        how: str | None = None,
    ) -> Dataset:
        """Hash join with ``ds`` where ``on`` (left) equals ``right_on`` (right,
        default ``on``), as Ray Data's ``join(ds, join_type, num_partitions,
        on=...)``. ``join_type``: "inner" (the default here), "left_outer",
        "right_outer" or "full_outer". Output: left columns, then the right's
        non-key columns; a name on both sides gets ``left_suffix`` /
        ``right_suffix`` (right default "_right"). Null keys never match.
        ``num_partitions`` (None: picked from the data) sets the exchange's width.

        An inner or left outer join on one key whose right side is known (from
        metadata) to be small (``DataContext.broadcast_join_max_bytes``) runs
        as a broadcast join instead: each left block joins the whole right
        side, with no exchange (the left side streams, rows in left order).
        The rows are the hash join's either way.

        The older call ``join(ds, on, how=...)`` still works: a second argument
        that is not a join type is ``on``, and ``how`` ("inner", "left", "right",
        "outer") is ``join_type``.

        >>> users.join(orders, "left_outer", 8, on=("user_id",))  # doctest: +SKIP
        """
        check_ray_only(
            "join",
            partition_size_hint=partition_size_hint,
            aggregator_ray_remote_args=aggregator_ray_remote_args,
        )
        if join_type is not None and join_type not in _JOIN_TYPES:
            if how is not None or not isinstance(join_type, (str, list, tuple)):
                raise PlanError(
                    f"join: join_type must be one of {', '.join(_JOIN_TYPES)}, got {join_type!r}"
                )
            on, join_type = join_type, None  # the older join(ds, on, how=...) form
        if how is not None:
            if join_type is not None:
                raise PlanError("join: give join_type (Ray Data's name) or how, not both")
            if how not in _JOIN_HOWS:
                raise PlanError(f"join: how must be one of {', '.join(_JOIN_HOWS)}, got {how!r}")
            join_type = _JOIN_HOWS[how]
        kind = _JOIN_TYPES.get(join_type or "inner")
        if kind is None:
            raise PlanError(
                f"join: join_type={join_type!r} is not supported by dataflow's hash join "
                "(inner, left_outer, right_outer, full_outer); for a semi join use "
                "inner on the other side's unique keys, for an anti join a left_outer "
                "join then filter on a null right column"
            )
        dataset_plans("join", [ds])
        if num_partitions is not None:
            positive_int("join", "num_partitions", num_partitions)
        left_on = column_names("join", on)
        right_keys = column_names("join", right_on) if right_on is not None else left_on
        if not left_on or len(left_on) != len(right_keys):
            raise PlanError(
                f"join: on and right_on must name the same number (>= 1) of columns, got "
                f"{list(left_on)} and {list(right_keys)}"
            )
        check_known_columns("join (left side)", left_on, self._plan.output_schema())
        check_known_columns("join (right side)", right_keys, ds._plan.output_schema())
        left, right = self, ds
        if validate_schemas or left_suffix is not None:
            ls, rs = self.schema(), ds.schema()
            if validate_schemas:
                _check_key_types(ls, rs, left_on, right_keys)
            if left_suffix is not None and ls is not None and rs is not None:
                clash = [
                    c
                    for c in ls.names
                    if c not in left_on and c in rs.names and c not in right_keys
                ]
                if clash:
                    left = self.rename_columns({c: c + left_suffix for c in clash})
                    if right_suffix:
                        right = ds.rename_columns({c: c + right_suffix for c in clash})
        node = Join(
            left_on=left_on,
            right_on=right_keys,
            how=kind,
            right_suffix="_right" if right_suffix is None else right_suffix,
            num_partitions=num_partitions,
        )
        return type(self)(node.with_inputs(left._plan, right._plan))

    # -- consumption -----------------------------------------------------------------

    def aggregate(self, *aggs: AggregateFn) -> dict[str, Any]:
        """Aggregations over the whole dataset, as a dict ``{name: value}``.

        >>> df.range(10).aggregate(Count(), Sum("id"))  # doctest: +SKIP
        {'count()': 10, 'sum(id)': 45}
        """
        aggs_ = check_aggs(aggs, "aggregate")
        check_known_columns(
            "aggregate", [a.on for a in aggs_ if a.on is not None], self._plan.output_schema()
        )
        (row,) = self._then(Aggregate(keys=(), aggs=tuple(aggs_))).take_all()
        return row

    def unique(self, column: str, ignore_nulls: bool = False) -> list[Any]:
        """The distinct values of ``column`` (None included unless ``ignore_nulls``).

        >>> sorted(df.from_items([1, 2, 2]).unique("item"))  # doctest: +SKIP
        [1, 2]
        """
        (key,) = column_names("unique", column)
        check_known_columns("unique", [key], self._plan.output_schema())
        rows = self.select_columns([key])._then(Aggregate(keys=(key,), aggs=())).take_all()
        values = [r[key] for r in rows]
        return [v for v in values if v is not None] if ignore_nulls else values

    def split_at_indices(self, indices: Sequence[int]) -> list[Dataset]:
        """Materialize, then cut the rows at ``indices`` (sorted, >= 0) into
        ``len(indices) + 1`` datasets. Only blocks straddling a cut are copied.

        >>> [d.count() for d in df.range(10).split_at_indices([3, 7])]  # doctest: +SKIP
        [3, 4, 3]
        """
        idx = list(indices)
        if any(not isinstance(i, int) or i < 0 for i in idx) or idx != sorted(idx):
            raise PlanError(f"split_at_indices: indices must be sorted ints >= 0, got {indices!r}")
        mat = _materialized(self)
        total = mat.count()
        bounds = [0, *(min(i, total) for i in idx), total]
        return [_slice(mat, lo, hi) for lo, hi in zip(bounds, bounds[1:])]

    def split_proportionately(self, proportions: Sequence[float]) -> list[Dataset]:
        """Materialize, then cut the rows in dataset order into
        ``len(proportions) + 1`` datasets: split ``i`` holds
        ``int(count * p_i)`` rows (cumulatively rounded down), the last one the
        rest. Proportions must be > 0 and sum to < 1; every split gets at least
        one row (earlier cuts move down by one where two would meet), as in Ray Data.

        >>> [d.count() for d in df.range(10).split_proportionately([0.2, 0.5])]  # doctest: +SKIP
        [2, 5, 3]
        """
        props = list(proportions)
        if not props or any(
            not isinstance(p, (int, float)) or isinstance(p, bool) or p <= 0 for p in props
        ):
            raise PlanError(
                f"split_proportionately: proportions must be a non-empty list of numbers > 0, "
                f"got {proportions!r}"
            )
        if sum(props) >= 1:
            raise PlanError(
                f"split_proportionately: proportions must sum to less than 1 (the last split "
                f"takes the rest), got {proportions!r} (sum {sum(props)})"
            )
        mat = _materialized(self)
        total = mat.count()
        cuts, acc = [], 0.0
        for p in props:
            acc += p
            cuts.append(int(total * acc))
        # Keep every split non-empty: move a cut down where it meets the next one.
        for i in range(len(cuts) - 2, -1, -1):
            cuts[i] = min(cuts[i], cuts[i + 1] - 1)
        if cuts[0] <= 0:  # (the last cut is < total: the proportions sum to < 1)
            raise PlanError(
                f"split_proportionately: {total} rows cannot make {len(props) + 1} non-empty "
                f"splits with proportions {proportions!r}"
            )
        return mat.split_at_indices(cuts)

    def split(
        self, n: int, *, equal: bool = False, locality_hints: list[Any] | None = None
    ) -> list[Dataset]:
        """``n`` datasets of near-equal row counts (differing by at most one);
        ``equal=True`` makes them exactly equal by dropping the last
        ``count % n`` rows.

        >>> [d.count() for d in df.range(10).split(3, equal=True)]  # doctest: +SKIP
        [3, 3, 3]
        """
        positive_int("split", "n", n)
        check_ray_only("split", locality_hints=locality_hints)
        mat = _materialized(self)
        total = mat.count()
        if equal:
            per = total // n
            return [_slice(mat, i * per, (i + 1) * per) for i in range(n)]
        return [_slice(mat, total * i // n, total * (i + 1) // n) for i in range(n)]

    def train_test_split(
        self,
        test_size: float | int,
        *,
        shuffle: bool = False,
        seed: int | None = None,
        stratify: str | None = None,
    ) -> tuple[Dataset, Dataset]:
        """(train, test): the last ``test_size`` rows (a fraction in (0, 1) or a
        row count) are the test set; ``shuffle=True`` random-shuffles first.
        ``stratify="label"`` splits each value of that column on its own (a
        float ``test_size`` of each), so both sets keep the label proportions.

        >>> train, test = df.range(10).train_test_split(0.2, shuffle=True, seed=0)  # doctest: +SKIP
        """
        ds = self.random_shuffle(seed=seed) if shuffle else self
        if stratify is not None:
            return _stratified_split(ds, test_size, stratify)
        mat = _materialized(ds)
        total = mat.count()
        train_rows = total - _test_rows("train_test_split", test_size, total)
        train, test = mat.split_at_indices([train_rows])
        return train, test


# -- helpers -------------------------------------------------------------------------


def _test_rows(where: str, test_size: Any, total: int) -> int:
    """How many of ``total`` rows a ``test_size`` (fraction or count) puts in test."""
    if isinstance(test_size, float):
        if not 0 < test_size < 1:
            raise PlanError(f"{where}: a float test_size must be in (0, 1), got {test_size}")
        return total - int(total * (1 - test_size))
    if isinstance(test_size, int) and not isinstance(test_size, bool) and 0 < test_size <= total:
        return test_size
    raise PlanError(
        f"{where}: test_size must be a float in (0, 1) or an int in [1, {total}] "
        f"(the row count), got {test_size!r}"
    )


def _stratified_split(ds: Dataset, test_size: Any, column: str) -> tuple[Dataset, Dataset]:
    """Ray's ``train_test_split(stratify=column)``: per value of ``column``, its
    last ``test_size`` share of rows (in dataset order) go to test."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(test_size, float) or not 0 < test_size < 1:
        raise PlanError(
            f"train_test_split: with stratify, test_size must be a float in (0, 1), "
            f"got {test_size!r}"
        )
    check_known_columns("train_test_split (stratify)", [column], ds._plan.output_schema())
    mat = _materialized(ds)
    labels = pa.chunked_array(
        [t.column(column) for t in mat.iterator().iter_blocks()],
        type=mat.schema().field(column).type,
    )
    codes = pc.dictionary_encode(labels).combine_chunks().indices.to_numpy(zero_copy_only=False)
    is_test = np.zeros(len(codes), dtype=bool)
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        n_test = len(rows) - int(len(rows) * (1 - test_size))
        is_test[rows[len(rows) - n_test :]] = True
    table = mat.to_arrow()
    mask = pa.array(is_test)
    train, test = table.filter(pc.invert(mask)), table.filter(mask)
    return type(mat)(InputData(blocks=(train,))), type(mat)(InputData(blocks=(test,)))


def _exact_blocks(mat: Dataset, rows: int) -> Dataset:
    """A materialized dataset cut into blocks of exactly ``rows`` rows (the last
    one shorter): ``repartition(target_num_rows_per_block=rows, strict=True)``.
    Blocks that already fit are shared; the others are re-cut into new objects."""
    from dataflow.block import concat
    from dataflow.session import get_backend

    node: MaterializedData = mat._plan
    backend = get_backend()
    out, new_refs, pending, have = [], [], [], 0
    first = node.bundles[0] if node.bundles else None

    def emit(ref: Any, template: Any) -> None:
        out.append(_borrowed(template, ref, len(out)))

    for bundle in node.bundles:
        for ref in bundle.refs:
            if not pending and ref.num_rows == rows:
                emit(ref, bundle)
                continue
            table = backend.get(ref)
            while table.num_rows:
                take = min(rows - have, table.num_rows)
                pending.append(table.slice(0, take))
                have += take
                table = table.slice(take)
                if have == rows:
                    piece = backend.put(concat(pending))
                    new_refs.append(piece)
                    emit(piece, bundle)
                    pending, have = [], 0
    if pending:
        piece = backend.put(concat(pending))
        new_refs.append(piece)
        emit(piece, first)
    if first is None:
        return mat
    return type(mat)(
        MaterializedData(bundles=tuple(out), owner=BlockOwner(backend, new_refs, [node.owner]))
    )


def _materialized(ds: Dataset) -> Dataset:
    """``ds`` with its blocks in the store, in dataset order whatever
    ``preserve_order`` says (itself when already materialized: re-materializing
    would borrow the blocks without keeping their owner)."""
    return ds if isinstance(ds._plan, MaterializedData) else ds._materialize(ordered=True)


def _check_key_types(left: Any, right: Any, left_on: tuple, right_on: tuple) -> None:
    """Ray's ``validate_schemas=True``: the key columns' types must be equal."""
    if left is None or right is None:
        return
    for a, b in zip(left_on, right_on):
        ta, tb = left.field(a).type, right.field(b).type
        if ta != tb:
            raise PlanError(
                f"join: validate_schemas=True and key {a!r} is {ta} on the left but "
                f"{b!r} is {tb} on the right; cast one side (with_column) or drop validate_schemas"
            )


def _slice(mat: Dataset, lo: int, hi: int) -> Dataset:
    """Rows ``[lo, hi)`` of a materialized dataset: whole blocks are shared
    (borrowed), the blocks cut by ``lo`` or ``hi`` are sliced into new objects."""
    from dataflow.session import get_backend

    node: MaterializedData = mat._plan
    backend = get_backend()
    bundles, new_refs, offset = [], [], 0
    for bundle in node.bundles:
        for ref in bundle.refs:
            start, end = max(lo, offset), min(hi, offset + ref.num_rows)
            if start < end:
                piece = ref
                if end - start < ref.num_rows:
                    piece = backend.put(backend.get(ref).slice(start - offset, end - start))
                    new_refs.append(piece)
                bundles.append(_borrowed(bundle, piece, len(bundles)))
            offset += ref.num_rows
    if not bundles and node.bundles:
        # An empty split keeps the schema: a zero-row slice of the first block.
        first = node.bundles[0]
        empty = backend.put(backend.get(first.refs[0]).slice(0, 0))
        new_refs.append(empty)
        bundles.append(_borrowed(first, empty, 0))
    owner = BlockOwner(backend, new_refs, [node.owner])
    return type(mat)(MaterializedData(bundles=tuple(bundles), owner=owner))


def _borrowed(bundle: Any, ref: Any, seq: int) -> Any:
    return dataclasses.replace(bundle, refs=(ref,), seq=(seq,), owns_blocks=False)


__all__ = ["AllToAllMethods"]
