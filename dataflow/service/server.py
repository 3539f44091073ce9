"""BlockServer: serves a ``BlockDispenser`` over gRPC (wire format in ``protocol.py``),
for ``streaming_split`` and ``Dataset.serve`` alike.

Security:

* A token is required unless the server binds to a loopback address; it travels
  as call metadata and is compared in constant time.
* Off loopback the server speaks TLS: the certificate chain and private key
  (PEM files) come from ``certfile``/``keyfile`` or ``$DATAFLOW_SERVICE_CERT``/
  ``$DATAFLOW_SERVICE_KEY``. Without them it refuses to bind off loopback unless
  ``insecure=True`` says plaintext is wanted (a network you trust). Given on
  loopback, they are used there too.

Consumers on this host and user may get their blocks as Arrow IPC files in a
private shared-memory directory (one copy, mapped zero-copy by the consumer)
instead of bytes over gRPC (four copies). The directory follows the object
store's session convention (``runtime.store.make_shm_dir``), so a crashed
driver's leftovers are removed by the next session; ``stop`` removes it.

>>> server = serve(open_stream, "0.0.0.0:7000", token="s3cret",       # doctest: +SKIP
...                certfile="server.pem", keyfile="server.key")
>>> server.wait(); server.stop()                                        # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pyarrow as pa

from dataflow.errors import ServiceClosedError, ServiceUsageError
from dataflow.service import protocol
from dataflow.service.dispenser import BlockDispenser, Ticket
from dataflow.service.policies import Reserve
from runtime.store import make_shm_dir

_SLICE_BYTES = 1 << 20  # the most a message of ``serve`` holds (see _slices)


def serve(
    open_stream: Callable[[], Any],
    address: str,
    *,
    token: str | None = None,
    epochs: int = 1,
    certfile: str | None = None,
    keyfile: str | None = None,
    insecure: bool = False,
) -> BlockServer:
    """Serve the execution ``open_stream()`` (run once per epoch) at ``address``
    to consumers that come and go (``Reserve``); ``token`` defaults to
    ``$DATAFLOW_SERVICE_TOKEN`` and is required off loopback, as TLS is (see the
    module docstring)."""
    dispenser = BlockDispenser(lambda: _slices(blocks_of(open_stream)), Reserve(epochs=epochs))
    token = token if token is not None else os.environ.get(protocol.TOKEN_ENV) or None
    return BlockServer(
        dispenser,
        address,
        token=token,
        certfile=certfile,
        keyfile=keyfile,
        insecure=insecure,
        token_help="pass the server's token to dataflow.connect(..., token=...) or set "
        "DATAFLOW_SERVICE_TOKEN",
    )


def blocks_of(open_stream: Callable[[], Any]) -> Iterator[pa.Table]:
    """The blocks of one execution ``open_stream()``, closed when done or dropped."""
    stream = open_stream()
    try:
        yield from stream.iter_blocks()
    finally:
        stream.close()


def _slices(blocks: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Each block as zero-copy slices of about ``_SLICE_BYTES``: big blocks (a whole
    file) would give each consumer one message to wait for, received only once fully
    built and sent, and leave the other consumers idle; slices keep every consumer
    busy and overlap the transfer with the consumers' work."""
    for table in blocks:
        rows = max(1, table.num_rows * _SLICE_BYTES // max(1, table.nbytes))
        for start in range(0, table.num_rows, rows):
            yield table.slice(start, rows)


class BlockServer:
    """A gRPC server in this process handing ``dispenser``'s blocks to consumers
    at ``address`` (``host:port``; port 0 picks a free one).

    ``token_help`` tells a consumer refused for its token where to get the right
    one; ``max_consumers`` bounds the concurrent calls (each holds a thread).
    """

    def __init__(
        self,
        dispenser: BlockDispenser,
        address: str = "127.0.0.1:0",
        *,
        token: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        insecure: bool = False,
        max_consumers: int = 64,
        token_help: str = "",
    ) -> None:
        name = dispenser.policy.name
        host, port = protocol.split_address(address, name)
        if token is None and not protocol.is_loopback(host):
            raise ValueError(
                f"{name}: binding to {host!r} (not loopback) needs a token: pass token=... "
                "or set DATAFLOW_SERVICE_TOKEN, and give consumers the same token"
            )
        credentials = _server_credentials(name, host, certfile, keyfile, insecure)
        self.dispenser = dispenser
        self.token = token
        self.tls = credentials is not None
        self._name = name
        self._token_help = token_help
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_consumers, thread_name_prefix=name),
            options=protocol.CHANNEL_OPTIONS,
            maximum_concurrent_rpcs=max_consumers,
        )
        handler = grpc.method_handlers_generic_handler(
            protocol.SERVICE,
            {protocol.METHOD: grpc.stream_stream_rpc_method_handler(self._fetch)},
        )
        self._server.add_generic_rpc_handlers((handler,))
        target = protocol.join_address(host, port)
        try:
            if credentials is None:
                bound = self._server.add_insecure_port(target)
            else:
                bound = self._server.add_secure_port(target, credentials)
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise OSError(f"{name}: cannot bind to {address!r} (address in use or not local?)")
        self.address = protocol.join_address(host, bound)
        self._local_id = protocol.local_id()
        self._files_lock = threading.Lock()
        self._files_dir: str | None = None
        self._server.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every epoch was served (True) or ``timeout`` passed (False)."""
        return self.dispenser.wait(timeout)

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop the execution and the server (idempotent)."""
        self.dispenser.close()
        self._server.stop(grace).wait()
        with self._files_lock:
            if self._files_dir is not None:
                shutil.rmtree(self._files_dir, ignore_errors=True)

    def __enter__(self) -> BlockServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _files(self) -> str:
        """The shared-memory directory for local consumers' blocks (made once)."""
        with self._files_lock:
            if self._files_dir is None:
                self._files_dir = str(make_shm_dir("service"))
            return self._files_dir

    # -- the RPC -------------------------------------------------------------------

    def _check_token(self, context: grpc.ServicerContext) -> None:
        if self.token is None:
            return
        sent = dict(context.invocation_metadata()).get(protocol.TOKEN_KEY, "")
        if not hmac.compare_digest(str(sent).encode(), self.token.encode()):
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"{self._name}: missing or wrong token; {self._token_help}",
            )

    def _fetch(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._check_token(context)
        try:
            hello = protocol.parse_hello(next(requests))
        except (StopIteration, ValueError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self._name}: bad hello: {e}")
        d = self.dispenser
        try:
            ticket = d.join(hello.epoch, hello.split, context.is_active)
        except ServiceClosedError:
            return
        except ServiceUsageError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        # gRPC calls back when the call ends, even when it abandons this generator (a
        # cancelled call never resumes it): a consumer that did not say goodbye died.
        context.add_callback(lambda: d.leave(ticket, clean=False))
        context.send_initial_metadata(((protocol.EPOCH_KEY, str(ticket.epoch)),))
        local = bool(self._local_id) and hello.local == self._local_id
        session = _Session(hello.credit)
        threading.Thread(
            target=session.read, args=(requests, d, ticket), name=f"{self._name}-acks", daemon=True
        ).start()
        try:
            while session.take_credit(context.is_active):
                table = d.fetch(ticket, context.is_active)
                if table is None:
                    yield protocol.END
                    session.wait_closed(context.is_active)
                    return
                if local:
                    yield protocol.encode_table_file(table, self._files())
                else:
                    yield protocol.encode_table(table)
        except ServiceUsageError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except Exception as e:  # noqa: BLE001 - failed or stopped: never a silent end
            yield protocol.encode_error(e)


class _Session:
    """One consumer call's credits and closing state, fed by a reader thread so that
    acknowledgements are applied as soon as they arrive (never lost in a queue)."""

    def __init__(self, credit: int) -> None:
        self._cv = threading.Condition()
        self._credit = credit
        self._closed = False

    def read(self, requests: Iterator[bytes], d: BlockDispenser, ticket: Ticket) -> None:
        try:
            for raw in requests:
                msg: dict[str, Any] = protocol.decode_request(raw)
                if "ack" in msg:
                    d.ack(ticket, int(msg["ack"]))
                if msg.get("close"):
                    d.leave(ticket, clean=True)  # at once: others may be waiting for its rows
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

    def take_credit(self, alive: Callable[[], bool]) -> bool:
        """Wait for a credit (True) or the client's close (False)."""
        with self._cv:
            while not self._closed and self._credit <= 0 and alive():
                self._cv.wait(0.2)
            if self._closed or self._credit <= 0:
                return False
            self._credit -= 1
            return True

    def wait_closed(self, alive: Callable[[], bool]) -> None:
        with self._cv:
            while not self._closed and alive():
                self._cv.wait(0.2)


def _server_credentials(
    name: str, host: str, certfile: str | None, keyfile: str | None, insecure: bool
) -> grpc.ServerCredentials | None:
    """TLS credentials from the arguments or the environment; None for plaintext,
    which off loopback needs ``insecure=True``."""
    certfile = certfile or os.environ.get(protocol.CERT_ENV) or None
    keyfile = keyfile or os.environ.get(protocol.KEY_ENV) or None
    if certfile is None and keyfile is None:
        if not protocol.is_loopback(host) and not insecure:
            raise ValueError(
                f"{name}: refusing to serve in plaintext on {host!r} (not loopback): pass "
                "certfile=... and keyfile=... (or set DATAFLOW_SERVICE_CERT and "
                "DATAFLOW_SERVICE_KEY) to serve over TLS, or insecure=True (dataflow serve "
                "--insecure) to serve in plaintext on a network you trust"
            )
        return None
    if keyfile is None:
        raise ValueError(
            f"{name}: TLS needs a key too: certfile is given, keyfile (or {protocol.KEY_ENV}) is not"
        )
    if certfile is None:
        raise ValueError(
            f"{name}: TLS needs a certificate too: keyfile is given, certfile (or {protocol.CERT_ENV}) is not"
        )
    chain = protocol.read_pem(certfile, name, "certificate chain")
    key = protocol.read_pem(keyfile, name, "private key")
    return grpc.ssl_server_credentials([(key, chain)])
