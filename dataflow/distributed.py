"""Feeding data-parallel training (DDP): each rank of a ``torch.distributed`` job
gets its own share of every epoch, the shares together cover every row once,
and every rank gets the same number of batches, so that no rank waits forever
at an all-reduce for a rank that ran out of data.

How ranks share the work: each rank reads and transforms its own share of the
input (``dataflow.plan.shard``), on its own workers; no rank serves another.
Compared with one execution on rank 0 served to every rank through
``streaming_split`` (measured side by side in ``benchmarks/workloads/ddp_feed.py``),
this needs no connection between ranks besides torch's own, no rank's training
loop shares its process with everybody's pipeline, the ranks' CPUs all read,
and a share is a function of (dataset, world size, rank, epoch, seed) alone, so a
rank resumes mid-epoch from ``state_dict()``. The price: every rank lists the
whole input (Parquet footers), and plans that need every row (sort, shuffle,
limit, aggregate, join) cannot be cut into shares.

Equal shares. The rows each rank gets per epoch, ``Q``, are fixed before the
first batch:

* When the sources know their row count ``N`` (Parquet footers, ``range``,
  in-memory data) and no filter or flat_map changes it: rank ``r`` gets rows
  ``[r*Q, (r+1)*Q)`` in dataset order, with ``Q = N // world`` under
  ``ddp_remainder="drop"`` (the last ``N % world`` rows go to nobody) or
  ``ceil(N / world)`` under ``"pad"`` (the last share runs on into the first
  rows), as torch's ``DistributedSampler`` does. Nothing is exchanged.
* With a filter or flat_map (or a source that cannot count its rows), each
  rank gets an equal share of the *input*, but what it keeps is known only by
  running it: before the first epoch each rank counts its share (the pipeline
  up to its last filter, in ``UNITS`` parts, no block fetched), one
  ``all_gather_object`` shares the counts, and ``Q`` is the smallest count
  (drop: ranks with more stop at ``Q``) or the largest (pad: ranks with fewer
  add rows from the start of the dataset). Counts are kept for later epochs.
  Without a process group (explicit ``rank=``/``world_size=``) a rank counts
  every share itself.

Whatever happens, a rank then yields exactly ``Q`` rows an epoch: a share that
comes out short (say a ``map_batches`` that drops rows) is padded with the
dataset's first rows, one that comes out long is cut; both are logged and
counted in ``stats()``, with the remainder. With DataLoader workers, a rank's
share is cut again into parts of whole batches, one per worker (with a filter,
from the counted parts: a part cut between two workers runs in both).

Epochs: with ``local_shuffle_buffer_size``, epoch ``e`` deals the ``world``
shares to the ranks in an order drawn from ``(seed, e)`` and shuffles within
each share from the same seed, where ``seed`` is ``local_shuffle_seed`` or rank
0's random seed, sent to every rank: the shares stay disjoint and each epoch
differs. ``set_epoch(n)`` picks the epoch, as on a ``DistributedSampler``.

>>> share = DistributedShare.prepare(df.range(10)._plan, rank=1, world_size=3,
...                                  remainder="drop", batch_size=2, where="example")
>>> part = share.part(epoch=0)
>>> share.rows_per_rank, part.rows, part.plan.datasource.ranges
(3, 3, ((3, 6),))
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import secrets
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dataflow.context import DataContext
from dataflow.errors import DataflowError, PlanError
from dataflow.iterators import DataIterator, skip_rows
from dataflow.plan.logical import (
    InputData,
    LogicalOperator,
    MapBatches,
    MapRows,
    Project,
    RandomizeBlockOrder,
    Union,
)
from dataflow.plan.shard import (
    TASKS_PER_SHARE,
    batch_share,
    check_shardable,
    rows_follow_input,
    shard_plan,
    shard_rows,
    share_range,
    source_rows,
    wrap,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

REMAINDERS = ("drop", "pad")

DDP_HINT = (
    "each rank reads its own share of the sources, so run that step before training "
    "(e.g. write its output with write_parquet and train on read_parquet of it); to "
    "shuffle, pass local_shuffle_buffer_size= or use randomize_block_order()"
)

UNITS = 16
"""Parts of a share counted apart when a filter runs, so that DataLoader workers
can be given exact rows of the share (a part cut between two workers runs in both)."""

_DEAL = 0xDEA1  # mixed into the dealing seed, so that it draws apart from the local shuffle


def process_group() -> Any:
    """``torch.distributed`` when a process group is initialized, else None
    (without importing torch: a group exists only if the user imported it)."""
    dist = sys.modules.get("torch.distributed")
    # Half-built while another thread imports it: no group can exist yet.
    initialized = getattr(dist, "is_initialized", None)
    if initialized is None or not dist.is_available() or not initialized():
        return None
    return dist


def resolve_world(rank: int | None, world_size: int | None, where: str) -> tuple[int, int]:
    """``(rank, world_size)``: the explicit values, else the initialized process
    group's, else ``(0, 1)`` (one process: no sharding).

    >>> resolve_world(None, None, "example"), resolve_world(1, 4, "example")
    ((0, 1), (1, 4))
    """
    if (rank is None) != (world_size is None):
        raise ValueError(
            f"{where}: pass both rank= and world_size=, or neither (under an initialized "
            "torch.distributed process group they default to its rank and world size)"
        )
    if rank is None or world_size is None:
        dist = process_group()
        return (dist.get_rank(), dist.get_world_size()) if dist is not None else (0, 1)
    for name, value in (("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where}: {name} must be an int, got {value!r}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"{where}: rank must be in 0..world_size-1 and world_size >= 1, got "
            f"rank={rank}, world_size={world_size}"
        )
    return rank, world_size


def _grouped(rank: int, world_size: int) -> Any:
    """The process group, when it is the one these ranks belong to."""
    dist = process_group()
    if dist is not None and (dist.get_rank(), dist.get_world_size()) == (rank, world_size):
        return dist
    return None


@dataclass(frozen=True)
class Part:
    """What one process runs in an epoch: ``plan`` (sharded at its sources;
    None: nothing to read), whose first ``skip`` rows it passes over, then
    exactly ``rows`` rows, padded with the dataset's rows from ``pad_from`` on
    if the plan has fewer. ``expected``: the rows the plan yields after the
    skip, when known."""

    plan: LogicalOperator | None
    rows: int
    expected: int | None
    epoch: int
    slot: int
    skip: int = 0
    pad_from: int = 0


@dataclass(frozen=True)
class DistributedShare:
    """Rank ``rank``'s share of every epoch of ``plan`` (see the module docstring).

    Built once per rank by ``prepare`` (which may exchange counts and a seed with
    the other ranks); then pure: ``part(epoch, worker, workers)`` says what a
    process runs, ``open(part)`` runs it. Picklable, for DataLoader workers.
    """

    plan: LogicalOperator
    rank: int
    world_size: int
    remainder: str
    batch_size: int
    rows_per_rank: int
    total: int | None
    """Input rows of the sources (None when a source cannot count them)."""
    exact: bool
    """Shares are cut from the dataset's row numbers (rows follow the input)."""
    counts: tuple[tuple[int, ...], ...] | None
    """Rows each of the ``UNITS`` parts of each of the ``world_size`` shares
    yields (counted: a filter runs), in order."""
    seed: int | None
    """Shared by every rank: deals shares to ranks per epoch and seeds the local
    shuffle; None when not shuffling."""
    where: str

    @classmethod
    def prepare(
        cls,
        plan: LogicalOperator,
        *,
        rank: int,
        world_size: int,
        remainder: str,
        batch_size: Any,
        shuffle: bool = False,
        seed: int | None = None,
        where: str,
    ) -> DistributedShare:
        """Check ``plan`` and agree with the other ranks on the rows per rank.

        With a filter this runs a counting pass and an ``all_gather_object``:
        every rank must call it (as every rank builds its data loader)."""
        where = f"{where} on rank {rank} of {world_size}"
        if remainder not in REMAINDERS:
            raise ValueError(f"{where}: ddp_remainder must be 'drop' or 'pad', got {remainder!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise PlanError(
                f"{where}: batch_size must be a positive int under DDP (got {batch_size!r}): "
                "every rank must run the same number of batches, so batches cannot follow "
                "block boundaries"
            )
        check_shardable(plan, where=where, hint=DDP_HINT)
        dist = _grouped(rank, world_size)
        if shuffle and seed is None:
            if dist is None:
                raise ValueError(
                    f"{where}: shuffling without a process group needs local_shuffle_seed= "
                    "(the same on every rank), so that the ranks deal the shares alike"
                )
            box = [secrets.randbits(63)]
            dist.broadcast_object_list(box, src=0)
            seed = box[0]
        counted = source_rows(plan)
        total = None if any(c is None for c in counted) else sum(c or 0 for c in counted)
        exact = total is not None and rows_follow_input(plan)
        share = cls(
            plan=plan,
            rank=rank,
            world_size=world_size,
            remainder=remainder,
            batch_size=batch_size,
            rows_per_rank=0,
            total=total,
            exact=exact,
            counts=None,
            seed=seed if shuffle else None,
            where=where,
        )
        if exact:
            assert total is not None
            start, stop = share_range(total, 0, world_size, remainder)
            return dataclasses.replace(share, rows_per_rank=stop - start)
        counts = share._count_shares(dist)
        totals = [sum(c) for c in counts]
        rows = min(totals) if remainder == "drop" else max(totals)
        off = sum(abs(c - rows) for c in totals)
        if off > max(world_size, sum(totals) // 10):
            log.warning(
                "%s: the ranks' shares hold %s rows, so ddp_remainder=%r %s %d rows each "
                "epoch (%s)",
                where,
                totals,
                remainder,
                "drops" if remainder == "drop" else "repeats",
                off,
                "whole read tasks, as this source cannot count its rows, differ in size"
                if total is None
                else "the filter keeps more rows of some parts of the input than of others",
            )
        log.info(
            "%s: the rows of each share are known only by running it, so each rank "
            "counted its share first: %s rows; %d rows per rank (ddp_remainder=%r)",
            where,
            totals,
            rows,
            remainder,
        )
        return dataclasses.replace(share, counts=counts, rows_per_rank=rows)

    # -- which rows ---------------------------------------------------------------

    def slot(self, epoch: int) -> int:
        """The share this rank reads in ``epoch`` (its rank, or dealt anew per epoch)."""
        if self.seed is None:
            return self.rank
        order = np.random.default_rng((self.seed, epoch, _DEAL)).permutation(self.world_size)
        return int(order[self.rank])

    def part(self, epoch: int, worker: int = 0, workers: int = 1) -> Part:
        """What DataLoader worker ``worker`` of ``workers`` (or the rank itself)
        runs in ``epoch``: whole batches of the rank's rows."""
        slot = self.slot(epoch)
        lo, hi = batch_share(self.rows_per_rank, self.batch_size, worker, workers)
        if self.exact:
            assert self.total is not None
            first = slot * self.rows_per_rank
            plan = shard_rows(self.plan, wrap(first + lo, first + hi, self.total))
            return Part(plan, hi - lo, expected=hi - lo, epoch=epoch, slot=slot)
        assert self.counts is not None
        units = self.counts[slot]
        have = sum(units)
        if workers == 1:  # the share's first rows, in its own order
            if self.total is None:
                tasks = TASKS_PER_SHARE * self.world_size
                plan = shard_plan(self.plan, slot, self.world_size, parallelism=tasks)
            else:
                plan = self._units_plan(slot, 0, UNITS)
            return Part(plan, hi - lo, expected=have, epoch=epoch, slot=slot)
        # Rows [lo, hi) of the share, in the order of its units: run the units
        # that hold them (a unit cut between two workers runs in both), then
        # pad past the share's end as a rank does.
        stop = min(hi, have)
        if stop <= lo:
            return Part(None, hi - lo, 0, epoch=epoch, slot=slot, pad_from=lo - have)
        ends = list(itertools.accumulate(units))
        first = bisect.bisect_right(ends, lo)
        last = bisect.bisect_left(ends, stop) + 1
        begin = ends[first - 1] if first else 0
        return Part(
            self._units_plan(slot, first, last),
            hi - lo,
            expected=ends[last - 1] - lo,
            epoch=epoch,
            slot=slot,
            skip=lo - begin,
            pad_from=max(0, lo - have),
        )

    def _units_plan(self, slot: int, first: int, last: int) -> LogicalOperator:
        """Units ``first..last-1`` of share ``slot`` of the input, in order."""
        if self.total is None:  # whole read tasks, dealt round-robin
            count = self.world_size * UNITS
            tasks = TASKS_PER_SHARE * self.world_size
            shares = [
                shard_plan(self.plan, slot + self.world_size * u, count, parallelism=tasks)
                for u in range(first, last)
            ]
            return shares[0] if len(shares) == 1 else Union(inputs=tuple(shares))
        return shard_rows(
            self.plan, [(self._unit_start(slot, first), self._unit_start(slot, last))]
        )

    def _unit_start(self, slot: int, unit: int) -> int:
        assert self.total is not None
        start, stop = share_range(self.total, slot, self.world_size)
        return start + (stop - start) * unit // UNITS

    def _count_shares(self, dist: Any) -> tuple[tuple[int, ...], ...]:
        """Rows each unit of each share yields: this rank's counted here and
        gathered from the others, or, without a process group, all counted here."""
        ctx = DataContext.get_current().copy()
        if dist is None:
            return tuple(self._count_units(s, ctx) for s in range(self.world_size))
        # A rank that fails to count still takes part in the gather, so that the
        # others fail with it instead of waiting for it.
        mine: Any = None
        failure = None
        try:
            mine = self._count_units(self.rank, ctx)
        except Exception as e:
            failure = e
        gathered: list[Any] = [None] * self.world_size
        why = None if failure is None else f"{type(failure).__name__}: {failure}"
        dist.all_gather_object(gathered, (mine, why))
        if failure is not None:
            raise failure
        for rank, (_, error) in enumerate(gathered):
            if error is not None:
                raise DataflowError(
                    f"{self.where}: rank {rank} failed to count the rows of its share, so "
                    f"the ranks cannot agree on how many each gets: {error}"
                )
        return tuple(tuple(int(c) for c in units) for units, _ in gathered)

    def _count_units(self, slot: int, ctx: DataContext) -> tuple[int, ...]:
        """One run over the units of share ``slot`` side by side (a union, whose
        output tells which input a block came from), counting rows per unit from
        bundle metadata; no block is fetched."""
        from dataflow.plan.optimizer import optimize
        from dataflow.plan.planner import execute

        units = []
        for u in range(UNITS):
            plan = self._units_plan(slot, u, u + 1)
            if self.total is not None:
                # Units cut by row numbers do not depend on what the read is asked
                # for, so the maps after the last filter (taken to keep rows) can go.
                while isinstance(plan, (MapBatches, MapRows, Project, RandomizeBlockOrder)):
                    plan = plan.input
            units.append(plan)
        ctx = ctx.copy()
        ctx.preserve_order = False  # counting: any order
        counts = [0] * UNITS
        with execute(optimize(Union(inputs=tuple(units)), ctx.optimizer_flags), ctx) as stream:
            for bundle in stream:
                counts[bundle.seq[0]] += bundle.num_rows
                stream.free(bundle)
        return tuple(counts)

    # -- running a part --------------------------------------------------------------

    def open(self, part: Part, ctx: DataContext | None = None) -> ShareStream:
        """Start running ``part`` (in dataset order, whatever ``preserve_order``
        says: a resumed epoch must replay the same rows)."""
        ctx = (ctx or DataContext.get_current()).copy()
        ctx.preserve_order = True
        return ShareStream(self, part, ctx)

    def epoch_remainder(self) -> tuple[int, int]:
        """(rows of an epoch no rank gets, rows some rank gets twice)."""
        have = self.rows_per_rank * self.world_size
        if self.counts is None:
            total = self.total or 0
            return max(0, total - have), max(0, have - total)
        totals = [sum(c) for c in self.counts]
        dropped = sum(max(0, c - self.rows_per_rank) for c in totals)
        padded = sum(max(0, self.rows_per_rank - c) for c in totals)
        return dropped, padded

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size}: {self.rows_per_rank} rows"


class ShareStream:
    """A running part: its blocks, exactly ``part.rows`` rows of them (see the
    module docstring); ``close`` and ``stats`` as an ``OutputStream``'s."""

    def __init__(self, share: DistributedShare, part: Part, ctx: DataContext) -> None:
        from dataflow.plan.optimizer import optimize
        from dataflow.plan.planner import execute

        self._share = share
        self._part = part
        self._ctx = ctx
        # A part with nothing to read (all padding) runs an empty plan: its stats
        # still record the share.
        plan = part.plan if part.plan is not None else InputData(blocks=())
        self._stream = execute(optimize(plan, ctx.optimizer_flags), ctx)
        self._pad: Any = None
        self._stats = self._stream.stats()
        self._stats.share = share.describe()
        self._stats.dropped_rows, self._stats.padded_rows = share.epoch_remainder()

    def iter_blocks(self) -> Iterator[pa.Table]:
        part = self._part
        try:
            yield from exact_rows(
                skip_rows(self._stream.iter_blocks(), part.skip),
                part.rows,
                lambda: self._pad_blocks(part.pad_from),
                self._note,
            )
        finally:
            self.close()

    def close(self) -> None:
        self._stream.close()
        if self._pad is not None:
            self._pad.close()

    def stats(self) -> Any:
        return self._stats

    def _pad_blocks(self, skip: int) -> Iterator[pa.Table]:
        """The dataset's rows from row ``skip`` on, over and over (as
        ``DistributedSampler`` pads with the first rows)."""
        from dataflow.plan.optimizer import optimize
        from dataflow.plan.planner import execute

        while True:
            self._pad = execute(optimize(self._share.plan, self._ctx.optimizer_flags), self._ctx)
            rows = 0
            with self._pad:
                for table in self._pad.iter_blocks():
                    rows += table.num_rows
                    if skip >= table.num_rows:
                        skip -= table.num_rows
                        continue
                    yield table.slice(skip) if skip else table
                    skip = 0
            if not rows:
                raise DataflowError(
                    f"{self._share.where}: this rank must yield {self._share.rows_per_rank} "
                    "rows so that every rank runs the same number of batches, and the "
                    "dataset has no rows to pad its share with"
                )

    def _note(self, kind: str, rows: int) -> None:
        part = self._part
        more = kind == "dropped"
        if part.expected is None or (
            part.expected > part.rows if more else part.expected < part.rows
        ):
            # Planned: the counted remainder (already in the stats), or a part of
            # a counted share, whose own count nobody knows.
            log.debug("%s: %d rows %s (epoch %d)", self._share.where, rows, kind, part.epoch)
            return
        if kind == "padded":
            self._stats.padded_rows += rows
        else:
            self._stats.dropped_rows += rows
        log.warning(
            "%s: the share of epoch %d yielded %s rows than planned (a map_batches or "
            "flat_map that changes the number of rows?); %d rows %s so that every rank "
            "runs the same number of batches",
            self._share.where,
            self._part.epoch,
            "fewer" if kind == "padded" else "more",
            rows,
            kind,
        )


def exact_rows(
    tables: Iterator[pa.Table],
    rows: int,
    pad: Callable[[], Iterator[pa.Table]],
    note: Callable[[str, int], None],
) -> Iterator[pa.Table]:
    """Exactly ``rows`` rows: ``tables`` cut after ``rows`` rows (the rest of the
    block in hand is counted, later blocks are not run), or padded from ``pad()``.
    ``note(kind, n)`` hears of each cut ("dropped") or pad ("padded").

    >>> import pyarrow as pa
    >>> t = pa.table({"x": [1, 2, 3]})
    >>> [b["x"].to_pylist() for b in exact_rows(iter([t]), 5, lambda: iter([t] * 9), print)]
    padded 2
    [[1, 2, 3], [1, 2]]
    """
    left = rows
    for table in tables:
        if table.num_rows > left:
            note("dropped", table.num_rows - left)
            if left:
                yield table.slice(0, left)
            return
        left -= table.num_rows
        yield table
    if left <= 0:
        return
    note("padded", left)
    for table in pad():
        if not left:
            return
        piece = table.slice(0, left)
        left -= piece.num_rows
        yield piece


class ShareIterator(DataIterator):
    """A ``DataIterator`` over this rank's share of every epoch (see the module
    docstring). ``state_dict()`` is the same on every rank (they run the same
    batches), so rank 0's copy in a checkpoint resumes all of them."""

    def __init__(
        self, share: DistributedShare, on_open: Callable[[ShareStream], None] | None = None
    ) -> None:
        super().__init__(self._open_share, name=share.where)
        self._share = share
        self._on_open = on_open

    @property
    def share(self) -> DistributedShare:
        return self._share

    def _shuffle_salt(self, epoch: int) -> tuple[int, ...]:
        return (1 + self._share.slot(epoch),)

    def _open_share(self) -> ShareStream:
        stream = self._share.open(self._share.part(self._pos.epoch))
        if self._on_open is not None:
            self._on_open(stream)  # e.g. Dataset.stats() shows this run
        return stream

    def iter_batches(self, **kwargs: Any) -> Iterator[Any]:
        return super().iter_batches(**self._shared_seed(kwargs))

    def iter_torch_batches(self, **kwargs: Any) -> Iterator[Any]:
        return super().iter_torch_batches(**self._shared_seed(kwargs))

    def _shared_seed(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if kwargs.get("local_shuffle_seed") is None and self._share.seed is not None:
            kwargs["local_shuffle_seed"] = self._share.seed
        return kwargs

    def state_dict(self) -> dict[str, Any]:
        share = self._share
        return {
            **super().state_dict(),
            "world_size": share.world_size,
            "rows_per_rank": share.rows_per_rank,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        share = self._share
        saved = (state.get("world_size"), state.get("rows_per_rank"))
        if saved != (share.world_size, share.rows_per_rank):
            raise ValueError(
                f"load_state_dict: the state was saved by a job of world_size={saved[0]} "
                f"with {saved[1]} rows per rank; this one has world_size="
                f"{share.world_size} and {share.rows_per_rank} rows per rank: resume with "
                "the same number of ranks and the same data"
            )
        super().load_state_dict(state)


DDP_KEYWORDS = ("rank", "world_size", "ddp_remainder")
"""Keywords of ``iter_torch_batches``/``to_torch_dataset`` that pick the share."""


def share_for(plan: LogicalOperator, kwargs: dict[str, Any], where: str) -> DistributedShare | None:
    """This process's share of ``plan`` for ``iter_torch_batches(**kwargs)`` /
    ``to_torch_dataset(**kwargs)``, or None in a single process. Pops the DDP
    keywords (``DDP_KEYWORDS``) out of ``kwargs``; the rest are the batch
    iterator's."""
    rank, world_size = resolve_world(
        kwargs.pop("rank", None), kwargs.pop("world_size", None), where
    )
    remainder = kwargs.pop("ddp_remainder", "drop")
    if world_size == 1:
        if remainder not in REMAINDERS:
            raise ValueError(f"{where}: ddp_remainder must be 'drop' or 'pad', got {remainder!r}")
        return None
    import inspect

    default_batch = inspect.signature(DataIterator.iter_torch_batches).parameters["batch_size"]
    return DistributedShare.prepare(
        plan,
        rank=rank,
        world_size=world_size,
        remainder=remainder,
        batch_size=kwargs.get("batch_size", default_batch.default),
        shuffle=bool(kwargs.get("local_shuffle_buffer_size")),
        seed=kwargs.get("local_shuffle_seed"),
        where=where,
    )


__all__ = ["DistributedShare", "ShareIterator", "resolve_world", "share_for"]
