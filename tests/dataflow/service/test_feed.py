"""Dataset.serve / dataflow.connect on 127.0.0.1: dynamic sharding, acknowledgements,
re-serving, epochs, tokens and errors."""

from __future__ import annotations

import queue
import threading
import time

import pyarrow as pa
import pytest

import dataflow as df
from dataflow.errors import DataflowError
from dataflow.service import client
from dataflow.service.policies import Reserve
from dataflow.service.server import BlockServer
from tests.dataflow.service.helpers import blocks


@pytest.fixture
def serve(serve_blocks):
    def start(tables_or_fn, *, epochs: int = 1, **kw) -> BlockServer:
        return serve_blocks(tables_or_fn, Reserve(epochs=epochs), **kw)

    return start


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def ids(batches) -> list[int]:
    return [i for b in batches for i in b["id"].tolist()]


def test_two_consumers_share_a_dataset_disjointly():
    df.init("inline")
    try:
        server = df.range(5000, override_num_blocks=10).serve("127.0.0.1:0")
        out: list[list[int]] = [[], []]

        def work(i: int) -> None:
            out[i] = ids(df.connect(server.address).iter_batches(batch_size=300))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(out[0] + out[1]) == list(range(5000))
        assert server.wait(5)
        server.stop()
    finally:
        df.shutdown()


def test_early_break_hands_the_rest_to_another_consumer(serve):
    server = serve(blocks([500] * 10))
    first = df.connect(server.address, prefetch_blocks=3)
    got: list[int] = []
    for batch in first.iter_batches(batch_size=100):
        got.extend(batch["id"].tolist())
        if len(got) == 300:
            break  # 3 or 4 blocks were sent ahead (credits): all but 300 rows are served again
    rest = ids(df.connect(server.address).iter_batches(batch_size=128))
    assert got == list(range(300))
    assert sorted(got + rest) == list(range(5000))
    # re-served: what had been sent when the loop broke (1 to 4 blocks of 500,
    # depending on how many credits the server had used) less the 300 handed out
    assert server.dispenser.policy.reserved_rows in (200, 700, 1200, 1700)


def test_a_dead_consumers_unacknowledged_rows_go_to_the_survivor(serve):
    server = serve(blocks([100] * 20))
    victim = df.connect(server.address)
    it = victim.iter_batches(batch_size=50, prefetch_batches=0)
    handed = ids([next(it), next(it), next(it)])  # 150 rows reached the user
    wait_until(lambda: [t.acked for t in server.dispenser.tickets.values()] == [150])
    victim._opener.stream._call.cancel()  # what a killed process looks like to the server
    wait_until(lambda: server.dispenser.policy.reserved_rows > 0)  # gRPC reports it asynchronously
    survivor = ids(df.connect(server.address).iter_batches(batch_size=64))
    assert sorted(handed + survivor) == list(range(2000))
    # half a block, then the blocks sent ahead on credit
    assert server.dispenser.policy.reserved_rows in (150, 250)


def test_exit_right_after_the_loop_hands_nothing_twice(serve, monkeypatch):
    """The service_feed duplication: a consumer got b"X" while the other waited for
    its tail; it handed the tail and its process exited with acknowledgements still
    queued, so the server re-served rows it had handed out."""

    class Starved(queue.SimpleQueue):  # the gRPC sending thread lags (busy GIL)
        def get(self, *args, **kwargs):
            time.sleep(0.03)
            return super().get(*args, **kwargs)

    monkeypatch.setattr(client.queue, "SimpleQueue", Starved)
    server = serve(blocks([100] * 4))
    first = df.connect(server.address, prefetch_blocks=4)
    it = first.iter_batches(batch_size=50, prefetch_batches=0)
    got = ids([next(it)])
    wait_until(lambda: server.dispenser.exhausted)  # all 4 blocks went to `first`
    other: list[int] = []
    late = df.connect(server.address)
    waiter = threading.Thread(target=lambda: other.extend(ids(late.iter_batches())))
    waiter.start()
    wait_until(lambda: len(server.dispenser.tickets) == 2)
    got += ids(it)
    first._opener._channel.close()  # what the process exiting does
    waiter.join(10)
    assert sorted(got) == list(range(400))
    assert other == []
    assert server.dispenser.policy.reserved_rows == 0


def test_stopped_server_is_an_error_not_an_end(serve):
    server = serve(blocks([100] * 4))
    it = df.connect(server.address, prefetch_blocks=1).iter_batches(
        batch_size=100, prefetch_batches=0
    )
    assert next(it)["id"].tolist() == list(range(100))
    server.dispenser.close()
    with pytest.raises(DataflowError, match="stopped"):
        ids(it)


def test_drop_last_rows_are_not_served_again(serve):
    server = serve(blocks([7, 7, 7]))
    it = df.connect(server.address)
    assert ids(it.iter_batches(batch_size=5, drop_last=True)) == list(range(20))
    assert server.wait(5)
    assert server.dispenser.policy.reserved_rows == 0


def test_epochs_in_order_then_a_clear_error(serve):
    server = serve(blocks([4, 4]), epochs=2)
    it = df.connect(server.address)
    assert ids(it.iter_batches(batch_size=3)) == list(range(8))
    assert ids(it.iter_batches(batch_size=3)) == list(range(8))
    assert server.wait(5)
    with pytest.raises(DataflowError, match="serves 2 epoch"):
        ids(it.iter_batches())
    with pytest.raises(ValueError, match="connect\\(\\) again"):
        it.load_state_dict(it.state_dict())


def test_torch_batches_and_state_dict(serve):
    server = serve(blocks([10, 10]))
    it = df.connect(server.address)
    batches = list(it.iter_torch_batches(batch_size=8))
    assert [b["id"].tolist() for b in batches] == [
        list(range(8)),
        list(range(8, 16)),
        list(range(16, 20)),
    ]
    assert it.state_dict()["epoch"] == 1


def test_token_is_required_off_loopback_and_checked(serve, monkeypatch):
    with pytest.raises(ValueError, match="needs a token"):
        serve([], address="0.0.0.0:0")
    server = serve(blocks([3]), token="right")
    with pytest.raises(DataflowError, match="UNAUTHENTICATED.*token"):
        ids(df.connect(server.address, token="wrong").iter_batches())
    with pytest.raises(DataflowError, match="UNAUTHENTICATED"):
        ids(df.connect(server.address).iter_batches())
    monkeypatch.setenv("DATAFLOW_SERVICE_TOKEN", "right")
    assert ids(df.connect(server.address).iter_batches()) == [0, 1, 2]


def test_execution_error_reaches_the_consumer(serve):
    def make():
        yield blocks([2])[0]
        raise ValueError("bad row 7 in normalize")

    server = serve(make)
    with pytest.raises(ValueError, match="bad row 7 in normalize"):
        ids(df.connect(server.address).iter_batches(batch_size=1))


def test_bad_arguments_and_lost_server(serve):
    with pytest.raises(ValueError, match="host:port"):
        df.connect("nowhere")
    with pytest.raises(ValueError, match="host:port"):
        serve([], address="127.0.0.1")
    server = serve(blocks([2]))
    address = server.address
    server.stop(0)
    with pytest.raises(DataflowError, match=f"stream from {address} broke"):
        ids(df.connect(address).iter_batches())


def test_serve_sends_big_blocks_as_slices_in_order(monkeypatch):
    """One 3 MiB block leaves as ~1 MiB slices (so both consumers get work), every
    row once, in order."""
    from dataflow.service import server as service_server

    monkeypatch.setattr(service_server, "_SLICE_BYTES", 1 << 20)
    block = pa.table({"id": pa.array(range(3 * (1 << 17)), pa.int64())})  # 3 MiB
    sliced = list(service_server._slices(iter([block, block.slice(0, 5)])))
    assert [t.num_rows for t in sliced] == [1 << 17] * 3 + [5]
    assert pa.concat_tables(sliced).column("id").to_pylist() == list(range(3 << 17)) + [
        0,
        1,
        2,
        3,
        4,
    ]
    server = df.range(300_000).serve("127.0.0.1:0")
    try:
        got = [len(b["id"]) for b in df.connect(server.address).iter_batches(batch_size=None)]
        assert sum(got) == 300_000 and max(got) <= (1 << 20) // 8
    finally:
        server.stop()
