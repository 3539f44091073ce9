"""BlockDispenser: one execution's blocks handed to consumers as they ask, by a policy.

Transport-free core of the batch service (``server.py`` serves it over gRPC);
``streaming_split`` and ``Dataset.serve`` differ only in their ``Policy``
(``policies.py``): fixed splits, first come or equal, that record what a dead
consumer lost, or consumers that come and go and have what they did not
acknowledge served again.

State, all under one condition variable that the policy's hooks run under:

* ``epoch``: the pass over the execution now running (``make_stream()`` is
  called lazily, once per epoch, by the first consumer that needs a block). The
  policy says when a consumer may join which epoch and when the next one starts.
* ``buffer``: blocks pulled from the execution and not handed out yet. One
  consumer pulls at a time, outside the lock (``pulling``), so a slow execution
  never blocks consumers served from the buffer; it pulls only when the policy
  lets it (the buffer empty, or equal splits' run-ahead bound), so the execution
  runs as fast as consumers ask (back-pressure).
* ``exhausted``, ``error``: the execution ended, or failed (re-raised to every
  consumer).
* ``tickets``: one per consumer in the service, with the blocks it was sent and
  has not acknowledged. A consumer acknowledges rows, counted from the start of
  its stream in block order, once they were consumed; when it leaves — done,
  closed early, or died — the policy decides what its unacknowledged rest is.

>>> from dataflow.service.policies import Reserve
>>> d = BlockDispenser(lambda: iter([pa.table({"x": [1, 2, 3]})]), Reserve())
>>> t = d.join(None)
>>> d.fetch(t).num_rows, d.fetch(t)
(3, None)
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from dataflow.errors import ServiceClosedError

_WAIT_S = 0.2  # how often a waiting consumer re-checks that its caller is alive


def _always() -> bool:
    return True


@dataclass(eq=False)
class Ticket:
    """One consumer's part of one epoch."""

    id: int
    epoch: int
    split: int | None
    sent: deque[pa.Table] = field(default_factory=deque)  # not fully acknowledged, in order
    dropped: int = 0  # rows of the acknowledged blocks already removed from ``sent``
    acked: int = 0
    waiting: bool = False  # in fetch(), waiting for others at the end of the epoch
    ended: bool = False  # fetch() told it its share of the epoch is exhausted

    def unacked(self) -> list[pa.Table]:
        """The rows sent and not acknowledged (the first block may be cut)."""
        if not self.sent:
            return []
        rest = [self.sent[0].slice(self.acked - self.dropped), *list(self.sent)[1:]]
        return [t for t in rest if t.num_rows]


class Policy(Protocol):
    """How a ``BlockDispenser`` hands out blocks. Every hook runs under the
    dispenser's lock and may read and change its state."""

    name: str  # the user-facing feature, for messages ("streaming_split", "serve")

    def admit(self, d: BlockDispenser, epoch: int | None, split: int | None) -> int | None:
        """The epoch a consumer asking for ``epoch``/``split`` joins now
        (``d.start_epoch`` it when due), None to wait; ``ServiceUsageError`` if never."""

    def take(self, d: BlockDispenser, t: Ticket) -> pa.Table | None:
        """A block for ``t`` from ``d.buffer``, or None."""

    def may_pull(self, d: BlockDispenser, t: Ticket) -> bool:
        """Whether ``t`` may pull the next block from the execution now."""

    def share_done(self, d: BlockDispenser, t: Ticket) -> bool:
        """``take`` gave nothing: whether ``t``'s share of the epoch is exhausted."""

    def exhausted(self, d: BlockDispenser) -> None:
        """The execution of this epoch ended (``d.buffer`` holds what is left)."""

    def left(self, d: BlockDispenser, t: Ticket, clean: bool) -> None:
        """``t`` left: on purpose (``clean``) or because its consumer died."""

    def reset(self, d: BlockDispenser) -> None:
        """``d.epoch`` just started."""

    def served_all(self, d: BlockDispenser) -> bool:
        """Whether every epoch this service runs is over."""


class BlockDispenser:
    """Hands the blocks of ``make_stream()`` to consumers by ``policy`` (see the
    module docstring). ``fetch`` returns the next table for a consumer, or None
    when its share of the epoch is exhausted; errors of the execution are
    re-raised to every consumer."""

    def __init__(self, make_stream: Callable[[], Iterator[pa.Table]], policy: Policy) -> None:
        self.policy = policy
        self.epoch = -1
        self.buffer: deque[pa.Table] = deque()
        self.exhausted = True  # as if epoch -1 ended
        self.error: BaseException | None = None
        self.tickets: dict[int, Ticket] = {}
        self._make_stream = make_stream
        self._cv = threading.Condition()
        self._stream: Iterator[pa.Table] | None = None
        self._pulling = False
        self._closed = False
        self._ids = itertools.count()

    # -- consumer API ------------------------------------------------------------

    def join(
        self, epoch: int | None, split: int | None = None, alive: Callable[[], bool] = _always
    ) -> Ticket:
        """A ticket for a consumer of ``epoch`` (None: as the policy decides) and
        ``split``; waits while the policy says so (e.g. for an epoch barrier)."""
        with self._cv:
            while True:
                self._raise_if_closed()
                joined = self.policy.admit(self, epoch, split)
                if joined is not None:
                    break
                if not alive():
                    raise ServiceClosedError(f"{self.policy.name}: the consumer went away")
                self._cv.wait(_WAIT_S)
            ticket = Ticket(next(self._ids), joined, split)
            self.tickets[ticket.id] = ticket
            self._cv.notify_all()
            return ticket

    def fetch(self, t: Ticket, alive: Callable[[], bool] = _always) -> pa.Table | None:
        """The next block for ``t``, or None when its share of the epoch is exhausted."""
        with self._cv:
            try:
                while True:
                    self._raise_if_closed()
                    if self.tickets.get(t.id) is not t:
                        raise ServiceClosedError(
                            f"{self.policy.name}: consumer {t.id} already left the epoch"
                        )
                    if self.error is not None:
                        raise self.error
                    table = self.policy.take(self, t)
                    if table is not None:
                        t.sent.append(table)
                        return table
                    if self.policy.share_done(self, t):
                        t.ended = True
                        return None
                    if not self._pulling and self.policy.may_pull(self, t):
                        self._pull()
                        continue
                    if not alive():
                        raise ServiceClosedError(f"{self.policy.name}: the consumer went away")
                    self._cv.wait(_WAIT_S)
            finally:
                t.waiting = False

    def ack(self, t: Ticket, rows: int) -> None:
        """``t``'s consumer consumed the first ``rows`` rows of its stream."""
        with self._cv:
            if rows <= t.acked:
                return
            t.acked = rows
            while t.sent and t.dropped + t.sent[0].num_rows <= rows:
                t.dropped += t.sent.popleft().num_rows
            if not t.sent:  # it holds nothing now: a consumer may have waited for that
                self._cv.notify_all()

    def leave(self, t: Ticket, *, clean: bool = True) -> None:
        """``t``'s consumer stopped, on purpose (``clean``) or by dying (idempotent)."""
        with self._cv:
            if self.tickets.pop(t.id, None) is None:
                return
            self.policy.left(self, t, clean)
            self._cv.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every epoch was served (True) or ``timeout`` passed."""
        with self._cv:
            return self._cv.wait_for(lambda: self._closed or self.policy.served_all(self), timeout)

    def close(self) -> None:
        """Stop the execution and wake every waiting consumer (idempotent)."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            stream, self._stream = self._stream, None
            self.buffer.clear()
            self._cv.notify_all()
        _close_stream(stream)

    # -- for policies (lock held) --------------------------------------------------

    def start_epoch(self, epoch: int) -> None:
        _close_stream(self._stream)
        self.epoch = epoch
        self._stream = None
        self.buffer.clear()
        self.exhausted = False
        self.error = None
        self.policy.reset(self)
        self._cv.notify_all()

    def notify(self) -> None:
        self._cv.notify_all()

    # -- internals (lock held) -----------------------------------------------------

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise ServiceClosedError(f"{self.policy.name}: the server was stopped")

    def _pull(self) -> None:
        """Pull one block from the execution with the lock released."""
        self._pulling = True
        epoch = self.epoch
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
        if epoch != self.epoch or self._closed:
            return
        if error is not None:
            self.error = error
        elif table is None:
            self.exhausted = True
            _close_stream(self._stream)
            self._stream = None
            self.policy.exhausted(self)
        elif table.num_rows:
            self.buffer.append(table)


def _close_stream(stream: object) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()
