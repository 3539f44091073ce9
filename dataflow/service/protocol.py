"""Wire format of the split service (grpcio generic handlers, bytes messages).

One bidirectional-streaming method, ``/dataflow.SplitService/Fetch``. The client
sends JSON control messages, one per block it wants::

    {"split": 0, "epoch": 0, "consumed": 0}      # first message: who and which epoch
    {"consumed": 3}                              # one more block; 3 consumed so far
    {"close": true, "consumed": 5}               # stopping early on purpose

and the server answers each with one message: ``b"B"`` + an Arrow IPC stream
holding the block, or ``b"E"`` + a pickled ``(type name, message, exception)``
when the execution failed. A consumer on the server's host and user says so
in its first message (``"local": local_id()``); it then gets ``b"F"`` + the path
of an Arrow IPC file in the server's shared-memory directory instead of the
bytes, maps it zero-copy and unlinks it. The stream ends when the split's share is exhausted.
The server never unpickles what a client sends; the token travels as metadata.
"""

from __future__ import annotations

import json
import os
import pickle
import uuid
from typing import Any

import pyarrow as pa

from dataflow.errors import DataflowError

SERVICE = "dataflow.SplitService"
METHOD = "Fetch"
FULL_METHOD = f"/{SERVICE}/{METHOD}"
TOKEN_KEY = "x-dataflow-token"
# Dataset.serve's service (see feed_server.py): the epoch travels in the initial
# metadata and b"X" ends a consumer's share of it.
FEED_SERVICE = "dataflow.FeedService"
FEED_METHOD = "Feed"
FEED_FULL_METHOD = f"/{FEED_SERVICE}/{FEED_METHOD}"
EPOCH_KEY = "x-dataflow-epoch"
END = b"X"
TOKEN_ENV = "DATAFLOW_SERVICE_TOKEN"
MAX_MESSAGE_BYTES = 2**31 - 1  # blocks are up to target_max_block_size (32 MiB default)
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


def encode_request(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def decode_request(raw: bytes) -> dict[str, Any]:
    msg = json.loads(raw)
    if not isinstance(msg, dict):
        raise ValueError(f"split service: bad request {raw[:80]!r}")
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
        raise DataflowError(f"streaming_split: the execution failed: {name}: {message}")
    raise DataflowError(f"streaming_split: unexpected reply tag {tag!r} from the coordinator")
