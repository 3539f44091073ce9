"""What exchange tasks run inside a worker: one ``ExchangeSpec`` per operation.

A spec says how a block is cut into partitions (``map``) and how the pieces of
one partition become output blocks (``reduce``); a sort also ``sample``s each
block for its boundaries. ``ExchangeTaskFn`` wraps a spec as the one function
registered with the backend (pickled once, cached per worker); its first
argument names the phase.

>>> fn = ExchangeTaskFn(SortSpec([("a", "ascending", "at_end")]), 1 << 27)
>>> [t.column("a").to_pylist() for t in fn([pa.table({"a": [3, 1, 2]})], "reduce", 1, None, 0)]
[[1, 2, 3]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from dataflow.block import (
    array_from_numpy,
    check_batch_format,
    concat,
    from_batch,
    split_to_max_size,
    to_batch,
)
from dataflow.exec.exchange.aggregation import (
    final_aggregate,
    is_partial,
    partial_aggregate,
    raw_columns,
)
from dataflow.exec.exchange.partition import (
    SortKey,
    group_starts,
    hash_partition,
    key_order,
    key_range_partition,
    random_keys,
    range_partition,
    sample_rows,
    sort_keys,
    sort_table,
    split_by_partition,
    top_k,
)
from dataflow.exec.transforms import StageFailure

if TYPE_CHECKING:
    from dataflow.exec.transforms import MapTaskFn

SHUFFLE_KEY = "__dataflow_shuffle_key"
SAMPLE_ROWS_PER_BLOCK = 64


class ExchangeSpec:
    """How one all-to-all operation partitions and rebuilds blocks.

    ``fixed_partitions``: the map side cuts into a number of partitions chosen
    before any input arrives (hash, random); a sort chooses it from samples.
    ``ordered``: the output must keep partition order (sort, random shuffle).
    ``map_partitions``: a fixed number of map partitions (a global aggregation
    has one). A dataset with no rows still gets one reduce, over
    ``empty_sides(schemas)``, so its output keeps its schema (and a global
    aggregation of nothing has its one row). ``runs_python``: user
    code runs in the tasks, so they never run in the driver. ``small_output``:
    the map side already shrinks the data (partial aggregates), so reduces are
    sized by bytes: a small result is one task and one key-sorted block."""

    has_map = True
    fixed_partitions = True
    map_partitions: int | None = None
    ordered = False
    needs_sample = False
    runs_python = False
    small_output = False

    def map(
        self, table: pa.Table, side: int, block_id: tuple[int, ...], n: int, extra: Any
    ) -> list[pa.Table]:
        raise NotImplementedError

    def map_extra(self, boundaries: pa.Table | None, rows_in: int, rows_out: int) -> Any:
        """The ``extra`` the next map task gets: a sort's ``boundaries``.
        ``rows_in`` / ``rows_out``: rows into and out of the map tasks done so
        far (an aggregation stops aggregating blocks that do not shrink)."""
        return boundaries

    def reduce(self, sides: list[list[pa.Table]], extra: Any) -> Iterator[pa.Table]:
        """``sides[i]``: the pieces of this partition from input ``i``; ``extra``:
        what the operator knows that the spec cannot (schemas, slices)."""
        raise NotImplementedError

    def empty_sides(self, schemas: Sequence[pa.Schema | None]) -> list[list[pa.Table]]:
        """What ``reduce`` gets for a partition no row reached: an empty piece
        of each input's schema, so the output has the schema it would have."""
        return [[s.empty_table()] if s is not None else [] for s in schemas]


class RepartitionSpec(ExchangeSpec):
    """repartition(n) without shuffle: no map side; reduce ``i`` concatenates
    its row range ``extra = [(start, length), ...]`` of the inputs it is given,
    so the output keeps row order in ``n`` blocks of near-equal row counts."""

    has_map = False
    ordered = True

    def __init__(self, n: int) -> None:
        self.n = n

    def reduce(self, sides, extra):
        pieces = [t.slice(start, length) for t, (start, length) in zip(sides[0], extra)]
        yield concat(pieces) if pieces else pa.table({})


class HashRepartitionSpec(ExchangeSpec):
    """repartition(n, keys=...): rows hash-partitioned by ``keys`` into ``n``
    blocks (equal keys share one), each sorted by the keys with ``sort``."""

    def __init__(self, keys: Sequence[str], sort: bool) -> None:
        self.keys = list(keys)
        self.sort = sort

    def map(self, table, side, block_id, n, extra):
        return hash_partition(table, self.keys, n)

    def reduce(self, sides, extra):
        table = concat(sides[0])
        if self.sort:
            table = sort_table(table, [(k, "ascending", "at_end") for k in self.keys])
        yield table


class RandomShuffleSpec(ExchangeSpec):
    """Each row gets a random 64-bit key from (seed, block id, row); the output
    is the rows sorted by that key, cut into key ranges."""

    ordered = True

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def map(self, table, side, block_id, n, extra):
        keys = random_keys(self.seed, block_id, table.num_rows)
        keyed = table.append_column(
            SHUFFLE_KEY, array_from_numpy(keys.astype(np.uint64, copy=False))
        )
        return split_by_partition(keyed, key_range_partition(keys, n), n)

    def reduce(self, sides, extra):
        table = concat(sides[0])
        if SHUFFLE_KEY not in table.column_names:
            yield table
            return
        order = array_from_numpy(key_order(table.column(SHUFFLE_KEY)))
        yield table.drop_columns([SHUFFLE_KEY]).take(order)


class SortSpec(ExchangeSpec):
    """Sampled range partitioning; each partition is sorted on the reduce side.

    With a ``limit`` (a sort followed by a limit: the optimizer's ``topk``
    rule) no sampling is needed: each block keeps its first ``limit`` rows and
    one reduce sorts those and keeps the first ``limit``."""

    fixed_partitions = False
    ordered = True
    needs_sample = True

    def __init__(self, key: SortKey, limit: int | None = None) -> None:
        self.key = list(key)
        self.limit = limit
        if limit is not None:
            self.fixed_partitions, self.needs_sample, self.map_partitions = True, False, 1

    def sample(self, table: pa.Table, block_id: tuple[int, ...]) -> pa.Table:
        seed = int(np.uint64(hash(block_id) & 0xFFFFFFFF))
        return sample_rows(table, [k[0] for k in self.key], SAMPLE_ROWS_PER_BLOCK, seed)

    def map(self, table, side, block_id, n, extra):
        if self.limit is not None:
            return [top_k(table, self.key, self.limit)]
        return range_partition(table, self.key, extra)

    def reduce(self, sides, extra):
        table = concat(sides[0])
        if self.limit is None:
            yield sort_table(table, self.key)
        else:
            yield top_k(table, self.key, self.limit)


class AggregateSpec(ExchangeSpec):
    """groupby().aggregate(): partial aggregation per block, hash-partitioned by key.

    Partial aggregation pays only when keys repeat within a block: once the
    map tasks done so far kept more than ``RAW_RATIO`` of their rows as
    groups (millions of keys), later map tasks pass the rows the aggregation
    reads on unaggregated, and each reduce aggregates them once."""

    small_output = True
    RAW_RATIO = 0.5

    def __init__(self, keys: Sequence[str], aggs: Sequence[Any]) -> None:
        self.keys = list(keys)
        self.aggs = list(aggs)
        self.map_partitions = None if self.keys else 1
        self.runs_python = any(a.runs_python for a in self.aggs)

    def map_extra(self, boundaries, rows_in, rows_out):
        skip = self.keys and not self.runs_python and rows_out > self.RAW_RATIO * rows_in > 0
        return "raw" if skip else None

    def map(self, table, side, block_id, n, extra):
        if extra == "raw":
            partial = raw_columns(table, self.keys, self.aggs)
        else:
            partial = partial_aggregate(table, self.keys, self.aggs)
        return hash_partition(partial, self.keys, n) if self.keys else [partial]

    def empty_sides(self, schemas):
        # The reduce side merges partial states: the partial of an empty input.
        empty = [partial_aggregate(s.empty_table(), self.keys, self.aggs) for s in schemas[:1] if s]
        return [empty]

    def reduce(self, sides, extra):
        partials = [p for p in sides[0] if is_partial(p)]
        raw = [p for p in sides[0] if not is_partial(p)]
        if raw:
            partials.append(partial_aggregate(concat(raw), self.keys, self.aggs))
        yield final_aggregate(partials, self.keys, self.aggs)


class MapGroupsSpec(ExchangeSpec):
    """groupby().map_groups(fn): rows hash-partitioned by key; the reduce side
    sorts its partition by key and calls ``fn`` once per group (a callable
    class is built once per reduce task; ``fn`` may return a batch or an
    iterator of batches)."""

    def __init__(
        self,
        keys: Sequence[str],
        fn: Callable,
        batch_format: str,
        fn_args: tuple,
        fn_kwargs: dict,
        label: str,
        fn_constructor_args: tuple = (),
        fn_constructor_kwargs: dict | None = None,
        zero_copy_batch: bool = True,
    ) -> None:
        self.keys = list(keys)
        self.fn = fn
        self.batch_format = check_batch_format(batch_format, label)
        self.fn_args = tuple(fn_args)
        self.fn_kwargs = dict(fn_kwargs)
        self.label = label
        self.ctor_args = tuple(fn_constructor_args)
        self.ctor_kwargs = dict(fn_constructor_kwargs or {})
        self.zero_copy_batch = zero_copy_batch
        self.runs_python = True

    def map(self, table, side, block_id, n, extra):
        return hash_partition(table, self.keys, n)

    def reduce(self, sides, extra):
        table = sort_table(concat(sides[0]), sort_keys(self.keys, [False] * len(self.keys)))
        starts = group_starts(table, self.keys)
        try:
            fn = (
                self.fn(*self.ctor_args, **self.ctor_kwargs)
                if isinstance(self.fn, type)
                else self.fn
            )
        except Exception as e:  # noqa: BLE001 - user code: reported with its traceback
            raise StageFailure.wrap(self.label, e) from None
        for g in range(len(starts) - 1):
            group = table.slice(int(starts[g]), int(starts[g + 1] - starts[g]))
            try:
                batch = to_batch(group, self.batch_format)
                if not self.zero_copy_batch and isinstance(batch, dict):
                    batch = {k: v if v.flags.writeable else v.copy() for k, v in batch.items()}
                result = fn(batch, *self.fn_args, **self.fn_kwargs)
                outs = [from_batch(r, self.label) for r in _batches(result)]
            except Exception as e:  # noqa: BLE001 - user code: reported with its traceback
                raise StageFailure.wrap(self.label, e) from None
            yield from (out for out in outs if out.num_rows)


def _batches(result: Any) -> Iterator[Any]:
    """A UDF's result as batches: one batch, or each batch of an iterator."""
    if isinstance(result, (dict, pa.Table)) or hasattr(result, "to_numpy") or result is None:
        yield result
    elif isinstance(result, Iterator):
        yield from result
    else:
        yield result


ACERO_JOIN_TYPES = {
    "inner": "inner",
    "left": "left outer",
    "right": "right outer",
    "outer": "full outer",
}
"""``Table.join``'s name for each join kind (the hash join's and the broadcast join's)."""


class JoinSpec(ExchangeSpec):
    """Hash join: both sides hash-partitioned by their keys; each partition pair
    is joined with ``pyarrow.Table.join``. Null keys never match (SQL)."""

    def __init__(
        self, left_on: Sequence[str], right_on: Sequence[str], how: str, suffix: str
    ) -> None:
        self.on = (list(left_on), list(right_on))
        self.how = how
        self.suffix = suffix

    def map(self, table, side, block_id, n, extra):
        return hash_partition(table, self.on[side], n)

    def reduce(self, sides, extra):
        tables = []
        for side, pieces in enumerate(sides):
            t = concat([p for p in pieces if p.num_columns])
            if not t.num_columns and extra[side] is not None:
                t = extra[side].empty_table()
            tables.append(t)
        left, right = tables
        if not left.num_columns or not right.num_columns:
            # One side has no blocks and no known schema: nothing can match.
            kept = {
                "inner": None,
                "left": left,
                "right": right,
                "outer": left if left.num_columns else right,
            }
            if kept[self.how] is not None and kept[self.how].num_rows:
                yield kept[self.how]
            return
        right = _align_key_types(left, right, *self.on)
        yield left.join(
            right,
            keys=self.on[0],
            right_keys=self.on[1],
            join_type=ACERO_JOIN_TYPES[self.how],
            right_suffix=self.suffix,
            use_threads=False,
        )


def _align_key_types(
    left: pa.Table, right: pa.Table, left_on: list[str], right_on: list[str]
) -> pa.Table:
    """Cast ``right``'s join keys to the left key types (int32 meets int64)."""
    for lk, rk in zip(left_on, right_on):
        lt, rt = left.schema.field(lk).type, right.schema.field(rk).type
        if lt != rt:
            i = right.schema.get_field_index(rk)
            right = right.set_column(i, rk, right.column(rk).cast(lt))
    return right


class ExchangeTaskFn:
    """The registered task function of an exchange operator.

    Calls: ``("sample", block_id)`` -> one sample table; ``("map", side,
    block_id, n, extra)`` -> exactly ``n`` partition tables; ``("reduce",
    num_left, extra, task_index)`` (the first ``num_left`` inputs are from
    input 0) -> output blocks of at most ``max_block_bytes``, or, with a
    ``post`` chain (a write joined to the exchange), what that chain makes of
    them in the same task, as reduce task ``task_index``."""

    def __init__(
        self, spec: ExchangeSpec, max_block_bytes: int, post: MapTaskFn | None = None
    ) -> None:
        self.spec = spec
        self.max_block_bytes = max_block_bytes
        self.post = post

    def __call__(self, inputs: list[pa.Table], phase: str, *args: Any) -> Iterator[pa.Table]:
        if phase == "sample":
            (block_id,) = args
            yield self.spec.sample(concat(inputs), block_id)
        elif phase == "map":
            side, block_id, n, extra = args
            parts = self.spec.map(concat(inputs), side, block_id, n, extra)
            assert len(parts) == n, (len(parts), n)
            yield from parts
        else:
            num_left, extra, task_index = args
            outputs = self._reduce(inputs, num_left, extra)
            if self.post is None:
                yield from outputs
            else:
                # The outputs go straight into the chain: not through the store,
                # and no task of its own per block.
                yield from self.post(outputs, task_index)

    def _reduce(self, inputs: list[pa.Table], num_left: int, extra: Any) -> Iterator[pa.Table]:
        sides = [inputs[:num_left], inputs[num_left:]]
        empty = not inputs and self.spec.has_map  # no row reached this partition
        if empty:
            sides = self.spec.empty_sides(extra)
        for out in self.spec.reduce(sides, extra):
            if empty and not out.num_columns:
                continue  # nothing, not even a schema, to pass on
            yield from split_to_max_size(out, self.max_block_bytes)
