"""SplitServer: serves a ``SplitCoordinator`` over gRPC (see ``protocol.py``).

Binds to 127.0.0.1 on an ephemeral port by default. Binding to any other address
requires a token (generated here, carried inside the pickled iterators); a
request without the right token is refused with ``UNAUTHENTICATED``.

Consumers on this host and user get their blocks as Arrow IPC files in a private
shared-memory directory (one copy, mapped zero-copy by the consumer) instead of
bytes over gRPC (four copies). The directory follows the object store's session
convention (mode 0700, an owner file), so a crashed driver's leftovers are
removed by the next session; ``stop`` removes it.

>>> server = SplitServer(coordinator)          # doctest: +SKIP
>>> SplitClient(server.address, 0, server.token).iter_blocks(0)  # doctest: +SKIP
"""

from __future__ import annotations

import hmac
import logging
import secrets
import shutil
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc

from dataflow.service import protocol
from dataflow.service.coordinator import SplitClosedError, SplitCoordinator, SplitUsageError
from runtime.sessiondirs import make_session_dir
from runtime.store import _PREFIX, default_shm_root

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class SplitServer:
    """A gRPC server in this process handing ``coordinator``'s blocks to clients.

    ``require_token`` defaults to True unless ``host`` is a loopback address.
    """

    def __init__(
        self,
        coordinator: SplitCoordinator,
        *,
        host: str = "127.0.0.1",
        require_token: bool | None = None,
    ) -> None:
        if require_token is None:
            require_token = host not in LOOPBACK
        self.coordinator = coordinator
        self.token: str | None = secrets.token_hex(16) if require_token else None
        self._server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=2 * coordinator.n + 4, thread_name_prefix="dataflow-split"
            ),
            options=protocol.CHANNEL_OPTIONS,
        )
        handler = grpc.method_handlers_generic_handler(
            protocol.SERVICE,
            {protocol.METHOD: grpc.stream_stream_rpc_method_handler(self._fetch)},
        )
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port(f"{_bracket(host)}:0")
        if port == 0:
            raise OSError(f"streaming_split: cannot bind the split service to {host!r}")
        self.address = f"{_bracket(host)}:{port}"
        self._local_id = protocol.local_id()
        self._files_lock = threading.Lock()
        self._files_dir: str | None = None
        self._server.start()

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop the coordinator's execution and the server (idempotent)."""
        self.coordinator.close()
        self._server.stop(grace).wait()
        with self._files_lock:
            if self._files_dir is not None:
                shutil.rmtree(self._files_dir, ignore_errors=True)

    def _files(self) -> str:
        """The shared-memory directory for local consumers' blocks (made once)."""
        with self._files_lock:
            if self._files_dir is None:
                name = f"{_PREFIX}split-{secrets.token_hex(6)}"
                self._files_dir = str(make_session_dir(default_shm_root() / name))
            return self._files_dir

    # -- the RPC -------------------------------------------------------------------

    def _fetch(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        if self.token is not None:
            sent = dict(context.invocation_metadata()).get(protocol.TOKEN_KEY, "")
            if not hmac.compare_digest(str(sent), self.token):
                context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "streaming_split: missing or wrong token; use the iterators that "
                    "streaming_split() returned (they carry the token)",
                )
        try:
            first = protocol.decode_request(next(requests))
            split = int(first["split"])
            epoch = int(first["epoch"])
        except (StopIteration, KeyError, TypeError, ValueError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"streaming_split: bad hello: {e}")
        local = bool(self._local_id) and first.get("local") == self._local_id
        coord = self.coordinator
        try:
            epoch = coord.begin(split, epoch, context.is_active)
        except SplitClosedError:
            return
        except SplitUsageError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        # ``consumed`` is None once the split finished on purpose (its share ran out,
        # it said goodbye, or the execution failed); otherwise the RPC ending means the
        # consumer died. gRPC calls back when the RPC ends even if it abandons this
        # generator (a cancelled call never resumes it).
        state = {"consumed": 0}
        context.add_callback(lambda: coord.finish(split, epoch, consumed=state["consumed"]))
        try:
            msg = first
            while True:
                state["consumed"] = int(msg.get("consumed", state["consumed"]))
                if msg.get("close"):
                    state["consumed"] = None
                    return
                table = coord.fetch(split, epoch, context.is_active)
                if table is None:
                    state["consumed"] = None
                    return
                if local:
                    yield protocol.encode_table_file(table, self._files())
                else:
                    yield protocol.encode_table(table)
                try:
                    raw = next(requests, None)
                except grpc.RpcError:  # cancelled while waiting for the next request
                    raw = None
                if raw is None:
                    return  # the client went away without a goodbye: it died
                msg = protocol.decode_request(raw)
        except SplitClosedError:
            return
        except SplitUsageError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except Exception as e:  # noqa: BLE001 - the execution failed: tell the consumer
            state["consumed"] = None
            yield protocol.encode_error(e)


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
