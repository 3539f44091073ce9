"""FeedCoordinator: one pipeline's blocks shared by any number of consumers that
come and go (tf.data service's "dynamic sharding"); the core of ``Dataset.serve``.

Transport-free; ``feed_server.py`` serves it over gRPC.

State, all under one condition variable:

* ``epoch``: the pass over the pipeline now running (``make_stream()`` once per
  epoch, started by the first consumer that asks for it). Epoch ``e + 1``
  starts only when epoch ``e`` is finished: the execution is exhausted, nothing
  is waiting to be re-served and every consumer of ``e`` has left.
* ``buffer``: blocks to hand out. Re-served blocks go to its front. One
  consumer pulls from the execution at a time, outside the lock, and only when
  the buffer is empty: the pipeline runs as fast as consumers ask (back-pressure).
* per consumer: the blocks it was sent and has not acknowledged. A consumer
  acknowledges rows (counted from the start of its stream, in block order) only
  once they were handed to its user. When it leaves — done, closed early, or
  died — the unacknowledged rest (a block may be cut mid-way) goes back to the
  front of the buffer for the others: no row is lost and none is handed twice.

>>> c = FeedCoordinator(lambda: iter([pa.table({"x": [1, 2, 3]})]))
>>> who, epoch = c.join(None)
>>> c.fetch(who).num_rows, c.fetch(who)
(3, None)
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from dataflow.errors import DataflowError

log = logging.getLogger(__name__)

_WAIT_S = 0.2  # how often a waiting consumer re-checks that its caller is alive


class FeedClosedError(DataflowError):
    """The server stopped while a consumer still wanted blocks."""


class FeedUsageError(DataflowError, ValueError):
    """A consumer asked for an epoch the server does not serve (any more)."""


@dataclass
class _Consumer:
    epoch: int
    sent: deque[pa.Table] = field(default_factory=deque)  # not fully acknowledged, in order
    dropped: int = 0  # rows of the acknowledged blocks already removed from ``sent``
    acked: int = 0
    waiting: bool = False  # in fetch(), waiting for others at the end of the epoch


class FeedCoordinator:
    """Hands the blocks of ``make_stream()`` (run ``epochs`` times) to consumers."""

    def __init__(self, make_stream: Callable[[], Iterator[pa.Table]], *, epochs: int = 1) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"serve: epochs must be a positive int, got {epochs!r}")
        self.epochs = epochs
        self.reserved_rows = 0  # rows handed out again after their consumer left
        self._make_stream = make_stream
        self._cv = threading.Condition()
        self._epoch = -1
        self._stream: Iterator[pa.Table] | None = None
        self._buffer: deque[pa.Table] = deque()
        self._pulling = False
        self._exhausted = True  # as if epoch -1 ended
        self._error: BaseException | None = None
        self._consumers: dict[int, _Consumer] = {}
        self._next_id = 0
        self._closed = False

    # -- consumer API ------------------------------------------------------------

    def join(self, epoch: int | None, alive: Callable[[], bool] = lambda: True) -> tuple[int, int]:
        """Register a consumer of ``epoch`` and return ``(consumer id, epoch)``.

        ``epoch=None`` joins the running epoch, or starts the next one when it
        is finished. Asking for the next epoch waits until this one finished.
        """
        with self._cv:
            while True:
                self._raise_if_closed()
                finished = self._finished()
                want = epoch
                if want is None:
                    want = self._epoch + 1 if finished else self._epoch
                if want >= self.epochs:
                    raise FeedUsageError(
                        f"serve: this server serves {self.epochs} epoch(s) and epoch {want} was "
                        "asked for; start the server with more epochs to iterate again"
                    )
                if want == self._epoch and (epoch is not None or not finished):
                    break
                if want == self._epoch + 1 and finished:
                    self._start_epoch(want)
                    break
                if want < self._epoch or want > self._epoch + 1:
                    raise FeedUsageError(
                        f"serve: a consumer asked for epoch {want} while the server runs epoch "
                        f"{self._epoch}; consumers iterate the epochs in order"
                    )
                if not alive():
                    raise FeedClosedError("serve: consumer went away")
                self._cv.wait(_WAIT_S)
            who = self._next_id
            self._next_id += 1
            self._consumers[who] = _Consumer(want)
            return who, want

    def fetch(self, who: int, alive: Callable[[], bool] = lambda: True) -> pa.Table | None:
        """The next block for consumer ``who``, or None when its epoch has no more;
        errors of the execution are re-raised to every consumer.

        When the execution is exhausted a consumer still waits while another one
        holds unacknowledged rows and is not itself waiting here: that one may yet
        leave and have its rows served again."""
        with self._cv:
            c = self._consumers.get(who)
            try:
                while True:
                    self._raise_if_closed()
                    if self._consumers.get(who) is not c or c is None:
                        raise FeedClosedError(f"serve: consumer {who} already left")
                    if self._error is not None:
                        raise self._error
                    if c.epoch != self._epoch:
                        return None
                    if self._buffer:
                        table = self._buffer.popleft()
                        c.sent.append(table)
                        return table
                    if self._exhausted:
                        if not any(
                            o is not c and o.epoch == c.epoch and o.sent and not o.waiting
                            for o in self._consumers.values()
                        ):
                            return None
                        c.waiting = True
                        self._cv.notify_all()
                    elif not self._pulling:
                        self._pull()
                        continue
                    if not alive():
                        raise FeedClosedError("serve: consumer went away")
                    self._cv.wait(_WAIT_S)
            finally:
                if c is not None:
                    c.waiting = False

    def ack(self, who: int, rows: int) -> None:
        """Consumer ``who`` handed its first ``rows`` rows to its user."""
        with self._cv:
            c = self._consumers.get(who)
            if c is None or rows <= c.acked:
                return
            c.acked = rows
            while c.sent and c.dropped + c.sent[0].num_rows <= rows:
                c.dropped += c.sent.popleft().num_rows
            self._cv.notify_all()

    def leave(self, who: int) -> None:
        """Consumer ``who`` is gone; what it did not acknowledge is served again."""
        with self._cv:
            c = self._consumers.pop(who, None)
            if c is None:
                return
            if c.sent and c.epoch == self._epoch and self._error is None:
                rest = [c.sent[0].slice(c.acked - c.dropped), *list(c.sent)[1:]]
                rest = [t for t in rest if t.num_rows]
                self._buffer.extendleft(reversed(rest))
                rows = sum(t.num_rows for t in rest)
                self.reserved_rows += rows
                if rows:
                    log.info(
                        "serve: consumer %d left; re-serving its %d unacknowledged rows", who, rows
                    )
            self._cv.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every epoch was served (True) or ``timeout`` passed."""
        with self._cv:
            return self._cv.wait_for(
                lambda: self._closed or (self._epoch == self.epochs - 1 and self._finished()),
                timeout,
            )

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

    # -- internals (lock held) -----------------------------------------------------

    def _raise_if_closed(self) -> None:
        if self._closed:
            raise FeedClosedError("serve: the server was stopped")

    def _finished(self) -> bool:
        current = [c for c in self._consumers.values() if c.epoch == self._epoch]
        return (self._error is not None or self._exhausted) and not self._buffer and not current

    def _start_epoch(self, epoch: int) -> None:
        _close_stream(self._stream)
        self._epoch = epoch
        self._stream = None
        self._exhausted = False
        self._error = None
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
            _close_stream(self._stream)
            self._stream = None
        elif table.num_rows:
            self._buffer.append(table)


def _close_stream(stream: object) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()
