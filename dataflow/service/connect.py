"""The consumer side of ``Dataset.serve``: ``connect(address, token=...)`` returns a
``DataIterator`` whose batches come from a server in another process or host.

Several consumers share the served stream: each block goes to one of them. A
consumer acknowledges rows as its user receives them; whatever it was sent and
did not hand out when it stops (or dies) is served to the others.

>>> it = connect("10.0.0.5:7000", token="s3cret", ca="ca.pem")  # doctest: +SKIP
>>> for batch in it.iter_torch_batches(batch_size=4096):      # doctest: +SKIP
...     train_step(batch)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from dataflow.iterators import DataIterator
from dataflow.service import protocol


def connect(
    address: str,
    *,
    token: str | None = None,
    ca: str | None = None,
    insecure: bool = False,
    prefetch_blocks: int = 2,
) -> DataIterator:
    """An iterator over the batches served at ``address`` by ``Dataset.serve`` or
    ``dataflow serve``; ``token`` defaults to ``$DATAFLOW_SERVICE_TOKEN``.

    Off loopback the stream is TLS: ``ca`` (default ``$DATAFLOW_SERVICE_CA``) is
    the PEM file of the CA certificate that signed the server's certificate
    (without it, the system's trusted CAs); ``insecure=True`` connects in
    plaintext to a server started with ``insecure=True``. The first iteration
    joins the epoch the server is running; each further one asks for the next
    epoch. ``prefetch_blocks`` blocks are requested ahead.

    >>> it = df.connect("127.0.0.1:7000")                    # doctest: +SKIP
    >>> sum(len(b["id"]) for b in it.iter_batches())         # doctest: +SKIP
    1000
    """
    from dataflow.service.client import BlockClient  # grpc: `import dataflow` stays light

    protocol.split_address(address, "connect")
    if isinstance(prefetch_blocks, bool) or not isinstance(prefetch_blocks, int):
        raise ValueError(f"connect: prefetch_blocks must be an int, got {prefetch_blocks!r}")
    token = token if token is not None else os.environ.get(protocol.TOKEN_ENV) or None
    ca = ca or os.environ.get(protocol.CA_ENV) or None
    client = BlockClient(
        address,
        token=token,
        root_certificates=protocol.read_pem(ca, "connect", "CA certificate") if ca else None,
        insecure=insecure,
        prefetch=prefetch_blocks,
    )
    return ServedIterator(client, address)


class ServedIterator(DataIterator):
    """A ``DataIterator`` over a served stream: it acknowledges rows to the server
    as they are handed out. With a local shuffle buffer rows leave out of block
    order, so they are acknowledged when the server ends the stream: a consumer
    that dies mid-epoch then has all it received served again (at-least-once).

    ``load_state_dict`` is refused: the server, not the consumer, knows which rows
    are left; a restarted consumer simply connects again.
    """

    def __init__(self, opener: Any, address: str) -> None:
        super().__init__(opener, name=f"served by {address}")
        self._opener = opener  # a BlockClient

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
        *,
        by_block: bool = False,
    ) -> Iterator[Any]:
        # drop_last is applied here, after the short batch was acknowledged: rows
        # left out on purpose must not be served to another consumer.
        self._opener.ack_at_end = bool(shuffle_buffer_size)
        batches = super()._iter_formatted(
            format_fn,
            batch_size,
            False,
            prefetch_batches,
            shuffle_buffer_size,
            shuffle_seed,
            by_block=by_block,
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
