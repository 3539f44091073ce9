"""The batch service's policies: how a ``BlockDispenser`` hands out blocks.

``FirstCome`` and ``EqualSplit`` (``streaming_split``): ``n`` fixed splits.

* Epoch ``e + 1`` starts only when every split has finished epoch ``e``
  (exhausted, closed or dead): a barrier, as every rank of a training job runs
  the same epochs.
* No split gets a block before every split has begun the epoch (as in Ray
  Data), so the consumer that starts first cannot take the whole stream while
  the others are still starting up. A split still missing ``start_timeout_s``
  after the first one began fails the epoch for all, with an error naming it.
* ``FirstCome``: a consumer takes the oldest buffered block or pulls the next
  one; blocks go to whoever asks, so a slow consumer holds nobody back.
* ``EqualSplit``: no split gets ahead by more than the buffered rows can make up
  for the others (the rule of Ray's ``OutputSplitter``): a split behind the
  leader takes rows up to the leader's count; the leader takes at most
  ``(buffered - others' deficit) // live`` rows; when the buffer holds
  ``max_buffered_blocks`` the leader waits for the others. When the execution
  ends every live split is topped up to ``total // live`` rows and the remainder
  (< live rows) is dropped. A split that died or closed early leaves the equal set.
* A split whose consumer dies has what it received and did not acknowledge
  recorded in ``lost`` (nobody else gets it: the splits are fixed).

``Reserve`` (``Dataset.serve``): any number of consumers that come and go (tf.data
service's "dynamic sharding"). A consumer joins the running epoch, or starts the
next one once this one is finished: the execution is exhausted, nothing waits to
be served again and every consumer of it has left. Blocks go to whoever asks;
when a consumer leaves — done, closed early, or died — the rows it did not
acknowledge go back to the front of the buffer for the others: no row is lost
and none is handed out twice. At the end of the execution a consumer still waits
while another one holds unacknowledged rows and is not itself waiting: that one
may yet leave and have its rows served again.

>>> d = BlockDispenser(lambda: iter([pa.table({"x": [1, 2]})]), FirstCome(2))
>>> a, b = d.join(0, 0), d.join(0, 1)
>>> d.fetch(a).num_rows, d.fetch(a), d.fetch(b)
(2, None, None)
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

import pyarrow as pa

from dataflow.errors import ServiceUsageError, SplitStartTimeoutError
from dataflow.service.dispenser import BlockDispenser, Ticket

log = logging.getLogger(__name__)


@dataclass
class LostBlocks:
    """What a split's consumer that died had received but not consumed."""

    split: int
    epoch: int
    blocks: int
    rows: int


@dataclass
class _Slot:
    status: str = "done"  # waiting | active | done | dead (``done``: as if epoch -1 ended)
    rows: int = 0


class FirstCome:
    """``n`` fixed splits; blocks go to whichever split asks (module docstring)."""

    name = "streaming_split"

    def __init__(self, n: int, *, start_timeout_s: float = 600.0) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"streaming_split: n must be a positive int, got {n!r}")
        self.n = n
        self.start_timeout_s = start_timeout_s
        self.lost: list[LostBlocks] = []
        self.dropped_rows = 0  # EqualSplit: remainders of the epochs
        self._slots = [_Slot() for _ in range(n)]
        self._started = False  # every split has begun this epoch
        self._first_begin: tuple[int, float] | None = None  # (split, monotonic time)

    def delivered_rows(self) -> list[int]:
        """Rows handed to each split in the current epoch."""
        return [s.rows for s in self._slots]

    # -- Policy ----------------------------------------------------------------

    def admit(self, d: BlockDispenser, epoch: int | None, split: int | None) -> int | None:
        if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split < self.n:
            raise ServiceUsageError(
                f"streaming_split: split index {split!r} out of range 0..{self.n - 1}"
            )
        if epoch is None:
            raise ServiceUsageError(f"streaming_split: split {split} did not name its epoch")
        if epoch == d.epoch + 1 and all(s.status in ("done", "dead") for s in self._slots):
            d.start_epoch(epoch)
        elif epoch != d.epoch:
            if epoch == d.epoch + 1:
                return None  # the others are still in the current epoch
            raise ServiceUsageError(
                f"streaming_split: split {split} asked for epoch {epoch} while the "
                f"coordinator runs epoch {d.epoch}; each split must iterate the "
                "same epochs in order"
            )
        slot = self._slots[split]
        if slot.status in ("done", "dead"):
            raise ServiceUsageError(
                f"streaming_split: split {split} already finished epoch {epoch}; "
                "iterate it again only after every split finished this epoch"
            )
        slot.status = "active"
        if self._first_begin is None:
            self._first_begin = (split, time.monotonic())
        if all(s.status != "waiting" for s in self._slots):
            self._started = True
        return epoch

    def take(self, d: BlockDispenser, t: Ticket) -> pa.Table | None:
        if t.epoch != d.epoch:
            raise ServiceUsageError(
                f"streaming_split: split {t.split} is not consuming epoch {t.epoch}"
            )
        if not self._started:
            self._check_start_timeout(d)
            return None
        table = self._take(d, t)
        if table is not None:
            self._slots[t.split].rows += table.num_rows
        return table

    def may_pull(self, d: BlockDispenser, t: Ticket) -> bool:
        return self._started and not d.exhausted

    def share_done(self, d: BlockDispenser, t: Ticket) -> bool:
        return self._started and d.exhausted

    def exhausted(self, d: BlockDispenser) -> None:
        pass

    def left(self, d: BlockDispenser, t: Ticket, clean: bool) -> None:
        slot = self._slots[t.split]
        if t.epoch != d.epoch or slot.status != "active":
            return
        if clean or t.ended:
            slot.status = "done"
            return
        slot.status = "dead"
        unacked = t.unacked()
        lost = LostBlocks(t.split, t.epoch, len(unacked), sum(b.num_rows for b in unacked))
        self.lost.append(lost)
        log.warning(
            "streaming_split: the consumer of split %d died in epoch %d; %d block(s) "
            "(%d rows) it had received were not consumed",
            t.split,
            t.epoch,
            lost.blocks,
            lost.rows,
        )

    def reset(self, d: BlockDispenser) -> None:
        self._slots = [_Slot(status="waiting") for _ in range(self.n)]
        self._started = False
        self._first_begin = None

    def served_all(self, d: BlockDispenser) -> bool:
        return False  # a split service runs epochs for as long as its driver lives

    # -- internals ---------------------------------------------------------------

    def _take(self, d: BlockDispenser, t: Ticket) -> pa.Table | None:
        return d.buffer.popleft() if d.buffer else None

    def _live(self) -> list[_Slot]:
        """Splits still taking part in this epoch (a closed or dead one no longer counts)."""
        return [s for s in self._slots if s.status in ("waiting", "active")]

    def _check_start_timeout(self, d: BlockDispenser) -> None:
        """Fail the epoch when a split is missing ``start_timeout_s`` after the first began."""
        first, since = self._first_begin
        if time.monotonic() - since < self.start_timeout_s:
            return
        missing = [i for i, s in enumerate(self._slots) if s.status == "waiting"]
        names = ", ".join(map(str, missing))
        d.error = SplitStartTimeoutError(
            f"streaming_split: split{'s' if len(missing) > 1 else ''} {names} of {self.n} did "
            f"not start epoch {d.epoch} within {self.start_timeout_s:g} s of split {first}; "
            "an epoch begins only when every split asks for data, so iterate all of them "
            "at once (one consumer per split), or raise DataContext.split_start_timeout_s "
            "if some start later"
        )
        d.notify()
        raise d.error


class EqualSplit(FirstCome):
    """``n`` fixed splits that all get the same number of rows (module docstring)."""

    def __init__(
        self, n: int, *, max_buffered_blocks: int = 8, start_timeout_s: float = 600.0
    ) -> None:
        super().__init__(n, start_timeout_s=start_timeout_s)
        self.max_buffered_blocks = max(1, max_buffered_blocks)
        self._shares: list[deque[pa.Table]] | None = None  # after exhaustion

    def may_pull(self, d: BlockDispenser, t: Ticket) -> bool:
        return super().may_pull(d, t) and not self._must_wait(d, t.split)

    def exhausted(self, d: BlockDispenser) -> None:
        """Top every live split up to ``total // live`` rows; drop the remainder."""
        live = [i for i, s in enumerate(self._slots) if s.status in ("waiting", "active")]
        total = sum(self._slots[i].rows for i in live) + sum(t.num_rows for t in d.buffer)
        target = total // len(live) if live else 0
        self._shares = [deque() for _ in range(self.n)]
        for i in live:
            need = target - self._slots[i].rows
            while need > 0 and d.buffer:
                piece = _pop_rows(d.buffer, need)
                self._shares[i].append(piece)
                need -= piece.num_rows
        self.dropped_rows += sum(t.num_rows for t in d.buffer)
        d.buffer.clear()

    def reset(self, d: BlockDispenser) -> None:
        super().reset(d)
        self._shares = None

    def _take(self, d: BlockDispenser, t: Ticket) -> pa.Table | None:
        """The most rows split ``t.split`` may take now, or None."""
        if self._shares is not None:
            share = self._shares[t.split]
            return share.popleft() if share else None
        live = self._live()
        lead = max(s.rows for s in live)
        mine = self._slots[t.split].rows
        if mine < lead:
            allowance = lead - mine
        else:
            deficit = sum(lead - s.rows for s in live)
            allowance = (sum(b.num_rows for b in d.buffer) - deficit) // len(live)
        if allowance <= 0 or not d.buffer:
            return None
        d.notify()  # the others' allowances change with this split's rows
        return _pop_rows(d.buffer, allowance)

    def _must_wait(self, d: BlockDispenser, split: int) -> bool:
        """A leader waits instead of pulling when the buffer is full."""
        live = self._live()
        lead = max(s.rows for s in live)
        behind = any(s.rows < lead for s in live)
        return (
            behind and self._slots[split].rows >= lead and len(d.buffer) >= self.max_buffered_blocks
        )


class Reserve:
    """Consumers that come and go; what one did not acknowledge is served again
    (module docstring). ``epochs`` passes over the execution are served."""

    name = "serve"

    def __init__(self, *, epochs: int = 1) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"serve: epochs must be a positive int, got {epochs!r}")
        self.epochs = epochs
        self.reserved_rows = 0  # rows handed out again after their consumer left

    def admit(self, d: BlockDispenser, epoch: int | None, split: int | None) -> int | None:
        finished = self._finished(d)
        want = epoch
        if want is None:
            want = d.epoch + 1 if finished else d.epoch
        if want >= self.epochs:
            raise ServiceUsageError(
                f"serve: this server serves {self.epochs} epoch(s) and epoch {want} was "
                "asked for; start the server with more epochs to iterate again"
            )
        if want == d.epoch and (epoch is not None or not finished):
            return want
        if want == d.epoch + 1 and finished:
            d.start_epoch(want)
            return want
        if want < d.epoch or want > d.epoch + 1:
            raise ServiceUsageError(
                f"serve: a consumer asked for epoch {want} while the server runs epoch "
                f"{d.epoch}; consumers iterate the epochs in order"
            )
        return None  # the next epoch, once this one is finished

    def take(self, d: BlockDispenser, t: Ticket) -> pa.Table | None:
        return d.buffer.popleft() if d.buffer and t.epoch == d.epoch else None

    def may_pull(self, d: BlockDispenser, t: Ticket) -> bool:
        return not d.exhausted

    def share_done(self, d: BlockDispenser, t: Ticket) -> bool:
        if t.epoch != d.epoch:
            return True
        if not d.exhausted:
            return False
        if not any(
            o is not t and o.epoch == t.epoch and o.sent and not o.waiting
            for o in d.tickets.values()
        ):
            return True
        if not t.waiting:  # another holds rows it may yet give back: wait for it
            t.waiting = True
            d.notify()
        return False

    def exhausted(self, d: BlockDispenser) -> None:
        pass

    def left(self, d: BlockDispenser, t: Ticket, clean: bool) -> None:
        if t.epoch != d.epoch or d.error is not None:
            return
        rest = t.unacked()
        d.buffer.extendleft(reversed(rest))
        rows = sum(b.num_rows for b in rest)
        self.reserved_rows += rows
        if rows:
            log.info("serve: consumer %d left; re-serving its %d unacknowledged rows", t.id, rows)

    def reset(self, d: BlockDispenser) -> None:
        pass

    def served_all(self, d: BlockDispenser) -> bool:
        return d.epoch == self.epochs - 1 and self._finished(d)

    def _finished(self, d: BlockDispenser) -> bool:
        current = any(t.epoch == d.epoch for t in d.tickets.values())
        return (d.error is not None or d.exhausted) and not d.buffer and not current


def _pop_rows(buffer: deque[pa.Table], n: int) -> pa.Table:
    """At most ``n`` rows from the front of ``buffer`` (the head block cut if needed)."""
    head = buffer.popleft()
    if head.num_rows > n:
        buffer.appendleft(head.slice(n))
        head = head.slice(0, n)
    return head
