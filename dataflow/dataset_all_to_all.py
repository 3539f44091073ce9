"""The all-to-all methods of ``Dataset`` (repartition, shuffles, sort, groupby,
join, unique, splits), kept out of ``dataset.py`` so that no file grows into a
god file. ``Dataset`` inherits them; each transform appends one node.

>>> import dataflow as df
>>> df.range(10).random_shuffle(seed=1).sort("id", descending=True).take(2)  # doctest: +SKIP
[{'id': 9}, {'id': 8}]
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dataflow.aggregate import AggregateFn, check_aggs
from dataflow.grouped_data import GroupedData, check_known_columns, key_tuple
from dataflow.plan.logical import (
    Aggregate,
    Join,
    LogicalOperator,
    MaterializedData,
    RandomizeBlockOrder,
    RandomShuffle,
    Repartition,
    Sort,
)

if TYPE_CHECKING:
    from dataflow.dataset import Dataset

_JOIN_HOWS = ("inner", "left", "right", "outer")


class AllToAllMethods:
    """Mixin of ``Dataset``: operations that need every input block."""

    # Provided by Dataset: _plan, _then(node), select_columns, materialize, count, take_all.
    _plan: LogicalOperator

    # -- transforms (lazy) -----------------------------------------------------------

    def repartition(self, num_blocks: int, *, shuffle: bool = False) -> Dataset:
        """``num_blocks`` blocks of near-equal row counts, in row order; with
        ``shuffle=True`` rows are scattered randomly instead.

        >>> df.range(10).repartition(3).materialize()  # doctest: +SKIP
        """
        _check_positive("repartition", "num_blocks", num_blocks)
        return self._then(Repartition(num_blocks=num_blocks, shuffle=shuffle))

    def random_shuffle(self, *, seed: int | None = None, num_blocks: int | None = None) -> Dataset:
        """Rows in a random order. With ``seed`` the order is the same on every run
        and for any number of workers (for the same input blocks).

        >>> df.range(5).random_shuffle(seed=0).take_all()  # doctest: +SKIP
        """
        _check_seed("random_shuffle", seed)
        if num_blocks is not None:
            _check_positive("random_shuffle", "num_blocks", num_blocks)
        return self._then(RandomShuffle(seed=seed, num_blocks=num_blocks))

    def randomize_block_order(self, *, seed: int | None = None) -> Dataset:
        """Blocks in a random order (rows within a block keep their order); cheap."""
        _check_seed("randomize_block_order", seed)
        return self._then(RandomizeBlockOrder(seed=seed))

    def sort(self, key: str | Sequence[str], descending: bool | Sequence[bool] = False) -> Dataset:
        """Rows sorted by ``key`` (one column or a list); ``descending`` is one flag
        or one per key. Nulls sort last in either direction, as in pandas.

        >>> ds.sort(["k", "v"], descending=[False, True])  # doctest: +SKIP
        """
        keys = key_tuple("sort", key)
        if not keys:
            raise ValueError("sort: give at least one key column")
        flags = (descending,) * len(keys) if isinstance(descending, bool) else tuple(descending)
        if len(flags) != len(keys) or not all(isinstance(f, bool) for f in flags):
            raise ValueError(
                f"sort: descending must be a bool or one bool per key ({len(keys)}), got {descending!r}"
            )
        check_known_columns("sort", self, keys)
        return self._then(Sort(keys=keys, descending=flags))

    def groupby(self, key: str | Sequence[str] | None) -> GroupedData:
        """Group rows by ``key`` columns for ``count``/``sum``/.../``aggregate`` or
        ``map_groups`` (None: the whole dataset is one group).

        >>> ds.groupby("k").mean("v")  # doctest: +SKIP
        """
        return GroupedData(self, key)  # type: ignore[arg-type]

    def join(
        self,
        other: Dataset,
        on: str | Sequence[str],
        how: str = "inner",
        *,
        right_on: str | Sequence[str] | None = None,
        right_suffix: str = "_right",
        num_partitions: int | None = None,
    ) -> Dataset:
        """Hash join with ``other`` where ``on`` (left) equals ``right_on`` (right,
        default ``on``); ``how`` is "inner", "left", "right" or "outer". Output:
        left columns, then the right's non-key columns (``right_suffix`` added
        on a name clash). Null keys never match.

        >>> users.join(orders, on="user_id", how="left")  # doctest: +SKIP
        """
        if how not in _JOIN_HOWS:
            raise ValueError(f"join: how must be one of {', '.join(_JOIN_HOWS)}, got {how!r}")
        if not isinstance(other, AllToAllMethods):
            raise TypeError(f"join: other must be a Dataset, got {type(other).__name__}")
        left_on = key_tuple("join", on)
        right_keys = key_tuple("join", right_on) if right_on is not None else left_on
        if not left_on or len(left_on) != len(right_keys):
            raise ValueError(
                f"join: on and right_on must name the same number (>= 1) of columns, got "
                f"{list(left_on)} and {list(right_keys)}"
            )
        check_known_columns("join (left side)", self, left_on)
        check_known_columns("join (right side)", other, right_keys)
        node = Join(
            left_on=left_on,
            right_on=right_keys,
            how=how,
            right_suffix=right_suffix,
            num_partitions=num_partitions,
        )
        return type(self)(node.with_inputs(self._plan, other._plan))

    # -- consumption -----------------------------------------------------------------

    def aggregate(self, *aggs: AggregateFn) -> dict[str, Any]:
        """Aggregations over the whole dataset, as a dict ``{name: value}``.

        >>> df.range(10).aggregate(Count(), Sum("id"))  # doctest: +SKIP
        {'count()': 10, 'sum(id)': 45}
        """
        aggs_ = check_aggs(aggs, "aggregate")
        check_known_columns("aggregate", self, [a.on for a in aggs_ if a.on is not None])
        (row,) = self._then(Aggregate(keys=(), aggs=tuple(aggs_))).take_all()
        return row

    def unique(self, column: str, ignore_nulls: bool = False) -> list[Any]:
        """The distinct values of ``column`` (None included unless ``ignore_nulls``).

        >>> sorted(df.from_items([1, 2, 2]).unique("item"))  # doctest: +SKIP
        [1, 2]
        """
        (key,) = key_tuple("unique", column)
        check_known_columns("unique", self, [key])
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
            raise ValueError(f"split_at_indices: indices must be sorted ints >= 0, got {indices!r}")
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
            raise ValueError(
                f"split_proportionately: proportions must be a non-empty list of numbers > 0, "
                f"got {proportions!r}"
            )
        if sum(props) >= 1:
            raise ValueError(
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
            raise ValueError(
                f"split_proportionately: {total} rows cannot make {len(props) + 1} non-empty "
                f"splits with proportions {proportions!r}"
            )
        return mat.split_at_indices(cuts)

    def split(self, n: int, *, equal: bool = False) -> list[Dataset]:
        """``n`` datasets of near-equal row counts (differing by at most one);
        ``equal=True`` makes them exactly equal by dropping the last
        ``count % n`` rows.

        >>> [d.count() for d in df.range(10).split(3, equal=True)]  # doctest: +SKIP
        [3, 3, 3]
        """
        _check_positive("split", "n", n)
        mat = _materialized(self)
        total = mat.count()
        if equal:
            per = total // n
            return [_slice(mat, i * per, (i + 1) * per) for i in range(n)]
        return [_slice(mat, total * i // n, total * (i + 1) // n) for i in range(n)]

    def train_test_split(
        self, test_size: float | int, *, shuffle: bool = False, seed: int | None = None
    ) -> tuple[Dataset, Dataset]:
        """(train, test): the last ``test_size`` rows (a fraction in (0, 1) or a
        row count) are the test set; ``shuffle=True`` random-shuffles first.

        >>> train, test = df.range(10).train_test_split(0.2, shuffle=True, seed=0)  # doctest: +SKIP
        """
        ds = self.random_shuffle(seed=seed) if shuffle else self
        mat = _materialized(ds)
        total = mat.count()
        if isinstance(test_size, float):
            if not 0 < test_size < 1:
                raise ValueError(
                    f"train_test_split: a float test_size must be in (0, 1), got {test_size}"
                )
            train_rows = int(total * (1 - test_size))
        elif isinstance(test_size, int) and 0 < test_size <= total:
            train_rows = total - test_size
        else:
            raise ValueError(
                f"train_test_split: test_size must be a float in (0, 1) or an int in "
                f"[1, {total}] (the row count), got {test_size!r}"
            )
        train, test = mat.split_at_indices([train_rows])
        return train, test


# -- helpers -------------------------------------------------------------------------


def _materialized(ds: Dataset) -> Dataset:
    """``ds`` with its blocks in the store, in dataset order whatever
    ``preserve_order`` says (itself when already materialized: re-materializing
    would borrow the blocks without keeping their owner)."""
    return ds if isinstance(ds._plan, MaterializedData) else ds._materialize(ordered=True)


def _check_positive(where: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}: {name} must be an int >= 1, got {value!r}")


def _check_seed(where: str, seed: Any) -> None:
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
        raise ValueError(f"{where}: seed must be None or an int >= 0, got {seed!r}")


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
    owner = _SliceOwner(backend, new_refs, node.owner)
    return type(mat)(MaterializedData(bundles=tuple(bundles), owner=owner))


def _borrowed(bundle: Any, ref: Any, seq: int) -> Any:
    return dataclasses.replace(bundle, refs=(ref,), seq=(seq,), owns_blocks=False)


class _SliceOwner:
    """Keeps the parent materialization alive and frees the sliced copies."""

    def __init__(self, backend: Any, refs: list[Any], parent: Any) -> None:
        self.parent = parent
        self._finalizer = weakref.finalize(self, _free, backend, tuple(refs))


def _free(backend: Any, refs: tuple[Any, ...]) -> None:
    if refs:
        try:
            backend.free(refs)
        except Exception:  # the session already shut down, which freed everything
            pass


__all__ = ["AllToAllMethods"]
