"""The consumer side of ``Dataset.serve``: ``connect(address, token=...)`` returns a
``DataIterator`` whose batches come from a server in another process or host.

Several consumers share the served stream: each block goes to one of them. A
consumer acknowledges rows as its user receives them; whatever it was sent and
did not hand out when it stops (or dies) is served to the others.

>>> it = connect("10.0.0.5:7000", token="s3cret")             # doctest: +SKIP
>>> for batch in it.iter_torch_batches(batch_size=4096):      # doctest: +SKIP
...     train_step(batch)
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from dataflow.errors import DataflowError
from dataflow.iterators import DataIterator
from dataflow.service import protocol


def connect(address: str, *, token: str | None = None, prefetch_blocks: int = 2) -> DataIterator:
    """An iterator over the batches served at ``address`` by ``Dataset.serve`` or
    ``dataflow serve``; ``token`` defaults to ``$DATAFLOW_SERVICE_TOKEN``.

    The first iteration joins the epoch the server is running; each further one
    asks for the next epoch. ``prefetch_blocks`` blocks are requested ahead.

    >>> it = df.connect("127.0.0.1:7000")                    # doctest: +SKIP
    >>> sum(len(b["id"]) for b in it.iter_batches())         # doctest: +SKIP
    1000
    """
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"connect: address must be 'host:port', got {address!r}")
    if isinstance(prefetch_blocks, bool) or not isinstance(prefetch_blocks, int):
        raise ValueError(f"connect: prefetch_blocks must be an int, got {prefetch_blocks!r}")
    token = token if token is not None else os.environ.get(protocol.TOKEN_ENV) or None
    return ServedIterator(_FeedOpener(address, token, max(1, prefetch_blocks)), address)


class ServedIterator(DataIterator):
    """A ``DataIterator`` over a served stream: it acknowledges rows to the server
    as they are handed out. With a local shuffle buffer rows leave out of block
    order, so they are acknowledged when the server ends the stream: a consumer
    that dies mid-epoch then has all it received served again (at-least-once).

    ``load_state_dict`` is refused: the server, not the consumer, knows which rows
    are left; a restarted consumer simply connects again.
    """

    def __init__(self, opener: _FeedOpener, address: str) -> None:
        super().__init__(opener, name=f"served by {address}")
        self._opener = opener

    def iter_blocks(self) -> Iterator[pa.Table]:
        stream = self._opener()
        rows = 0
        try:
            for table in stream.iter_blocks():
                rows += table.num_rows
                stream.ack(rows)
                yield table
        finally:
            stream.close()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise ValueError(
            "load_state_dict: a served iterator cannot resume locally; the server re-serves "
            "what a stopped consumer did not acknowledge, so connect() again instead"
        )

    def _iter_formatted(
        self,
        format_fn: Any,
        batch_size: int | None,
        drop_last: bool,
        prefetch_batches: int,
        shuffle_buffer_size: int | None = None,
        shuffle_seed: int | None = None,
    ) -> Iterator[Any]:
        # drop_last is applied here, after the short batch was acknowledged: rows
        # left out on purpose must not be served to another consumer.
        self._opener.ack_at_end = bool(shuffle_buffer_size)
        batches = super()._iter_formatted(
            format_fn, batch_size, False, prefetch_batches, shuffle_buffer_size, shuffle_seed
        )
        handed = 0
        with contextlib.closing(batches):
            for batch in batches:
                rows, handed = self._pos.rows - handed, self._pos.rows
                if not shuffle_buffer_size:
                    self._opener.stream.ack(handed)
                if drop_last and batch_size is not None and rows < batch_size:
                    return
                yield batch


class _FeedOpener:
    """``open_stream`` for a ``ServedIterator``: each call opens the next epoch."""

    def __init__(self, address: str, token: str | None, prefetch: int) -> None:
        self.address = address
        self.token = token
        self.prefetch = prefetch
        self.epoch: int | None = None  # the last epoch opened
        self.stream: FeedStream | None = None
        self.ack_at_end = False  # a local shuffle hands rows out of block order
        self._channel: Any = None  # a grpc.Channel, opened in the iterating process

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_channel": None, "stream": None}

    def __call__(self) -> FeedStream:
        import grpc  # not at import time: `import dataflow` stays light

        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address, options=protocol.CHANNEL_OPTIONS)
        want = None if self.epoch is None else self.epoch + 1
        self.stream = FeedStream(self, self._channel, want)
        return self.stream


class FeedStream:
    """One epoch of a served stream: ``iter_blocks()``, ``ack(rows)`` and a
    thread-safe ``close()`` (the shape of the executor's ``OutputStream``)."""

    def __init__(self, opener: _FeedOpener, channel: Any, epoch: int | None) -> None:
        self._opener = opener
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._outbox.put(protocol.encode_request(epoch=epoch, credit=opener.prefetch))
        metadata = [(protocol.TOKEN_KEY, opener.token)] if opener.token else None
        self._call = channel.stream_stream(protocol.FEED_FULL_METHOD)(
            iter(self._outbox.get, None), metadata=metadata
        )
        self._lock = threading.Lock()
        self._acked = 0
        self._received = 0
        self._finished = False

    def iter_blocks(self) -> Iterator[pa.Table]:
        import grpc

        try:
            self._note_epoch()
            for raw in self._call:
                if raw == protocol.END:
                    if self._opener.ack_at_end:
                        self.ack(self._received)
                    return
                table = protocol.decode_reply(raw)
                self._received += table.num_rows
                self._send(credit=1)
                yield table
            if not self._finished:
                # Only a server that stopped this consumer ends without b"X": what
                # it sent and was not acknowledged may already go to others.
                raise DataflowError(
                    f"connect: {self._opener.address} ended the stream before the end of "
                    "the epoch (server stopped?)"
                )
        except grpc.RpcError as e:
            if self._finished and e.code() == grpc.StatusCode.CANCELLED:
                return  # closed by us
            raise DataflowError(
                f"connect: the stream from {self._opener.address} broke: "
                f"{e.code().name}: {e.details()}"
            ) from None

    def ack(self, rows: int) -> None:
        """The first ``rows`` rows of this stream reached the user."""
        with self._lock:
            if rows > self._acked and not self._finished:
                self._acked = rows
                self._outbox.put(protocol.encode_request(ack=rows))

    def close(self) -> None:
        """Leave the stream; rows not acknowledged go to the other consumers.

        Returns once the server has the last acknowledgement (its call ended), or
        after ``_CLOSE_GRACE_S``: a process that exits right after its loop would
        otherwise lose acknowledgements still queued, and the server would serve
        rows this consumer already handed out to another one."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
            self._outbox.put(protocol.encode_request(close=True, ack=self._acked))
            self._outbox.put(None)
        if not self._call.done():
            from dataflow.service.client import _CLOSE_GRACE_S, _drain

            drain = threading.Thread(target=_drain, args=(self._call,), daemon=True)
            drain.start()
            drain.join(_CLOSE_GRACE_S + 1.0)

    def _send(self, **fields: Any) -> None:
        with self._lock:
            if not self._finished:
                self._outbox.put(protocol.encode_request(**fields))

    def _note_epoch(self) -> None:
        """Learn which epoch the server put this stream in (for the next one)."""
        for key, value in self._call.initial_metadata() or ():
            if key == protocol.EPOCH_KEY:
                self._opener.epoch = int(value)
