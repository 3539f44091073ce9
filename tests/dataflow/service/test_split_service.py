"""The split service over gRPC on 127.0.0.1: clients in threads and processes."""

from __future__ import annotations

import multiprocessing as mp
import pickle
import secrets
import threading
import time

import grpc
import pytest

from dataflow.errors import DataflowError, SplitStartTimeoutError
from dataflow.service import protocol
from dataflow.service.client import BlockClient
from dataflow.service.policies import EqualSplit, FirstCome
from tests.dataflow.service.helpers import blocks


@pytest.fixture
def serve(serve_blocks):
    def start(tables_or_fn, n: int, *, equal: bool = False, require_token: bool = False, **kw):
        policy = EqualSplit(n, **kw) if equal else FirstCome(n, **kw)
        token = secrets.token_hex(16) if require_token else None
        return serve_blocks(tables_or_fn, policy, token=token)

    return start


def split_client(address: str, split: int, token: str | None, **kw) -> BlockClient:
    return BlockClient(address, split=split, token=token, **kw)


def ids_of(client: BlockClient, epoch: int = 0) -> list[int]:
    return [i for t in client.open(epoch).iter_blocks() for i in t.column("id").to_pylist()]


def test_two_threaded_clients_cover_every_row_once(serve):
    server = serve(blocks([3] * 20), 2)
    clients = [split_client(server.address, i, server.token) for i in range(2)]
    out: list[list[int]] = [[], []]
    threads = [
        threading.Thread(target=lambda i=i: out[i].extend(ids_of(clients[i]))) for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(out[0] + out[1]) == list(range(60))
    assert server.address.startswith("127.0.0.1:")


def _consume(client: BlockClient, q) -> None:
    q.put(ids_of(client))


def test_clients_in_spawned_processes_with_equal(serve):
    server = serve(blocks([5, 1, 9, 4, 7, 2]), 2, equal=True)  # 28 rows: 14 each
    clients = [
        pickle.loads(pickle.dumps(split_client(server.address, i, server.token))) for i in range(2)
    ]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_consume, args=(c, q)) for c in clients]
    for p in procs:
        p.start()
    parts = [q.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(10)
    assert [len(p) for p in parts] == [14, 14]
    assert sorted(parts[0] + parts[1]) == list(range(28))


def test_token_is_required_when_asked_for(serve):
    server = serve(blocks([2]), 1, require_token=True)
    assert server.token
    with pytest.raises(DataflowError, match="UNAUTHENTICATED.*token"):
        ids_of(split_client(server.address, 0, None))
    with pytest.raises(DataflowError, match="UNAUTHENTICATED"):
        ids_of(split_client(server.address, 0, "0" * 32))
    assert ids_of(split_client(server.address, 0, server.token)) == [0, 1]


def test_raw_request_without_token_is_refused(serve):
    server = serve(blocks([2]), 1, require_token=True)
    with grpc.insecure_channel(server.address) as ch:
        call = ch.stream_stream(protocol.FULL_METHOD)(
            iter([protocol.encode_request(split=0, epoch=0, consumed=0)])
        )
        with pytest.raises(grpc.RpcError) as info:
            list(call)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_execution_error_is_raised_in_the_consumer(serve):
    def make():
        yield blocks([2])[0]
        raise ValueError("bad row 7 in normalize")

    server = serve(make, 1)
    with pytest.raises(ValueError, match="bad row 7 in normalize"):
        ids_of(split_client(server.address, 0, None))


def test_early_break_is_a_clean_close_and_next_epoch_runs(serve):
    server = serve(blocks([2] * 10), 1)
    client = split_client(server.address, 0, None)
    stream = client.open(0)
    it = stream.iter_blocks()
    assert next(it).num_rows == 2
    stream.close()  # as the prefetch thread's owner does: the generator stays suspended
    it.close()
    assert ids_of(client, 1) == list(range(20))  # epoch 1 starts once split 0 left epoch 0
    assert server.dispenser.policy.lost == []


def test_lost_coordinator_is_a_clear_error(serve):
    server = serve(blocks([2] * 10), 1)
    client = split_client(server.address, 0, None)
    server.stop(0)
    with pytest.raises(DataflowError, match="split 0 lost its coordinator"):
        ids_of(client)


def test_cancelled_call_is_reported_as_a_dead_consumer(serve):
    server = serve(blocks([2] * 10), 2)
    stream = split_client(server.address, 0, None, prefetch=1).open(0)
    blocks_it = stream.iter_blocks()  # kept open: closing it would say goodbye
    other = split_client(server.address, 1, None).open(0)  # the epoch begins
    assert next(blocks_it).num_rows == 2
    stream._call.cancel()  # what a killed process looks like to the server
    rest = [t.num_rows for t in other.iter_blocks()]
    assert sum(rest) == 18  # the survivor gets everything else
    deadline = time.monotonic() + 5  # gRPC reports the cancellation asynchronously
    while not server.dispenser.policy.lost and time.monotonic() < deadline:
        time.sleep(0.01)
    [lost] = server.dispenser.policy.lost
    assert (lost.split, lost.blocks, lost.rows) == (0, 1, 2)
    blocks_it.close()


def test_an_epoch_waits_for_every_split_over_grpc(serve):
    """Split 0 starts reading first and gets nothing until split 1 asks; a slow
    split 0 then still gets its part of the stream (first come, first served)."""
    server = serve(blocks([2] * 20), 2)
    out: list[list[int]] = [[], []]
    first_block_at: list[float] = []

    def slow_reader() -> None:
        for t in split_client(server.address, 0, None).open(0).iter_blocks():
            first_block_at.append(time.monotonic())
            out[0] += t.column("id").to_pylist()
            time.sleep(0.05)

    th = threading.Thread(target=slow_reader)
    th.start()
    time.sleep(0.5)
    assert out[0] == []  # waiting for split 1
    split1_starts = time.monotonic()
    out[1] = ids_of(split_client(server.address, 1, None))
    th.join(10)
    assert min(first_block_at) >= split1_starts
    assert out[0] and out[1]
    assert sorted(out[0] + out[1]) == list(range(40))


def test_a_split_that_never_starts_fails_the_others_over_grpc(serve):
    server = serve(blocks([2] * 4), 2, start_timeout_s=0.3)
    with pytest.raises(SplitStartTimeoutError, match="split 1 of 2 did not start epoch 0"):
        ids_of(split_client(server.address, 0, None))


def test_a_stopped_server_is_an_error_not_a_short_epoch(serve):
    """streaming_split's own server used to end a split's stream silently when it
    was stopped, so the consumer took a cut epoch for a whole one (serve's raised):
    the one server raises for both."""
    server = serve(blocks([2] * 10), 1)
    stream = split_client(server.address, 0, None, prefetch=1).open(0)
    it = stream.iter_blocks()
    assert next(it).column("id").to_pylist() == [0, 1]
    server.dispenser.close()
    with pytest.raises(DataflowError, match="streaming_split: the server was stopped"):
        list(it)
