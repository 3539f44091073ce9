"""BlockClient: the consumer side of the batch service, for ``streaming_split``'s
iterators and ``dataflow.connect`` alike; picklable.

Calling a client opens its next epoch as a ``RemoteStream`` (``iter_blocks()``,
``ack(rows)``, a thread-safe ``close()``: the shape of the executor's output
stream), so a client is a ``DataIterator``'s ``open_stream``. ``prefetch``
blocks are requested ahead, so the next block is on its way while the consumer
works. Only the settings are pickled; the channel is opened lazily in whichever
process iterates.

The channel is TLS when CA certificates are given (``root_certificates``, the
PEM bytes) or the address is not loopback, unless ``insecure=True`` (plaintext,
for a server started with ``insecure=True``).

>>> client = BlockClient("127.0.0.1:50051", split=0)  # doctest: +SKIP
>>> for table in client().iter_blocks():  # doctest: +SKIP
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


class BlockClient:
    """Opens block streams from the server at ``address``, one epoch per call.

    A split's consumer (``split`` given, ``streaming_split``) names its epochs
    from 0, acknowledges each block when it asks for the next one, and takes
    blocks as shared-memory files when it runs on the server's host. A served
    consumer (``split=None``, ``connect``) joins the epoch the server runs (then
    the next one), and its iterator acknowledges rows through ``stream.ack`` as
    its user gets them (``ack_at_end``: only when the server ends the epoch).
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        insecure: bool = False,
        split: int | None = None,
        prefetch: int = 2,
        keepalive: Any = None,
    ) -> None:
        self.address = address
        self.token = token
        self.root_certificates = root_certificates
        self.insecure = insecure
        self.split = split
        self.prefetch = max(1, prefetch)
        # who lost the server, in messages
        self.label = (
            "connect: this consumer" if split is None else f"streaming_split: split {split}"
        )
        self.epoch: int | None = -1 if split is not None else None  # the last epoch opened
        self.stream: RemoteStream | None = None
        self.ack_at_end = False  # a local shuffle hands rows out of block order
        self.keepalive = keepalive  # streaming_split's driver: keeps the server running
        self._channel: grpc.Channel | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_channel": None, "stream": None, "keepalive": None}

    @property
    def tls(self) -> bool:
        host, _ = protocol.split_address(self.address, self.label)
        return self.root_certificates is not None or not (
            self.insecure or protocol.is_loopback(host)
        )

    def __call__(self) -> RemoteStream:
        """Open the next epoch's stream."""
        return self.open(None if self.epoch is None else self.epoch + 1)

    def open(self, epoch: int | None) -> RemoteStream:
        """Start fetching the blocks of ``epoch`` (None: the one the server runs)."""
        if self._channel is None:
            if self.tls:
                creds = grpc.ssl_channel_credentials(root_certificates=self.root_certificates)
                self._channel = grpc.secure_channel(
                    self.address, creds, options=protocol.CHANNEL_OPTIONS
                )
            else:
                self._channel = grpc.insecure_channel(
                    self.address, options=protocol.CHANNEL_OPTIONS
                )
        if epoch is not None:
            self.epoch = epoch
        self.stream = RemoteStream(self, self._channel, epoch)
        return self.stream

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None


class RemoteStream:
    """One epoch of blocks from the server (see ``BlockClient``)."""

    def __init__(self, client: BlockClient, channel: grpc.Channel, epoch: int | None) -> None:
        self._client = client
        self._self_ack = client.split is not None
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        hello: dict[str, Any] = {"epoch": epoch, "credit": client.prefetch}
        if client.split is not None:
            hello.update(split=client.split, local=protocol.local_id())
        self._outbox.put(protocol.encode_request(**hello))
        metadata = [(protocol.TOKEN_KEY, client.token)] if client.token else None
        self._call = channel.stream_stream(protocol.FULL_METHOD)(
            iter(self._outbox.get, None), metadata=metadata
        )
        self._lock = threading.Lock()
        self._acked = 0
        self._received = 0
        self._finished = False  # close() was called

    def iter_blocks(self) -> Iterator[pa.Table]:
        c = self._client
        try:
            self._note_epoch()
            for raw in self._call:
                if raw == protocol.END:
                    if c.ack_at_end:
                        self.ack(self._received)
                    return
                table = protocol.decode_reply(raw)
                self._received += table.num_rows
                if self._self_ack:
                    yield table
                    self._send(ack=self._received, credit=1)
                else:
                    self._send(credit=1)
                    yield table
            if not self._finished:
                # Only a server that stopped this consumer ends without b"X": what
                # it sent and was not acknowledged may already go to others.
                raise DataflowError(
                    f"{c.label}: {c.address} ended the stream before the end of the epoch "
                    "(server stopped?)"
                )
        except grpc.RpcError as e:
            if self._finished and e.code() == grpc.StatusCode.CANCELLED:
                return  # closed by us
            details = f"{e.code().name}: {e.details() or ''}"
            problem = _tls_problem(details, c.tls)
            message = (
                f"{c.label} lost its coordinator: the stream from {c.address} broke: {details}"
                if problem is None
                else f"{c.label} cannot reach {c.address}: {problem} ({details})"
            )
            raise DataflowError(message) from None
        finally:
            if self._self_ack:  # every ack was sent from here: nothing is left to send
                self.close()

    def ack(self, rows: int) -> None:
        """The first ``rows`` rows of this stream were consumed."""
        self._send(ack=rows)

    def close(self) -> None:
        """Leave the stream on purpose (what was not acknowledged is the server's).

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
            drain = threading.Thread(target=_drain, args=(self._call,), daemon=True)
            drain.start()
            drain.join(_CLOSE_GRACE_S + 1.0)

    def _send(self, **fields: Any) -> None:
        with self._lock:
            if self._finished:
                return
            if "ack" in fields:
                if fields["ack"] <= self._acked:
                    del fields["ack"]
                else:
                    self._acked = fields["ack"]
            if fields:
                self._outbox.put(protocol.encode_request(**fields))

    def _note_epoch(self) -> None:
        """Learn which epoch the server put this stream in (for the next one)."""
        for key, value in self._call.initial_metadata() or ():
            if key == protocol.EPOCH_KEY:
                self._client.epoch = int(value)


def _tls_problem(details: str, tls: bool) -> str | None:
    """What to do about a call that failed because of TLS, if it did."""
    if "CERTIFICATE_VERIFY_FAILED" in details or "not in peer certificate" in details:
        return (
            "the server's TLS certificate is not trusted here: pass ca=PATH (the CA "
            f"certificate that signed it, for this address) or set {protocol.CA_ENV}"
        )
    if tls and "WRONG_VERSION_NUMBER" in details:
        return (
            "the server does not speak TLS: if it runs with insecure=True, consume with "
            "insecure=True too"
        )
    if not tls and "Socket closed" in details:
        return (
            "the server closed the plaintext connection (does it speak TLS?): pass ca=PATH "
            f"(its CA certificate) or set {protocol.CA_ENV}"
        )
    return None


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
