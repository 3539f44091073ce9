"""DataIterator: the consumption side of a Dataset, built on a stream of blocks.

Each ``iter_*`` call opens one execution (``open_stream()``), re-slices its
blocks into batches of exactly ``batch_size`` rows (the last may be shorter),
converts them to the batch format, and closes the execution when the loop ends,
breaks or raises. ``prefetch_batches`` formats up to that many batches ahead on
a background thread (bounded: a slow consumer stops it).

>>> import dataflow as df
>>> it = df.range(10).iterator()                         # doctest: +SKIP
>>> [len(b["id"]) for b in it.iter_batches(batch_size=4)]  # doctest: +SKIP
[4, 4, 2]
"""

from __future__ import annotations

import bisect
import functools
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

from dataflow.block import check_batch_format, concat, iter_rows, rebatch, to_batch
from dataflow.context import DataContext
from dataflow.errors import PlanError
from dataflow.torch_convert import check_torch_args, table_to_torch

if TYPE_CHECKING:
    import torch

_DONE = object()


class RunStats(Protocol):
    """What an iterator adds to a run's statistics: where its consumer's time went."""

    iterator_wait_s: float
    iterator_user_s: float


@runtime_checkable
class BlockStream(Protocol):
    """One run of a dataset, as a ``DataIterator`` consumes it: a local
    execution (``exec.executor.OutputStream``), a rank's share
    (``distributed.ShareStream``) or a service client's (``service.client.RemoteStream``).

    ``iter_blocks`` yields the run's tables once; ``close`` stops the run and
    releases what it holds, from any thread (it also ends a wait inside
    ``iter_blocks``), and is idempotent; ``stats`` is the run's statistics,
    or None for a run executed elsewhere (a service client's)."""

    def iter_blocks(self) -> Iterator[pa.Table]: ...

    def close(self) -> None: ...

    def stats(self) -> RunStats | None: ...


def run_stats(stream: BlockStream) -> RunStats | None:
    """``stream.stats()``. TEMPORARY getattr (issue 16): the service client's
    stream (``dataflow.service.client.RemoteStream``, another engineer's module)
    has no ``stats`` yet; once it has ``stats() -> None`` this is
    ``stream.stats()`` (tests/dataflow/test_iterators.py
    ``test_every_stream_an_iterator_consumes_is_a_block_stream`` says when)."""
    stats = getattr(stream, "stats", None)
    return None if stats is None else stats()


class DataIterator:
    """Iterates a dataset's rows or batches; ``Dataset.iterator()`` makes one.

    ``open_stream`` starts one execution and returns its ``BlockStream``; every
    ``iter_*`` call starts a fresh one, so a DataIterator can be iterated again.
    """

    def __init__(
        self,
        open_stream: Callable[[], BlockStream],
        name: str = "dataset",
        *,
        shuffle_salt: tuple[int, ...] = (),
        dataset: Any = None,
    ) -> None:
        self._open_stream = open_stream
        self._name = name
        self._pos = _Position()
        self._salt = shuffle_salt
        self._dataset = dataset
        self._last_stream: BlockStream | None = None

    def __repr__(self) -> str:
        return f"DataIterator({self._name})"

    def _open(self) -> BlockStream:
        """Start one execution, kept as the last run for ``stats()``."""
        self._last_stream = self._open_stream()
        return self._last_stream

    def schema(self) -> pa.Schema | None:
        """The schema of the rows this iterator yields: the dataset's (from
        metadata where known), else that of the first block of a run; None when
        there are no blocks.

        >>> df.range(3).iterator().schema()
        id: int64
        """
        if self._dataset is not None:
            return self._dataset.schema()
        blocks = self.iter_blocks()
        try:
            first = next(blocks, None)
        finally:
            blocks.close()
        return None if first is None else first.schema

    def stats(self) -> str:
        """Execution statistics of this iterator's last run.

        >>> it = df.range(3).iterator(); _ = list(it.iter_rows())
        >>> it.stats().startswith("read_range")  # doctest: +SKIP
        True
        """
        if self._last_stream is None:
            return f"{self._name}: not executed yet"
        stats = run_stats(self._last_stream)
        return f"{self._name}: ran elsewhere, no statistics here" if stats is None else str(stats)

    def materialize(self) -> Any:
        """Run once and keep every block: a ``Dataset`` that later consumers read
        without recomputing (the dataset's ``materialize()``; for a split or a
        share, the blocks this iterator yields).

        >>> df.range(3).iterator().materialize().count()
        3
        """
        if self._dataset is not None:
            return self._dataset.materialize()
        if DataIterator.blocks_to_dataset is None:  # pragma: no cover - set on import
            raise PlanError("DataIterator.materialize: import dataflow first")
        return DataIterator.blocks_to_dataset(list(self.iter_blocks()))

    blocks_to_dataset: Callable[[list[pa.Table]], Any] | None = None
    """Builds a Dataset from blocks; set by ``dataflow.dataset`` (the facade
    lives above this module, which may not import it)."""

    def get_context(self) -> DataContext:
        """The current ``DataContext`` (its tunables apply to the next run).

        >>> df.range(1).iterator().get_context().preserve_order in (True, False)
        True
        """
        return DataContext.get_current()

    def to_torch(
        self,
        *,
        label_column: str | None = None,
        feature_columns: list[str] | list[list[str]] | dict[str, list[str]] | None = None,
        label_column_dtype: torch.dtype | None = None,
        feature_column_dtypes: Any = None,
        batch_size: int = 1,
        prefetch_batches: int = 1,
        drop_last: bool = False,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
        unsqueeze_label_tensor: bool = True,
        unsqueeze_feature_tensors: bool = True,
    ) -> torch.utils.data.IterableDataset:
        """Ray Data's ``(features, label)`` torch dataset (see
        ``dataflow.torch_columns``); ``iter_torch_batches`` / ``to_torch_dataset``
        give dicts of tensors instead.

        >>> next(iter(it.to_torch(label_column="y", batch_size=32)))  # doctest: +SKIP
        """
        from dataflow.torch_columns import columns_torch_dataset

        def batches() -> Iterator[dict[str, Any]]:
            return self.iter_batches(
                batch_size=batch_size,
                batch_format="numpy",
                prefetch_batches=prefetch_batches,
                drop_last=drop_last,
                local_shuffle_buffer_size=local_shuffle_buffer_size,
                local_shuffle_seed=local_shuffle_seed,
            )

        return columns_torch_dataset(
            batches,
            label_column=label_column,
            feature_columns=feature_columns,
            label_column_dtype=label_column_dtype,
            feature_column_dtypes=feature_column_dtypes,
            unsqueeze_label_tensor=unsqueeze_label_tensor,
            unsqueeze_feature_tensors=unsqueeze_feature_tensors,
        )

    def iter_blocks(self) -> Iterator[pa.Table]:
        """The blocks of one execution, as they come; the execution stops (and
        frees its objects) when this generator is closed or exhausted."""
        stream = self._open()
        try:
            yield from stream.iter_blocks()
        finally:
            stream.close()

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
        """Batches of ``batch_size`` rows (``None``: one batch per block) in
        ``batch_format`` ("default"/"numpy": dict of arrays, "pandas", "pyarrow").

        ``local_shuffle_buffer_size`` draws each batch at random from a buffer of
        that many rows spanning blocks; ``local_shuffle_seed`` fixes the order of
        each epoch (without one, every iteration differs).

        >>> next(df.range(5).iterator().iter_batches(batch_size=2))  # doctest: +SKIP
        {'id': array([0, 1])}
        """
        fmt = _check_batch_args("iter_batches", batch_size, batch_format, prefetch_batches)
        _check_shuffle_args("iter_batches", batch_size, local_shuffle_buffer_size)
        return self._iter_formatted(
            lambda t: to_batch(t, fmt),
            batch_size,
            drop_last,
            prefetch_batches,
            local_shuffle_buffer_size,
            local_shuffle_seed,
            by_block=fmt == "numpy",
        )

    def iter_torch_batches(
        self,
        *,
        batch_size: int | None = 256,
        dtypes: torch.dtype | Mapping[str, torch.dtype] | None = None,
        device: str | torch.device | None = None,
        collate_fn: Callable[[dict[str, np.ndarray]], Any] | None = None,
        drop_last: bool = False,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
        prefetch_batches: int = 1,
        pin_memory: bool = False,
    ) -> Iterator[Any]:
        """Batches as dicts of tensors (zero-copy from Arrow where the dtype allows;
        tensor columns as N-d tensors), or ``collate_fn(numpy_batch)`` when given.
        ``device="cuda"`` copies with ``non_blocking`` (from pinned memory with
        ``pin_memory=True``) on the prefetch thread.

        >>> next(df.range(4).iterator().iter_torch_batches(batch_size=4))  # doctest: +SKIP
        {'id': tensor([0, 1, 2, 3])}
        """
        where = "iter_torch_batches"
        _check_batch_args(where, batch_size, "numpy", prefetch_batches)
        _check_shuffle_args(where, batch_size, local_shuffle_buffer_size)
        check_torch_args(dtypes, device, collate_fn, where)
        convert = functools.partial(
            table_to_torch,
            dtypes=dtypes,
            device=device,
            pin_memory=pin_memory,
            collate_fn=collate_fn,
        )
        # A block's tensors sliced into batches are the batches' tensors, unless
        # a collate_fn sees each batch or each batch is pinned or moved to a device.
        import torch

        on_cpu = device is None or torch.device(device).type == "cpu"
        return self._iter_formatted(
            convert,
            batch_size,
            drop_last,
            prefetch_batches,
            local_shuffle_buffer_size,
            local_shuffle_seed,
            by_block=collate_fn is None and on_cpu and not pin_memory,
        )

    def iter_tf_batches(
        self,
        *,
        prefetch_batches: int = 1,
        batch_size: int | None = 256,
        dtypes: Any = None,
        drop_last: bool = False,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Batches as dicts of ``tf.Tensor`` (needs TensorFlow); ``dtypes`` is one
        ``tf.DType`` or a dict per column; strings become ``tf.string``.

        >>> next(df.range(4).iterator().iter_tf_batches(batch_size=4))["id"]  # doctest: +SKIP
        <tf.Tensor: shape=(4,), dtype=int64, numpy=array([0, 1, 2, 3])>
        """
        from dataflow.frameworks import import_tf, table_to_tf

        where = "iter_tf_batches"
        _check_batch_args(where, batch_size, "numpy", prefetch_batches)
        _check_shuffle_args(where, batch_size, local_shuffle_buffer_size)
        import_tf()  # fail before execution starts when TensorFlow is missing
        return self._iter_formatted(
            functools.partial(table_to_tf, dtypes=dtypes),
            batch_size,
            drop_last,
            prefetch_batches,
            local_shuffle_buffer_size,
            local_shuffle_seed,
        )

    def iter_jax_batches(
        self,
        *,
        prefetch_batches: int = 1,
        batch_size: int = 256,
        dtypes: Any = None,
        collate_fn: Callable[[dict[str, np.ndarray]], Any] | None = None,
        drop_last: bool = False,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
        synchronize_batches: bool = False,
        paddings: Any = None,
    ) -> Iterator[Any]:
        """Batches as dicts of JAX arrays (needs JAX), the batch axis sharded over the
        local devices (``batch_size`` must divide evenly among them); ``paddings``
        (one value or a dict per column) pads a short last batch to ``batch_size``.

        >>> next(df.range(4).iterator().iter_jax_batches(batch_size=4))["id"]  # doctest: +SKIP
        Array([0, 1, 2, 3], dtype=int32)
        """
        from dataflow.frameworks import JaxConverter

        where = "iter_jax_batches"
        _check_batch_args(where, batch_size, "numpy", prefetch_batches)
        _check_shuffle_args(where, batch_size, local_shuffle_buffer_size)
        convert = JaxConverter(batch_size, dtypes, paddings, collate_fn, synchronize_batches)
        return self._iter_formatted(
            convert,
            batch_size,
            drop_last,
            prefetch_batches,
            local_shuffle_buffer_size,
            local_shuffle_seed,
        )

    def to_tf(
        self,
        feature_columns: str | list[str],
        label_columns: str | list[str],
        *,
        additional_columns: str | list[str] | None = None,
        prefetch_batches: int = 1,
        batch_size: int = 1,
        drop_last: bool = False,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
        feature_type_spec: Any = None,
        label_type_spec: Any = None,
        additional_type_spec: Any = None,
        schema: pa.Schema | None = None,
    ) -> Any:
        """A ``tf.data.Dataset`` of ``(features, labels)`` (plus ``additional``)
        batches: a column name gives a tensor, a list of names a dict of tensors.
        Each pass over it (each Keras epoch) runs the pipeline again. Type specs
        come from the dataset's schema unless given.

        >>> model.fit(ds.iterator().to_tf("x", "y", batch_size=32), epochs=2)  # doctest: +SKIP
        """
        from dataflow.frameworks import import_tf, select_for_tf, tf_spec

        tf = import_tf()
        where = "to_tf"
        _check_batch_args(where, batch_size, "numpy", prefetch_batches)
        _check_shuffle_args(where, batch_size, local_shuffle_buffer_size)
        groups = [feature_columns, label_columns]
        specs = [feature_type_spec, label_type_spec]
        if additional_columns is not None:
            groups.append(additional_columns)
            specs.append(additional_type_spec)
        for cols in groups:
            if not isinstance(cols, str) and not (
                isinstance(cols, (list, tuple)) and all(isinstance(c, str) for c in cols)
            ):
                raise PlanError(f"{where}: columns must be a name or a list of names, got {cols!r}")
        if any(s is None for s in specs):
            if schema is None:
                raise PlanError(f"{where}: the dataset's schema is unknown; pass type specs")
            specs = [
                s
                if s is not None
                else (
                    tf_spec(schema, cols)
                    if isinstance(cols, str)
                    else {c: tf_spec(schema, c) for c in cols}
                )
                for s, cols in zip(specs, groups)
            ]

        def select(table: pa.Table) -> tuple:
            batch = to_batch(table, "numpy")
            return tuple(select_for_tf(batch, cols) for cols in groups)

        def generator() -> Iterator[tuple]:
            yield from self._iter_formatted(
                select,
                batch_size,
                drop_last,
                prefetch_batches,
                local_shuffle_buffer_size,
                local_shuffle_seed,
            )

        return tf.data.Dataset.from_generator(generator, output_signature=tuple(specs))

    def state_dict(self) -> dict[str, Any]:
        """Where batch iteration stands, to resume it after a restart.

        Records the epoch, the rows handed out in it (and the blocks done / rows
        into the current block they amount to) and the shuffle seed. A fresh
        iterator over the same deterministic pipeline (``preserve_order``, seeded
        shuffle) given ``load_state_dict(state)`` continues right after the last
        batch consumed: no row repeated or skipped.

        >>> state = it.state_dict(); it2.load_state_dict(state)  # doctest: +SKIP
        """
        return self._pos.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state_dict()``: the next ``iter_batches`` /
        ``iter_torch_batches`` call continues from that position."""
        self._pos = _Position.from_state_dict(state)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (its local shuffle order, and
        under DDP its share), as ``DistributedSampler.set_epoch`` does; without it
        each full iteration counts as the next epoch.

        >>> it.set_epoch(3)  # doctest: +SKIP
        """
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"set_epoch: epoch must be a non-negative int, got {epoch!r}")
        self._pos = _Position(epoch=epoch, seed=self._pos.seed)

    def _shuffle_salt(self, epoch: int) -> tuple[int, ...]:
        """Mixed into the local shuffle's seed with the epoch, so that iterators
        sharing a seed (DDP ranks, loader workers) draw apart."""
        return self._salt

    def iter_rows(self) -> Iterator[dict[str, Any]]:
        """Rows as dicts (tensor cells as numpy arrays)."""
        for table in self.iter_blocks():
            yield from iter_rows(table)

    def _iter_formatted(
        self,
        format_fn: Callable[[pa.Table], Any],
        batch_size: int | None,
        drop_last: bool,
        prefetch_batches: int,
        shuffle_buffer_size: int | None = None,
        shuffle_seed: int | None = None,
        *,
        by_block: bool = False,
    ) -> Iterator[Any]:
        """``format_fn`` over exact-size batches, computed ``prefetch_batches`` ahead,
        starting where ``self._pos`` says and advancing it as batches are handed out.
        ``by_block``: ``format_fn`` returns a dict of arrays or tensors that may be
        formatted a block at a time and sliced (``formatted_batches``)."""
        pos = self._pos.begin(batch_size, shuffle_buffer_size, shuffle_seed)
        stream = self._open()

        def batches() -> Iterator[tuple[int, Any]]:
            blocks = pos.recorded(stream.iter_blocks())
            if shuffle_buffer_size:
                rng = np.random.default_rng((pos.seed, pos.epoch, *self._shuffle_salt(pos.epoch)))
                shuffled = shuffled_batches(blocks, batch_size, shuffle_buffer_size, rng)
                tables = skip_rows(shuffled, pos.rows)  # replay the epoch's draws
            elif by_block and batch_size is not None:
                batches = formatted_batches(skip_rows(blocks, pos.rows), batch_size, format_fn)
                for rows, batch in batches:
                    if drop_last and rows < batch_size:
                        return
                    yield rows, batch
                return
            else:
                tables = rebatch(skip_rows(blocks, pos.rows), batch_size)
            for table in tables:
                if drop_last and batch_size is not None and table.num_rows < batch_size:
                    return
                yield table.num_rows, format_fn(table)

        try:
            if prefetch_batches <= 0:
                source = batches()
            else:
                source = _prefetched(batches(), stream.close, prefetch_batches)
            # A local execution's stats record the consumer's time; a stream run
            # elsewhere (a service client's) has none to add it to.
            stats = run_stats(stream)
            clock = time.perf_counter
            asked = clock()
            for rows, batch in source:
                handed = clock()
                if stats is not None:
                    stats.iterator_wait_s += handed - asked
                pos.rows += rows  # counted as consumed once handed out
                yield batch
                asked = clock()
                if stats is not None:
                    stats.iterator_user_s += asked - handed
            pos.next_epoch()
        finally:
            stream.close()


# -- local shuffle and resumable position -----------------------------------------


def shuffled_batches(
    tables: Iterator[pa.Table], batch_size: int, buffer_size: int, rng: np.random.Generator
) -> Iterator[pa.Table]:
    """Batches of ``batch_size`` rows drawn at random from a buffer of at least
    ``buffer_size`` rows that spans block boundaries (the last batch may be short).

    The buffer is shuffled once it holds ``buffer_size`` rows plus a refill of
    ``max(batch_size, buffer_size // 2)`` rows, and emits whole batches until it is
    back to ``buffer_size`` rows: rows stay a random number of rounds, and each row
    is copied about three times whatever the ratio of the two sizes. The order
    depends only on ``rng`` and the input order, so a seeded run replays exactly.
    """
    refill = max(batch_size, buffer_size // 2)
    pending: list[pa.Table] = []
    have = 0
    for t in tables:
        if not t.num_rows:
            continue
        pending.append(t)
        have += t.num_rows
        if have >= buffer_size + refill:
            buffer = concat(pending)
            buffer = buffer.take(rng.permutation(have))
            n_out = (have - buffer_size) // batch_size * batch_size
            for start in range(0, n_out, batch_size):
                yield buffer.slice(start, batch_size)
            pending, have = [buffer.slice(n_out)], have - n_out
    if have:
        buffer = concat(pending).take(rng.permutation(have))
        for start in range(0, have, batch_size):
            yield buffer.slice(start, batch_size)


def formatted_batches(
    tables: Iterator[pa.Table], batch_size: int, format_fn: Callable[[pa.Table], dict]
) -> Iterator[tuple[int, dict]]:
    """``(rows, format_fn(batch))`` for each batch of exactly ``batch_size`` rows
    (the last may be smaller), cut as ``rebatch`` cuts them, where ``format_fn``
    returns a dict of arrays or tensors.

    The whole batches inside a block whose columns are null-free numbers are
    formatted once, together, and handed out as slices (views) of the result:
    slicing a tensor costs about a microsecond where formatting a batch costs
    tens, per batch Python that holds the GIL beside the consumer's loop. Such
    columns get the same dtype whatever rows are converted, so the batches equal
    those that per-batch formatting gives. Batches that straddle two blocks, and
    blocks of other columns, are formatted one batch at a time.

    >>> t = pa.table({"x": [1, 2, 3, 4, 5]})
    >>> fmt = lambda b: to_batch(b, "numpy")
    >>> [(n, b["x"].tolist()) for n, b in formatted_batches(iter([t, t]), 4, fmt)]
    [(4, [1, 2, 3, 4]), (4, [5, 1, 2, 3]), (2, [4, 5])]
    """
    pending: list[pa.Table] = []
    have = 0
    for t in tables:
        start, rows = 0, t.num_rows
        if have:  # first the batch that the previous block began
            start = min(batch_size - have, rows)
            pending.append(t.slice(0, start))
            have += start
            if have < batch_size:
                continue
            yield have, format_fn(concat(pending))
            pending, have = [], 0
        whole = (rows - start) // batch_size
        if whole > 1 and _formats_by_block(t):
            block = format_fn(t.slice(start, whole * batch_size))
            for a in range(0, whole * batch_size, batch_size):
                yield batch_size, {k: v[a : a + batch_size] for k, v in block.items()}
            start += whole * batch_size
        while rows - start >= batch_size:
            yield batch_size, format_fn(t.slice(start, batch_size))
            start += batch_size
        if start < rows:
            pending, have = [t.slice(start)], rows - start
    if have:
        yield have, format_fn(concat(pending))


def _formats_by_block(table: pa.Table) -> bool:
    """Only null-free integer, float and boolean columns: the dtype of their
    array or tensor does not depend on which of their rows are converted."""
    for column in table.columns:
        kind = column.type
        numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        if not (numeric or pa.types.is_boolean(kind)) or column.null_count:
            return False
    return True


def skip_rows(tables: Iterator[pa.Table], n: int) -> Iterator[pa.Table]:
    """``tables`` without their first ``n`` rows (whole blocks skipped unconverted)."""
    for t in tables:
        if n >= t.num_rows:
            n -= t.num_rows
            continue
        yield t.slice(n) if n else t
        n = 0


@dataclass
class _Position:
    """Where iteration stands: the epoch, rows handed to the consumer in it, and
    the block boundaries seen (to report blocks done / rows into the block)."""

    epoch: int = 0
    rows: int = 0
    seed: int | None = None
    batch_size: int | None = None
    shuffle_buffer_size: int | None = None
    block_ends: list[int] = field(default_factory=list)
    resumed: bool = False  # loaded by load_state_dict and not yet iterated

    def begin(
        self, batch_size: int | None, shuffle_buffer_size: int | None, seed: int | None
    ) -> _Position:
        """Start an epoch, or resume the loaded one (whose settings must match); an
        epoch the consumer broke off counts as done."""
        resumed, self.resumed = self.resumed and self.rows > 0, False
        if self.rows and not resumed:
            self.next_epoch()
        if resumed and (batch_size, shuffle_buffer_size) != (
            self.batch_size,
            self.shuffle_buffer_size,
        ):
            raise ValueError(
                f"load_state_dict: the state was saved with batch_size={self.batch_size}, "
                f"local_shuffle_buffer_size={self.shuffle_buffer_size}; iterate with the same "
                "values to resume"
            )
        if seed is not None:
            if resumed and self.seed is not None and seed != self.seed:
                raise ValueError(
                    f"load_state_dict: the state was saved with local_shuffle_seed={self.seed}, "
                    f"got {seed}"
                )
            self.seed = seed
        elif self.seed is None:
            self.seed = secrets.randbits(63)
        self.batch_size, self.shuffle_buffer_size = batch_size, shuffle_buffer_size
        self.block_ends = []
        return self

    def recorded(self, tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
        """``tables``, noting where each block ends (rows from the epoch start)."""
        end = 0
        for t in tables:
            end += t.num_rows
            self.block_ends.append(end)
            yield t

    def next_epoch(self) -> None:
        self.epoch += 1
        self.rows = 0
        self.block_ends = []

    def state_dict(self) -> dict[str, Any]:
        done = bisect.bisect_right(self.block_ends, self.rows)
        start = self.block_ends[done - 1] if done else 0
        return {
            "epoch": self.epoch,
            "rows": self.rows,
            "blocks_done": done,
            "rows_into_block": self.rows - start,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "local_shuffle_buffer_size": self.shuffle_buffer_size,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> _Position:
        try:
            return cls(
                epoch=int(state["epoch"]),
                rows=int(state["rows"]),
                seed=state["seed"],
                batch_size=state["batch_size"],
                shuffle_buffer_size=state["local_shuffle_buffer_size"],
                resumed=True,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"load_state_dict: not a DataIterator state ({e!r}); pass what "
                "DataIterator.state_dict() returned"
            ) from None


def _prefetched(source: Iterator[Any], wake: Callable[[], None], depth: int) -> Iterator[Any]:
    """Items of ``source`` produced by a background thread at most ``depth`` ahead.

    Errors in the thread re-raise here. Closing this generator stops the thread:
    ``wake`` (the stream's thread-safe ``close``) ends a wait inside ``source``."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        # Poll so that a consumer that went away never leaves this thread blocked.
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, raised there
            put(e)

    thread = threading.Thread(target=produce, name="dataflow-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        if thread.is_alive():
            wake()
        thread.join()


def _check_shuffle_args(where: str, batch_size: int | None, buffer_size: int | None) -> None:
    if buffer_size is None:
        return
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
        raise PlanError(
            f"{where}: local_shuffle_buffer_size must be a positive int or None, got {buffer_size!r}"
        )
    if batch_size is None:
        raise PlanError(f"{where}: local_shuffle_buffer_size needs a batch_size (got None)")


def _check_batch_args(
    where: str, batch_size: int | None, batch_format: str | None, prefetch_batches: int
) -> str:
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise PlanError(f"{where}: batch_size must be a positive int or None, got {batch_size!r}")
    if not isinstance(prefetch_batches, int) or prefetch_batches < 0:
        raise PlanError(
            f"{where}: prefetch_batches must be a non-negative int, got {prefetch_batches!r}"
        )
    try:
        fmt = check_batch_format(batch_format, where)
    except ValueError as e:
        raise PlanError(str(e)) from None
    if fmt == "cupy":
        raise PlanError(
            f"{where}: batch_format 'cupy' is for map_batches on GPU workers; "
            "use 'numpy', 'pandas' or 'pyarrow' here"
        )
    return fmt


__all__ = ["DataIterator"]
