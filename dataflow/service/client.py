"""SplitClient: the consumer side of the split service; picklable.

>>> for table in SplitClient("127.0.0.1:50051", split=0, token=None).iter_blocks(0):  # doctest: +SKIP
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


class SplitClient:
    """Fetches split ``split``'s blocks from the coordinator at ``address``.

    ``prefetch`` blocks are requested ahead so that the next block is on its way
    while the consumer works. Only the address, split, token and prefetch are
    pickled; the channel is opened lazily in whichever process iterates.
    """

    def __init__(self, address: str, split: int, token: str | None, *, prefetch: int = 2) -> None:
        self.address = address
        self.split = split
        self.token = token
        self.prefetch = max(1, prefetch)
        self._channel: grpc.Channel | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_channel": None}

    def iter_blocks(self, epoch: int) -> Iterator[pa.Table]:
        """This split's blocks of ``epoch`` (epochs start at 0 and go up by one)."""
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address, options=protocol.CHANNEL_OPTIONS)
        fetch = self._channel.stream_stream(protocol.FULL_METHOD)
        outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        outbox.put(protocol.encode_request(split=self.split, epoch=epoch, consumed=0))
        for _ in range(self.prefetch - 1):
            outbox.put(protocol.encode_request(consumed=0))
        metadata = [(protocol.TOKEN_KEY, self.token)] if self.token else None
        call = fetch(iter(outbox.get, None), metadata=metadata)
        consumed = 0
        done = False
        try:
            for raw in call:
                table = protocol.decode_reply(raw)
                yield table
                consumed += 1
                outbox.put(protocol.encode_request(consumed=consumed))
            done = True
        except grpc.RpcError as e:
            raise DataflowError(
                f"streaming_split: split {self.split} lost its coordinator at {self.address}: "
                f"{e.code().name}: {e.details()}"
            ) from None
        finally:
            if not done:
                outbox.put(protocol.encode_request(close=True, consumed=consumed))
            outbox.put(None)
            if not done:
                _drain(call)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


def _drain(call: Any, timeout_s: float = 2.0) -> None:
    """Read the replies to requests already sent, so that the server sees the close
    message (a clean stop) rather than a cancelled call (a dead consumer)."""
    timer = threading.Timer(timeout_s, call.cancel)
    timer.start()
    try:
        for _ in call:
            pass
    except grpc.RpcError:
        pass
    finally:
        timer.cancel()
