"""``streaming_split``: n picklable ``DataIterator``s over one shared execution.

The driver runs the execution and a ``BlockServer`` with a ``FirstCome`` or
``EqualSplit`` policy; each iterator holds only a ``BlockClient`` (address,
split index, token, CA certificates), so it can be pickled to another process or
host. The server lives as long as the driver keeps any of the returned
iterators (or stops at interpreter exit).

>>> a, b = streaming_split(open_stream, 2, equal=True)   # doctest: +SKIP
>>> torch.multiprocessing.spawn(train, args=([a, b],), nprocs=2)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import secrets
import weakref
from collections.abc import Callable
from typing import Any

from dataflow.context import DataContext
from dataflow.iterators import DataIterator
from dataflow.service import protocol
from dataflow.service.client import BlockClient
from dataflow.service.dispenser import BlockDispenser
from dataflow.service.policies import EqualSplit, FirstCome
from dataflow.service.server import BlockServer, blocks_of


def streaming_split(
    open_stream: Callable[[], Any],
    n: int,
    *,
    equal: bool = False,
    host: str = "127.0.0.1",
    require_token: bool | None = None,
    max_buffered_blocks: int = 8,
    certfile: str | None = None,
    keyfile: str | None = None,
    ca: str | None = None,
    insecure: bool = False,
    name: str = "dataset",
) -> list[DataIterator]:
    """Split the execution ``open_stream()`` (an object with ``iter_blocks()`` and
    ``close()``, run once per epoch) into ``n`` iterators served over gRPC.

    ``host`` other than loopback requires a token (``require_token`` defaults to
    that, and the iterators carry it) and TLS: ``certfile``/``keyfile`` (or
    ``$DATAFLOW_SERVICE_CERT``/``$DATAFLOW_SERVICE_KEY``) for the server, ``ca``
    (or ``$DATAFLOW_SERVICE_CA``, read here and carried by the iterators) for the
    consumers, unless ``insecure=True``. ``max_buffered_blocks`` bounds how far
    ``equal`` lets a fast split run ahead of a slow one. Each epoch begins once
    all ``n`` iterators have asked for data; one still missing
    ``DataContext.split_start_timeout_s`` later fails the others with an error
    naming it.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"streaming_split: n must be a positive int, got {n!r}")
    ca = ca or os.environ.get(protocol.CA_ENV) or None
    roots = protocol.read_pem(ca, "streaming_split", "CA certificate") if ca else None
    timeout_s = DataContext.get_current().split_start_timeout_s
    policy: FirstCome = (
        EqualSplit(n, max_buffered_blocks=max_buffered_blocks, start_timeout_s=timeout_s)
        if equal
        else FirstCome(n, start_timeout_s=timeout_s)
    )
    if require_token is None:
        require_token = not protocol.is_loopback(host)
    server = BlockServer(
        BlockDispenser(lambda: blocks_of(open_stream), policy),
        protocol.join_address(host, 0),
        token=secrets.token_hex(16) if require_token else None,
        certfile=certfile,
        keyfile=keyfile,
        insecure=insecure,
        max_consumers=2 * n + 4,
        token_help="use the iterators that streaming_split() returned (they carry the token)",
    )
    keepalive = ServerHandle(server)
    clients = [
        BlockClient(
            server.address,
            token=server.token,
            root_certificates=roots,
            insecure=insecure,
            split=i,
            keepalive=keepalive,
        )
        for i in range(n)
    ]
    return [DataIterator(c, name=f"{name} split {i}/{n}") for i, c in enumerate(clients)]


def coordinator_of(it: DataIterator) -> BlockDispenser:
    """The driver-side dispenser behind a split iterator (its ``policy`` has the
    ``lost`` report and ``delivered_rows()``)."""
    client = it._open_stream
    if not isinstance(client, BlockClient) or client.keepalive is None:
        raise ValueError("coordinator_of: not a driver-side streaming_split iterator")
    return client.keepalive.server.dispenser


class ServerHandle:
    """Owns a running ``BlockServer``: stops it when the driver drops the last
    object holding this handle (never from a forked child, which shares it)."""

    def __init__(self, server: BlockServer) -> None:
        self.server = server
        self._finalizer = weakref.finalize(self, _stop_in, os.getpid(), server)

    def stop(self) -> None:
        self._finalizer()


def _stop_in(pid: int, server: BlockServer) -> None:
    if os.getpid() == pid:
        server.stop(0)
