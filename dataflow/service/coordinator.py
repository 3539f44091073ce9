"""SplitCoordinator: one execution, its blocks handed to ``n`` consumers as they ask.

Transport-free core of ``streaming_split``; ``server.py`` serves it over gRPC.

State, all under one condition variable:

* ``epoch``: the execution now running (``make_stream()`` is called once per
  epoch, lazily, by the first consumer that asks). Epoch ``e + 1`` starts only
  when every split has finished epoch ``e`` (exhausted, closed or dead): a
  barrier, as every rank of a training job runs the same epochs.
* ``started``: whether every split has begun this epoch. No split gets a block
  before then (as in Ray Data), so the consumer that starts first cannot take
  the whole stream while the others are still starting up. A split still
  missing ``start_timeout_s`` after the first one began fails the epoch for
  all, with an error naming it.
* ``buffer``: blocks pulled from the execution and not yet handed out. One
  consumer pulls at a time, outside the lock (``pulling``), so a slow
  execution never blocks consumers served from the buffer.
* per split: rows delivered this epoch, the row counts of the blocks it got,
  how many of them it acknowledged as consumed, and its status.

Policy. Without ``equal`` a consumer takes the oldest buffered block or pulls
the next one: blocks go to whoever asks, so a slow consumer holds nobody back.
With ``equal`` the coordinator never lets a split get ahead by more than the
buffered rows can make up for the others (the rule Ray's ``OutputSplitter``
uses): a split behind the leader takes rows up to the leader's count; the
leader takes at most ``(buffered - others' deficit) // live`` rows; when the
buffer holds ``max_buffered_blocks`` the leader waits for the others. When the
execution ends every live split is topped up to ``total // live`` rows and the
remainder (< live rows) is dropped. A split that died or closed early leaves the equal set.

>>> c = SplitCoordinator(lambda: iter([pa.table({"x": [1, 2]})]), 2)
>>> c.begin(0, 0), c.begin(1, 0)  # split 0 would wait in fetch for split 1 to begin
(0, 0)
>>> c.fetch(0, 0).num_rows, c.fetch(0, 0), c.fetch(1, 0)
(2, None, None)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from dataflow.errors import DataflowError

log = logging.getLogger(__name__)

_WAIT_S = 0.2  # how often a waiting consumer re-checks that its caller is alive


class SplitClosedError(DataflowError):
    """The coordinator was shut down while a consumer still wanted blocks."""


class SplitUsageError(DataflowError, ValueError):
    """A consumer asked for something out of order (wrong split, epoch or state)."""


class SplitStartTimeoutError(DataflowError, TimeoutError):
    """Some split did not begin an epoch in time, so the epoch could not start."""


@dataclass
class LostBlocks:
    """What a consumer that died had received but not consumed."""

    split: int
    epoch: int
    blocks: int
    rows: int


@dataclass
class _Split:
    status: str = "waiting"  # waiting | active | done | dead
    rows: int = 0
    block_rows: list[int] = field(default_factory=list)


class SplitCoordinator:
    """Hands the blocks of ``make_stream()`` to ``n`` splits (see module docstring).

    ``fetch`` returns the next table for a split, or None when its share of the
    epoch is exhausted; errors of the execution are re-raised to every split.
    """

    def __init__(
        self,
        make_stream: Callable[[], Iterator[pa.Table]],
        n: int,
        *,
        equal: bool = False,
        max_buffered_blocks: int = 8,
        start_timeout_s: float = 600.0,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"streaming_split: n must be a positive int, got {n!r}")
        self.n = n
        self.equal = equal
        self.max_buffered_blocks = max(1, max_buffered_blocks)
        self.start_timeout_s = start_timeout_s
        self.lost: list[LostBlocks] = []
        self.dropped_rows = 0
        self._make_stream = make_stream
        self._cv = threading.Condition()
        self._epoch = -1
        self._stream: Iterator[pa.Table] | None = None
        self._buffer: deque[pa.Table] = deque()
        self._pulling = False
        self._exhausted = False
        self._error: BaseException | None = None
        self._shares: list[deque[pa.Table]] | None = None  # equal mode, after exhaustion
        self._splits = [_Split(status="done") for _ in range(self.n)]  # as if epoch -1 ended
        self._started = False  # every split has begun this epoch
        self._first_begin: tuple[int, float] | None = None  # (split, monotonic time)
        self._closed = False

    # -- consumer API ------------------------------------------------------------

    def begin(self, split: int, epoch: int, alive: Callable[[], bool] = lambda: True) -> int:
        """Register ``split`` as consuming ``epoch`` and return it; waits for the
        others to finish the previous epoch (the epoch barrier)."""
        with self._cv:
            self._check_split(split)
            while True:
                self._raise_if_closed()
                if epoch == self._epoch:
                    break
                if epoch == self._epoch + 1 and all(
                    s.status in ("done", "dead") for s in self._splits
                ):
                    self._start_epoch(epoch)
                    break
                if epoch != self._epoch + 1:
                    raise SplitUsageError(
                        f"streaming_split: split {split} asked for epoch {epoch} while the "
                        f"coordinator runs epoch {self._epoch}; each split must iterate the "
                        "same epochs in order"
                    )
                if not alive():
                    raise SplitClosedError(f"split {split}: consumer went away")
                self._cv.wait(_WAIT_S)
            s = self._splits[split]
            if s.status in ("done", "dead"):
                raise SplitUsageError(
                    f"streaming_split: split {split} already finished epoch {epoch}; "
                    "iterate it again only after every split finished this epoch"
                )
            s.status = "active"
            if self._first_begin is None:
                self._first_begin = (split, time.monotonic())
            if all(s.status != "waiting" for s in self._splits):
                self._started = True
                self._cv.notify_all()
            return epoch

    def fetch(
        self, split: int, epoch: int, alive: Callable[[], bool] = lambda: True
    ) -> pa.Table | None:
        """The next block for ``split`` in ``epoch``, or None when it has no more."""
        with self._cv:
            s = self._splits[split]
            if epoch != self._epoch or s.status != "active":
                raise SplitUsageError(
                    f"streaming_split: split {split} is not consuming epoch {epoch}"
                )
            while True:
                self._raise_if_closed()
                if self._error is not None:
                    raise self._error
                if not self._started:
                    self._check_start_timeout()
                    if not alive():
                        raise SplitClosedError(f"split {split}: consumer went away")
                    self._cv.wait(_WAIT_S)
                    continue
                table = self._take(split) if self.equal else self._take_any()
                if table is not None:
                    s.rows += table.num_rows
                    s.block_rows.append(table.num_rows)
                    self._cv.notify_all()
                    return table
                if self._exhausted and (not self.equal or self._shares is not None):
                    return None
                if self._pulling or (self.equal and self._must_wait(split)):
                    if not alive():
                        raise SplitClosedError(f"split {split}: consumer went away")
                    self._cv.wait(_WAIT_S)
                    continue
                self._pull()

    def finish(self, split: int, epoch: int, *, consumed: int | None = None) -> None:
        """``split`` stops consuming ``epoch``. ``consumed=None`` means it closed
        cleanly; an int means it died having consumed that many of its blocks, and
        the rest are recorded in ``lost``."""
        with self._cv:
            s = self._splits[split]
            if epoch != self._epoch or s.status != "active":
                return
            if consumed is None:
                s.status = "done"
            else:
                s.status = "dead"
                unconsumed = s.block_rows[consumed:]
                lost = LostBlocks(split, epoch, len(unconsumed), sum(unconsumed))
                self.lost.append(lost)
                log.warning(
                    "streaming_split: the consumer of split %d died in epoch %d; %d block(s) "
                    "(%d rows) it had received were not consumed",
                    split,
                    epoch,
                    lost.blocks,
                    lost.rows,
                )
            self._cv.notify_all()

    def close(self) -> None:
        """Stop the execution and wake every waiting consumer (idempotent)."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            stream, self._stream = self._stream, None
            self._buffer.clear()
            self._cv.notify_all()
        _close_stream(stream)

    @property
    def epoch(self) -> int:
        return self._epoch

    def delivered_rows(self) -> list[int]:
        """Rows handed to each split in the current epoch."""
        with self._cv:
            return [s.rows for s in self._splits]

    # -- internals (lock held) -----------------------------------------------------

    def _check_split(self, split: int) -> None:
        if not isinstance(split, int) or not 0 <= split < self.n:
            raise SplitUsageError(
                f"streaming_split: split index {split!r} out of range 0..{self.n - 1}"
            )

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise SplitClosedError("streaming_split: the coordinator was shut down")

    def _check_start_timeout(self) -> None:
        """Fail the epoch when a split is missing ``start_timeout_s`` after the first began."""
        first, since = self._first_begin
        waited = time.monotonic() - since
        if waited < self.start_timeout_s:
            return
        missing = [i for i, s in enumerate(self._splits) if s.status == "waiting"]
        names = ", ".join(map(str, missing))
        self._error = SplitStartTimeoutError(
            f"streaming_split: split{'s' if len(missing) > 1 else ''} {names} of {self.n} did "
            f"not start epoch {self._epoch} within {self.start_timeout_s:g} s of split {first}; "
            "an epoch begins only when every split asks for data, so iterate all of them "
            "at once (one consumer per split), or raise DataContext.split_start_timeout_s "
            "if some start later"
        )
        self._cv.notify_all()
        raise self._error

    def _start_epoch(self, epoch: int) -> None:
        _close_stream(self._stream)
        self._epoch = epoch
        self._started = False
        self._first_begin = None
        self._stream = None
        self._buffer.clear()
        self._exhausted = False
        self._error = None
        self._shares = None
        self._splits = [_Split() for _ in range(self.n)]
        self._cv.notify_all()

    def _pull(self) -> None:
        """Pull one block from the execution with the lock released."""
        self._pulling = True
        epoch = self._epoch
        self._cv.release()
        table: pa.Table | None = None
        error: BaseException | None = None
        try:
            if self._stream is None:
                self._stream = iter(self._make_stream())
            table = next(self._stream, None)
        except BaseException as e:  # noqa: BLE001 - re-raised to every consumer
            error = e
        finally:
            self._cv.acquire()
            self._pulling = False
            self._cv.notify_all()
        if epoch != self._epoch or self._closed:
            return
        if error is not None:
            self._error = error
        elif table is None:
            self._exhausted = True
            if self.equal:
                self._share_out()
        elif table.num_rows:
            self._buffer.append(table)

    def _take_any(self) -> pa.Table | None:
        return self._buffer.popleft() if self._buffer else None

    def _live(self) -> list[_Split]:
        """Splits still taking part in this epoch (a closed or dead one no longer counts)."""
        return [s for s in self._splits if s.status in ("waiting", "active")]

    def _take(self, split: int) -> pa.Table | None:
        """Equal mode: the most rows ``split`` may take now, or None."""
        if self._shares is not None:
            share = self._shares[split]
            return share.popleft() if share else None
        live = self._live()
        lead = max(s.rows for s in live)
        mine = self._splits[split].rows
        buffered = sum(t.num_rows for t in self._buffer)
        if mine < lead:
            allowance = lead - mine
        else:
            deficit = sum(lead - s.rows for s in live)
            allowance = (buffered - deficit) // len(live)
        if allowance <= 0 or not self._buffer:
            return None
        return self._pop_rows(allowance)

    def _must_wait(self, split: int) -> bool:
        """Equal mode: a leader waits instead of pulling when the buffer is full."""
        if self._exhausted:
            return False
        live = self._live()
        lead = max(s.rows for s in live)
        behind = any(s.rows < lead for s in live)
        return (
            behind
            and self._splits[split].rows >= lead
            and len(self._buffer) >= self.max_buffered_blocks
        )

    def _pop_rows(self, n: int) -> pa.Table:
        head = self._buffer.popleft()
        if head.num_rows > n:
            self._buffer.appendleft(head.slice(n))
            head = head.slice(0, n)
        return head

    def _share_out(self) -> None:
        """The execution ended: top every live split up to ``total // live`` rows."""
        live = [i for i, s in enumerate(self._splits) if s.status in ("waiting", "active")]
        total = sum(self._splits[i].rows for i in live) + sum(t.num_rows for t in self._buffer)
        target = total // len(live) if live else 0
        self._shares = [deque() for _ in range(self.n)]
        for i in live:
            need = target - self._splits[i].rows
            while need > 0 and self._buffer:
                piece = self._pop_rows(need)
                self._shares[i].append(piece)
                need -= piece.num_rows
        self.dropped_rows += sum(t.num_rows for t in self._buffer)
        self._buffer.clear()


def _close_stream(stream: object) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()
