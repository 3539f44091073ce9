"""``streaming_split``: n picklable ``DataIterator``s over one shared execution.

The driver runs the execution and a ``SplitServer``; each iterator holds only a
``SplitClient`` (address, split index, token), so it can be pickled to another
process or host. The server lives as long as the driver keeps any of the
returned iterators (or stops at interpreter exit).

>>> a, b = streaming_split(open_stream, 2, equal=True)   # doctest: +SKIP
>>> torch.multiprocessing.spawn(train, args=([a, b],), nprocs=2)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dataflow.context import DataContext
from dataflow.iterators import DataIterator
from dataflow.service.client import BlockStream, SplitClient
from dataflow.service.coordinator import SplitCoordinator
from dataflow.service.server import SplitServer

if TYPE_CHECKING:
    import pyarrow as pa


def streaming_split(
    open_stream: Callable[[], Any],
    n: int,
    *,
    equal: bool = False,
    host: str = "127.0.0.1",
    require_token: bool | None = None,
    max_buffered_blocks: int = 8,
    name: str = "dataset",
) -> list[DataIterator]:
    """Split the execution ``open_stream()`` (an object with ``iter_blocks()`` and
    ``close()``, run once per epoch) into ``n`` iterators served over gRPC.

    ``host`` other than loopback requires a token (``require_token`` defaults to
    that); ``max_buffered_blocks`` bounds how far ``equal`` lets a fast split run
    ahead of a slow one. Each epoch begins once all ``n`` iterators have asked for
    data; one still missing ``DataContext.split_start_timeout_s`` later fails the
    others with an error naming it.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"streaming_split: n must be a positive int, got {n!r}")
    keepalive = start_service(
        open_stream,
        n,
        equal=equal,
        host=host,
        require_token=require_token,
        max_buffered_blocks=max_buffered_blocks,
        start_timeout_s=DataContext.get_current().split_start_timeout_s,
    )
    server = keepalive.server
    return [
        DataIterator(
            _SplitOpener(SplitClient(server.address, i, server.token), keepalive),
            name=f"{name} split {i}/{n}",
        )
        for i in range(n)
    ]


def start_service(
    open_stream: Callable[[], Any],
    n: int,
    *,
    equal: bool = False,
    host: str = "127.0.0.1",
    require_token: bool | None = None,
    max_buffered_blocks: int = 8,
    start_timeout_s: float = 600.0,
) -> ServerHandle:
    """Start a coordinator of ``n`` splits and its server."""
    coordinator = SplitCoordinator(
        lambda: _blocks_of(open_stream),
        n,
        equal=equal,
        max_buffered_blocks=max_buffered_blocks,
        start_timeout_s=start_timeout_s,
    )
    return ServerHandle(SplitServer(coordinator, host=host, require_token=require_token))


def coordinator_of(it: DataIterator) -> SplitCoordinator:
    """The driver-side coordinator behind a split iterator (for its ``lost`` report)."""
    opener = it._open_stream
    if not isinstance(opener, _SplitOpener) or opener._keepalive is None:
        raise ValueError("coordinator_of: not a driver-side streaming_split iterator")
    return opener._keepalive.server.coordinator


def _blocks_of(open_stream: Callable[[], Any]) -> Iterator[pa.Table]:
    stream = open_stream()
    try:
        yield from stream.iter_blocks()
    finally:
        stream.close()


class ServerHandle:
    """Owns a running ``SplitServer``: stops it when the driver drops the last
    object holding this handle (never from a forked child, which shares it)."""

    def __init__(self, server: SplitServer) -> None:
        self.server = server
        self._finalizer = weakref.finalize(self, _stop_in, os.getpid(), server)

    def stop(self) -> None:
        self._finalizer()


def _stop_in(pid: int, server: SplitServer) -> None:
    if os.getpid() == pid:
        server.stop(0)


class _SplitOpener:
    """``DataIterator``'s ``open_stream`` for one split: each call opens the next epoch."""

    def __init__(self, client: SplitClient, keepalive: ServerHandle | None) -> None:
        self._client = client
        self._keepalive = keepalive
        self._epoch = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_keepalive": None}

    def __call__(self) -> BlockStream:
        stream = self._client.open(self._epoch)
        self._epoch += 1
        return stream
