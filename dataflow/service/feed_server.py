"""FeedServer: serves a ``FeedCoordinator`` over gRPC (``Dataset.serve``).

One bidirectional-streaming method, ``/dataflow.FeedService/Feed``. The client
sends JSON control messages (see ``protocol.py`` for the encoding)::

    {"epoch": null, "credit": 2}   # first: which epoch (null: the running one), blocks wanted
    {"credit": 1}                  # one more block wanted (sent as each block is taken)
    {"ack": 4096}                  # the first 4096 rows of this stream reached the user
    {"close": true, "ack": 8000}   # stopping; whatever is not acknowledged goes to others

The server sends the epoch in the initial metadata, then one block (``b"B"`` +
Arrow IPC) per credit, then ``b"X"`` when the epoch has no more for this
consumer (or ``b"E"`` + the execution's error). It keeps the call open until
the client closes, so that the last acknowledgements arrive. Credits are the
back-pressure: a consumer that stops asking stops the pipeline.

A token is required unless the server binds to a loopback address; it travels as
call metadata and is compared in constant time.

>>> server = FeedServer(FeedCoordinator(make), "127.0.0.1:0")  # doctest: +SKIP
>>> server.address  # doctest: +SKIP
'127.0.0.1:40631'
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pyarrow as pa

from dataflow.service import protocol
from dataflow.service.feed import FeedClosedError, FeedCoordinator, FeedUsageError
from dataflow.service.server import LOOPBACK, _bracket
from dataflow.service.split import _blocks_of

_MAX_CONSUMERS = 64  # concurrent consumer calls (each holds a server thread)
_SLICE_BYTES = 1 << 20  # the most a served message holds (see _slices)


def serve(
    open_stream: Callable[[], Any], address: str, *, token: str | None = None, epochs: int = 1
) -> FeedServer:
    """Serve the execution ``open_stream()`` (run once per epoch) at ``address``;
    ``token`` defaults to ``$DATAFLOW_SERVICE_TOKEN`` and is required off loopback."""
    coordinator = FeedCoordinator(lambda: _slices(_blocks_of(open_stream)), epochs=epochs)
    token = token if token is not None else os.environ.get(protocol.TOKEN_ENV) or None
    return FeedServer(coordinator, address, token=token)


def _slices(blocks: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Each block as zero-copy slices of about ``_SLICE_BYTES``: big blocks (a whole
    file) would give each consumer one message to wait for, received only once fully
    built and sent, and leave the other consumers idle; slices keep every consumer
    busy and overlap the transfer with the consumers' work."""
    for table in blocks:
        rows = max(1, table.num_rows * _SLICE_BYTES // max(1, table.nbytes))
        for start in range(0, table.num_rows, rows):
            yield table.slice(start, rows)


class FeedServer:
    """A gRPC server in this process handing ``coordinator``'s blocks to consumers
    at ``address`` (``host:port``; port 0 picks a free one)."""

    def __init__(
        self, coordinator: FeedCoordinator, address: str, *, token: str | None = None
    ) -> None:
        host, sep, port = address.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"serve: address must be 'host:port', got {address!r}")
        if token is None and host not in LOOPBACK:
            raise ValueError(
                f"serve: binding to {host!r} (not loopback) needs a token: pass token=... "
                "or set DATAFLOW_SERVICE_TOKEN, and give consumers the same token"
            )
        self.coordinator = coordinator
        self.token = token
        self._server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=_MAX_CONSUMERS, thread_name_prefix="dataflow-feed"
            ),
            options=protocol.CHANNEL_OPTIONS,
            maximum_concurrent_rpcs=_MAX_CONSUMERS,
        )
        handler = grpc.method_handlers_generic_handler(
            protocol.FEED_SERVICE,
            {protocol.FEED_METHOD: grpc.stream_stream_rpc_method_handler(self._feed)},
        )
        self._server.add_generic_rpc_handlers((handler,))
        try:
            bound = self._server.add_insecure_port(f"{_bracket(host)}:{port}")
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise OSError(f"serve: cannot bind to {address!r} (address in use or not local?)")
        self.address = f"{_bracket(host)}:{bound}"
        self._server.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every epoch was served (True) or ``timeout`` passed (False)."""
        return self.coordinator.wait(timeout)

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop the pipeline and the server (idempotent)."""
        self.coordinator.close()
        self._server.stop(grace).wait()

    def __enter__(self) -> FeedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the RPC -------------------------------------------------------------------

    def _feed(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        if self.token is not None:
            sent = dict(context.invocation_metadata()).get(protocol.TOKEN_KEY, "")
            if not hmac.compare_digest(str(sent).encode(), self.token.encode()):
                context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "serve: missing or wrong token; pass the server's token to "
                    "dataflow.connect(..., token=...) or set DATAFLOW_SERVICE_TOKEN",
                )
        try:
            hello = protocol.decode_request(next(requests))
            epoch = None if hello.get("epoch") is None else int(hello["epoch"])
            credit = int(hello.get("credit", 1))
        except (StopIteration, TypeError, ValueError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"serve: bad hello: {e}")
        coord = self.coordinator
        try:
            who, epoch = coord.join(epoch, context.is_active)
        except FeedClosedError:
            return
        except FeedUsageError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        # gRPC calls back when the call ends, even when it abandons this generator.
        context.add_callback(lambda: coord.leave(who))
        context.send_initial_metadata(((protocol.EPOCH_KEY, str(epoch)),))
        session = _Session(credit)
        threading.Thread(
            target=session.read, args=(requests, coord, who), name="dataflow-feed-acks", daemon=True
        ).start()
        try:
            while session.take_credit(context.is_active):
                table = coord.fetch(who, context.is_active)
                if table is None:
                    yield protocol.END
                    session.wait_closed(context.is_active)
                    return
                yield protocol.encode_table(table)
        except FeedClosedError as e:
            yield protocol.encode_error(e)  # the server stopped: never a silent end
        except Exception as e:  # noqa: BLE001 - the execution failed: tell the consumer
            yield protocol.encode_error(e)


class _Session:
    """One consumer call's credits and closing state, fed by a reader thread so that
    acknowledgements are applied as soon as they arrive (never lost in a queue)."""

    def __init__(self, credit: int) -> None:
        self._cv = threading.Condition()
        self._credit = credit
        self._closed = False

    def read(self, requests: Iterator[bytes], coord: FeedCoordinator, who: int) -> None:
        try:
            for raw in requests:
                msg: dict[str, Any] = protocol.decode_request(raw)
                if "ack" in msg:
                    coord.ack(who, int(msg["ack"]))
                if msg.get("close"):
                    coord.leave(who)  # at once: others may be waiting for its rows
                with self._cv:
                    self._credit += int(msg.get("credit", 0))
                    self._closed = self._closed or bool(msg.get("close"))
                    self._cv.notify_all()
        except (grpc.RpcError, ValueError, TypeError, KeyError):
            pass  # the call broke or sent garbage: it ends as a dead consumer
        finally:
            with self._cv:
                self._closed = True
                self._cv.notify_all()

    def take_credit(self, alive: Any) -> bool:
        """Wait for a credit (True) or the client's close (False)."""
        with self._cv:
            while not self._closed and self._credit <= 0 and alive():
                self._cv.wait(0.2)
            if self._closed or self._credit <= 0:
                return False
            self._credit -= 1
            return True

    def wait_closed(self, alive: Any) -> None:
        with self._cv:
            while not self._closed and alive():
                self._cv.wait(0.2)
