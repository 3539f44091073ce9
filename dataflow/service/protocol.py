"""Wire format of the batch service (grpcio generic handlers, bytes messages).

One bidirectional-streaming method, ``/dataflow.BlockService/Fetch``, serves
both ``streaming_split`` and ``Dataset.serve``. The client sends JSON control
messages::

    {"epoch": 0, "split": 1, "credit": 2, "local": "..."}  # hello: which epoch (null: the
                                                           # running one), which split (null:
                                                           # none), blocks wanted
    {"credit": 1}                 # one more block wanted
    {"ack": 4096}                 # the first 4096 rows of this stream were consumed
    {"close": true, "ack": 8000}  # stopping on purpose (not a death)

The server sends the epoch in the initial metadata, then one message per
credit: ``b"B"`` + an Arrow IPC stream holding the block, or ``b"F"`` + the
path of an Arrow IPC file in the server's shared-memory directory (to a
consumer on the server's host and user that says so with ``"local":
local_id()``; it maps the file zero-copy and unlinks it), or ``b"E"`` + a
pickled ``(type name, message, exception)`` when the execution failed. ``b"X"``
ends the consumer's share of the epoch; the server then keeps the call open
until the client closes, so that its last acknowledgements arrive.

The server never unpickles what a client sends; the token travels as call
metadata. Off loopback the channel is TLS (see ``server.py``).
"""

from __future__ import annotations

import json
import os
import pickle
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from dataflow.errors import DataflowError

SERVICE = "dataflow.BlockService"
METHOD = "Fetch"
FULL_METHOD = f"/{SERVICE}/{METHOD}"
TOKEN_KEY = "x-dataflow-token"
EPOCH_KEY = "x-dataflow-epoch"
END = b"X"
# Where the entry points read what is not passed as an argument.
TOKEN_ENV = "DATAFLOW_SERVICE_TOKEN"
CERT_ENV = "DATAFLOW_SERVICE_CERT"  # the server's certificate chain (PEM file)
KEY_ENV = "DATAFLOW_SERVICE_KEY"  # the server's private key (PEM file)
CA_ENV = "DATAFLOW_SERVICE_CA"  # the CA certificate a consumer trusts (PEM file)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_MESSAGE_BYTES = 2**31 - 1  # blocks are up to target_max_block_size (32 MiB default)
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


@dataclass(frozen=True)
class Hello:
    """A consumer's first message: what it joins and how many blocks it wants."""

    epoch: int | None
    split: int | None
    credit: int
    local: str


def parse_hello(raw: bytes) -> Hello:
    """The hello in ``raw``; ``ValueError`` saying what is wrong otherwise.

    >>> parse_hello(b'{"epoch": null, "credit": 2}')
    Hello(epoch=None, split=None, credit=2, local='')
    """
    msg = decode_request(raw)
    try:
        epoch, split = msg.get("epoch"), msg.get("split")
        return Hello(
            epoch=None if epoch is None else int(epoch),
            split=None if split is None else int(split),
            credit=int(msg.get("credit", 1)),
            local=str(msg.get("local", "")),
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"bad hello {raw[:80]!r}: {e}") from None


def split_address(address: object, where: str) -> tuple[str, int]:
    """``(host, port)`` of a ``host:port`` address (IPv6 hosts in brackets).

    >>> split_address("[::1]:7000", "connect")
    ('::1', 7000)
    """
    host, sep, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{where}: address must be 'host:port', got {address!r}")
    return host, int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    return host in LOOPBACK


def read_pem(path: str, name: str, what: str) -> bytes:
    """The bytes of the PEM file ``path``; ``ValueError`` naming it otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"{name}: cannot read the TLS {what} {path!r}: {e.strerror}") from None
    if b"-----BEGIN" not in data:
        raise ValueError(f"{name}: the TLS {what} {path!r} is not a PEM file")
    return data


def encode_request(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def decode_request(raw: bytes) -> dict[str, Any]:
    msg = json.loads(raw)
    if not isinstance(msg, dict):
        raise ValueError(f"batch service: bad request {raw[:80]!r}")
    return msg


def encode_table(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    sink.write(b"B")
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def local_id() -> str:
    """Same value in two processes iff they share a host (boot) and a user: the
    condition for handing blocks over as shared-memory files."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:  # no procfs: never treat a consumer as local
        return ""
    return f"{boot}:{os.getuid()}"


def encode_table_file(table: pa.Table, directory: str) -> bytes:
    """Write ``table`` as an IPC file under ``directory``; the reply names it."""
    path = os.path.join(directory, f"{uuid.uuid4().hex}.arrow")
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return b"F" + path.encode()


def encode_error(error: BaseException) -> bytes:
    try:
        exc: BaseException | None = pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - unpicklable exceptions travel as text
        exc = None
    return b"E" + pickle.dumps((type(error).__name__, str(error), exc))


def decode_reply(raw: bytes) -> pa.Table:
    """A block, or the execution's exception raised here."""
    tag, body = raw[:1], memoryview(raw)[1:]
    if tag == b"B":
        return pa.ipc.open_stream(pa.py_buffer(body)).read_all()
    if tag == b"F":
        path = bytes(body).decode()
        try:
            # The table maps the file; unlinking only drops its name.
            return pa.ipc.open_file(pa.memory_map(path)).read_all()
        finally:
            os.unlink(path)
    if tag == b"E":
        name, message, exc = pickle.loads(body)
        if exc is not None:
            raise exc
        raise DataflowError(f"batch service: the served execution failed: {name}: {message}")
    raise DataflowError(f"batch service: unexpected reply tag {tag!r} from the server")
