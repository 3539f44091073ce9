"""Broadcast hash join: a small right side joined to every left block, with no
exchange of the left side.

The hash join (``exchange/tasks.py``, ``JoinSpec``) partitions both sides by
key and waits for every map task before its reduces, so a big left side
moves through the store twice and, out of core, through the disk (64M rows
against a 4M-row table: 7.7 GiB spilled). When the right side is small
(``DataContext.broadcast_join_max_bytes``) and the join keeps every left row
or drops some (``inner``, ``left_outer``), each left block can be joined on
its own: the operator waits for the right side, then runs one task per left
block, in order, while the left side streams.

A probe index over the right side's keys is built once per process and
reused by every task (``Table.join`` would build its hash table on every
call: 0.79 s per 250k-row block against a 4M-row table, where the probe and
takes cost 15 ms). Rows come out in left order, each left row's matches in
right order; the output's columns, names and types are those of
``Table.join`` (left columns, then the right's non-key columns, a clashing
name suffixed). Null keys never match.

>>> right = pa.table({"k": [1, 2, 2], "v": ["a", "b", "c"]})
>>> probe = Probe(right, ["k"], "left", "_right", pa.schema([("k", pa.int64())]))
>>> probe.join(pa.table({"k": [2, 3]})).to_pydict()
{'k': [2, 2, 3], 'v': ['b', 'c', None]}
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from dataflow.block import split_to_max_size
from dataflow.exec.exchange.tasks import ACERO_JOIN_TYPES
from dataflow.exec.interfaces import ExecEnv, JoinsWrite, PhysicalOperator, RefBundle
from dataflow.exec.operators.nary import OrderedDriverTasks
from runtime.resources import Resources

if TYPE_CHECKING:
    from dataflow.exec.transforms import MapTaskFn
    from runtime.backends.base import TaskFuture, TaskResult

BROADCAST_HOWS = ("inner", "left")
"""Join kinds a broadcast right side can run: each output row comes from one
left row, so left blocks join independently."""


def _plain(t: pa.DataType) -> pa.DataType:
    """A dictionary type's value type; any other type as it is."""
    return t.value_type if pa.types.is_dictionary(t) else t


def broadcastable_key_type(t: pa.DataType) -> bool:
    """Key types the probe index handles exactly (hashable scalars)."""
    t = _plain(t)
    return (
        pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_date(t)
        or pa.types.is_timestamp(t)
    )


def _key_values(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """A key column's non-null values as numpy, and the mask of valid rows
    (None: no nulls). String keys become Python objects here (pandas hashes
    those): about 0.1 us a row, against the hash join's partitioning."""
    if column.null_count:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        return column.drop_null().to_numpy(zero_copy_only=False), valid
    return column.to_numpy(zero_copy_only=False), None


class Probe:
    """The right side of a broadcast join, indexed by its key: built once, then
    ``join(left_block)`` for every left block (thread-safe: read-only).

    ``left_schema`` gives the left key types (the right keys are cast to them,
    as the hash join does) and, with the right's, the output columns."""

    def __init__(
        self,
        right: pa.Table,
        keys: Sequence[str],
        how: str,
        suffix: str,
        left_schema: pa.Schema,
        right_keys: Sequence[str] | None = None,
    ) -> None:
        import pandas as pd

        self.left_key = keys[0]
        right_key = (right_keys or keys)[0]
        self.how = how
        left_key_type = left_schema.field(self.left_key).type
        self.key_type = _plain(left_key_type)  # what both sides' keys are cast to
        column = right.column(right_key)
        if column.type != self.key_type:
            column = column.cast(self.key_type)
        values, valid = _key_values(column)
        rows = np.arange(right.num_rows) if valid is None else np.flatnonzero(valid)
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        # Right rows grouped by key: the rows of key i are order[starts[i]:starts[i] + counts[i]].
        self.order = rows[np.argsort(codes, kind="stable")]
        self.counts = np.bincount(codes, minlength=len(uniques)).astype(np.int64)
        self.starts = np.cumsum(self.counts) - self.counts
        self.unique = bool((self.counts <= 1).all())
        self.index = pd.Index(uniques)
        self.index.get_indexer(uniques[:1])  # build the hash table now, not in the first task
        # Output: left columns, then the right's non-key columns (Table.join's names and types).
        at = right.schema.get_field_index(right_key)
        right_schema = right.schema.set(at, right.schema.field(at).with_type(left_key_type))
        empty = left_schema.empty_table().join(
            right_schema.empty_table(),
            keys=list(keys),
            right_keys=list(right_keys or keys),
            join_type=ACERO_JOIN_TYPES[how],
            right_suffix=suffix,
        )
        self.schema = empty.schema
        kept = [n for n in right.column_names if n not in (right_keys or keys)]
        self.right_columns = [right.column(n).combine_chunks() for n in kept]

    def join(self, left: pa.Table) -> pa.Table:
        """``left`` joined with the right side (left order, matches in right order)."""
        n = left.num_rows
        keys = left.column(self.left_key)
        if keys.type != self.key_type:  # dictionary-encoded, or typed unlike the first block
            keys = keys.cast(self.key_type)
        values, valid = _key_values(keys)
        found = self.index.get_indexer(values)
        if valid is not None:
            pos = np.full(n, -1, dtype=np.int64)
            pos[valid] = found
        else:
            pos = found.astype(np.int64, copy=False)
        matched = pos >= 0
        counts = np.zeros(n, dtype=np.int64)
        counts[matched] = self.counts[pos[matched]]
        per_row = np.maximum(counts, 1) if self.how == "left" else counts
        if self.unique and (self.how == "left" or matched.all()):
            left_rows = None  # one output row per left row: the left block as it is
            right_rows = np.full(n, -1, dtype=np.int64)
            right_rows[matched] = self.order[self.starts[pos[matched]]]
        else:
            left_rows = np.repeat(np.arange(n), per_row)
            first = np.repeat(np.cumsum(per_row) - per_row, per_row)
            within = np.arange(len(left_rows)) - first
            p = pos[left_rows]
            right_rows = np.full(len(left_rows), -1, dtype=np.int64)
            hit = p >= 0
            right_rows[hit] = self.order[self.starts[p[hit]] + within[hit]]
        if left_rows is not None:
            left = left.take(pa.array(left_rows))
        missing = right_rows < 0
        take = pa.array(right_rows, mask=missing if missing.any() else None)
        columns = list(left.columns) + [c.take(take) for c in self.right_columns]
        return pa.Table.from_arrays(
            [c.cast(f.type) if c.type != f.type else c for c, f in zip(columns, self.schema)],
            schema=self.schema,
        )


_PROBES: OrderedDict[str, Probe] = OrderedDict()
_PINNED: set[str] = set()
"""Probes shared by the tasks on the driver's threads: kept until their
operator ends (``drop_probes``); its later tasks do not carry the right side."""
_PROBES_KEPT = 2
"""Unpinned probes a process keeps (its latest joins'): a Ray worker that ran
an old join does not hold its right side for ever."""
_PROBES_LOCK = threading.Lock()


def _probe(build_id: str, build: Callable[[], Probe] | None, pinned: bool) -> Probe:
    """The probe of one join in this process, built once (by the first task
    that gets there; the others wait for it). ``build`` None: a task that does
    not carry the right side, run after one that built the probe here."""
    with _PROBES_LOCK:
        probe = _PROBES.get(build_id)
        if probe is not None:
            _PROBES.move_to_end(build_id)
            return probe
        if build is None:
            raise RuntimeError(
                f"broadcast join {build_id}: no probe of the right side in this process "
                "(a task that does not carry the right side ran before the one that "
                "builds it: a bug; DataContext.broadcast_join_max_bytes = 0 uses the "
                "hash join meanwhile)"
            )
        probe = _PROBES[build_id] = build()
        if pinned:
            _PINNED.add(build_id)
        else:
            evictable = [k for k in _PROBES if k not in _PINNED]
            for key in evictable[: max(0, len(evictable) - _PROBES_KEPT)]:
                del _PROBES[key]
        return probe


def has_probe(build_id: str) -> bool:
    """Whether this process holds the probe of a join."""
    with _PROBES_LOCK:
        return build_id in _PROBES


def drop_probes(build_id: str) -> None:
    """Forget this process's probe of one join (its operator has finished)."""
    with _PROBES_LOCK:
        _PROBES.pop(build_id, None)
        _PINNED.discard(build_id)


class BroadcastJoinFn:
    """Task function: ``inputs`` are a left bundle's blocks, then the right
    side's when the task carries them (``carries_right``). With ``post`` (a
    write joined to the operator) the joined blocks go to it as task
    ``task_index`` and the task outputs the write's results."""

    post: MapTaskFn | None = None

    def __init__(
        self,
        left_on: Sequence[str],
        right_on: Sequence[str],
        how: str,
        suffix: str,
        right_schema: pa.Schema,
        max_block_bytes: int,
    ) -> None:
        self.left_on, self.right_on = list(left_on), list(right_on)
        self.how, self.suffix = how, suffix
        self.right_schema = right_schema
        self.max_block_bytes = max_block_bytes

    def __call__(
        self,
        inputs: list[pa.Table],
        n_left: int,
        build_id: str,
        carries_right: bool,
        pinned: bool,
        task_index: int = 0,
    ) -> list[pa.Table]:
        lefts = [t for t in inputs[:n_left] if t.num_columns]
        if not lefts:
            return [] if self.post is None else list(self.post(iter(()), task_index))
        left = lefts[0] if len(lefts) == 1 else pa.concat_tables(lefts)
        rights = [t for t in inputs[n_left:] if t.num_columns]

        def build() -> Probe:
            right = (
                pa.concat_tables(rights, promote_options="permissive")
                if rights
                else self.right_schema.empty_table()
            )
            return Probe(right, self.left_on, self.how, self.suffix, left.schema, self.right_on)

        probe = _probe(build_id, build if carries_right else None, pinned)
        # An empty result still goes out: it carries the output schema.
        joined = split_to_max_size(probe.join(left), self.max_block_bytes)
        return list(joined if self.post is None else self.post(joined, task_index))


class BroadcastJoinOperator(JoinsWrite, OrderedDriverTasks):
    """Joins each left bundle with the whole (small) right side, once the right
    side is in: one driver task per left bundle, outputs in left order (or, with
    a write joined to it, each task writes its joined blocks)."""

    MAX_IN_FLIGHT = 2

    def __init__(self, name: str, inputs: list[PhysicalOperator], task_fn: BroadcastJoinFn) -> None:
        super().__init__(name, inputs)
        self._fn = task_fn
        self._left: deque[RefBundle] = deque()
        self._right: list[RefBundle] = []
        self._right_refs: tuple = ()
        self._right_ready = False
        self._build_id = uuid.uuid4().hex
        # Tasks on the driver's threads share one probe: the first task carries
        # the right side and builds it, the next ones wait for that task and
        # then carry only their left blocks (no re-read of a spilled right side).
        self._shared = False
        self._building: TaskFuture | None = None
        self._built = False

    def start(self, env: ExecEnv) -> None:
        self._backend = env.backend
        self._fn.post = self.post
        self._handle = env.backend.register_function(self._fn, self.name)
        self._max_retries = env.ctx.max_task_retries
        self._shared = env.backend.driver_threads

    def _add_input(self, bundle: RefBundle, input_index: int) -> None:
        if input_index == 0:
            self._left.append(bundle)
            self.metrics.queued_bytes += bundle.nbytes
        else:
            self._right.append(bundle)

    def _inputs_done(self, input_index: int) -> None:
        if input_index == 1:
            right = sorted(self._right, key=lambda b: b.seq)
            self._right_refs = tuple(r for b in right for r in b.refs)
            self._right_ready = True

    def _has_queued(self) -> bool:
        return bool(self._left) or not self._right_ready

    def dispatch_cost(self) -> Resources | None:
        if not (self._right_ready and self._left) or len(self._tasks) >= self.MAX_IN_FLIGHT:
            return None
        return None if self._building is not None else Resources()

    def next_task_bytes(self) -> tuple[int, int]:
        bundle = self._left[0]
        return bundle.nbytes, bundle.nbytes

    def dispatch(self) -> TaskFuture | None:
        bundle = self._left.popleft()
        self.metrics.queued_bytes -= bundle.nbytes
        carries = not (self._shared and self._built)
        refs = bundle.refs + (self._right_refs if carries else ())
        index = self.metrics.tasks_launched  # names its files when a write is joined
        args = (len(bundle.refs), self._build_id, carries, self._shared, index)
        fut = self._launch(bundle, refs, args)
        if self._shared and carries:
            self._building = fut
        return fut

    def on_task_done(self, future: TaskFuture) -> TaskResult | None:
        if future is self._building:
            self._building = None
            self._built = has_probe(self._build_id)  # (not if its left block was empty)
        result = self._collect(future, _left_label)
        if self.all_inputs_done and not self._left and not self._tasks:
            self._release_right()
        return result

    def _release_right(self) -> None:
        owned = [r for b in self._right if b.owns_blocks for r in b.refs]
        self._right, self._right_refs = [], ()
        if owned and self._backend is not None:
            self._backend.free(owned)
        drop_probes(self._build_id)

    def memory_usage(self) -> int:
        right = sum(b.nbytes for b in self._right)
        return self.metrics.queued_bytes + self.output_bytes() + right

    def shutdown(self) -> None:
        backend = self._backend
        if backend is None:
            return
        owned = self._drop_tasks()
        self._building = None
        owned += [r for b in self._left if b.owns_blocks for r in b.refs]
        self._left.clear()
        self.metrics.queued_bytes = 0
        if owned:
            backend.free(owned)
        self._release_right()
        self._release_function()


def _left_label(bundle: RefBundle) -> str:
    return f"{bundle.describe() or 'a block'} of the left input"
