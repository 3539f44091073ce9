"""SplitClient: the consumer side of the split service; picklable.

>>> stream = SplitClient("127.0.0.1:50051", split=0, token=None).open(epoch=0)  # doctest: +SKIP
>>> for table in stream.iter_blocks():  # doctest: +SKIP
...     print(table.num_rows)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pyarrow as pa

from dataflow.errors import DataflowError
from dataflow.service import protocol

_CLOSE_GRACE_S = 2.0  # a closing stream waits this long for the server's goodbye


class SplitClient:
    """Opens split ``split``'s block streams on the coordinator at ``address``.

    ``prefetch`` blocks are requested ahead so that the next block is on its way
    while the consumer works. Only the address, split, token and prefetch are
    pickled; the channel is opened lazily in whichever process iterates.
    """

    def __init__(
        self,
        address: str,
        split: int,
        token: str | None,
        *,
        prefetch: int = 2,
    ) -> None:
        self.address = address
        self.split = split
        self.token = token
        self.prefetch = max(1, prefetch)
        self._channel: grpc.Channel | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_channel": None}

    def open(self, epoch: int) -> BlockStream:
        """Start fetching this split's blocks of ``epoch`` (0, 1, ... in order)."""
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address, options=protocol.CHANNEL_OPTIONS)
        return BlockStream(self, self._channel, epoch)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


class BlockStream:
    """One epoch of one split: ``iter_blocks()`` and a thread-safe ``close()``
    (the same shape as the executor's ``OutputStream``)."""

    def __init__(self, client: SplitClient, channel: grpc.Channel, epoch: int) -> None:
        self._client = client
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        hello = protocol.encode_request(
            split=client.split, epoch=epoch, consumed=0, local=protocol.local_id()
        )
        self._outbox.put(hello)
        for _ in range(client.prefetch - 1):
            self._outbox.put(protocol.encode_request(consumed=0))
        metadata = [(protocol.TOKEN_KEY, client.token)] if client.token else None
        fetch = channel.stream_stream(protocol.FULL_METHOD)
        self._call = fetch(iter(self._outbox.get, None), metadata=metadata)
        self._consumed = 0
        self._lock = threading.Lock()
        self._finished = False  # the server ended the stream, or close() was called

    def iter_blocks(self) -> Iterator[pa.Table]:
        try:
            for raw in self._call:
                yield protocol.decode_reply(raw)
                self._consumed += 1
                self._outbox.put(protocol.encode_request(consumed=self._consumed))
        except grpc.RpcError as e:
            if self._finished and e.code() == grpc.StatusCode.CANCELLED:
                return  # closed by us
            c = self._client
            raise DataflowError(
                f"streaming_split: split {c.split} lost its coordinator at {c.address}: "
                f"{e.code().name}: {e.details()}"
            ) from None
        finally:
            self.close()

    def close(self) -> None:
        """Tell the coordinator this split stops (a clean stop, not a death).

        The replies to requests already in flight are drained on a helper thread
        so that the server reads the goodbye; past a grace period the call is
        cancelled."""
        with self._lock:
            if self._finished:
                return
            self._finished = True
        if self._call.done():
            self._outbox.put(None)
            return
        self._outbox.put(protocol.encode_request(close=True, consumed=self._consumed))
        self._outbox.put(None)
        threading.Thread(target=_drain, args=(self._call,), daemon=True).start()


def _drain(call: Any) -> None:
    timer = threading.Timer(_CLOSE_GRACE_S, call.cancel)
    timer.start()
    try:
        for _ in call:
            pass
    except grpc.RpcError:
        pass
    finally:
        timer.cancel()
