"""BlockDispenser and its policies over plain iterators of tables (no gRPC, no executor)."""

from __future__ import annotations

import threading
import time

import pytest

from dataflow.errors import ServiceClosedError, SplitClosedError, SplitStartTimeoutError
from dataflow.service.dispenser import BlockDispenser, Ticket
from dataflow.service.policies import EqualSplit, FirstCome, Reserve
from tests.dataflow.service.helpers import blocks


def splits(make, n: int, *, equal: bool = False, **kw) -> BlockDispenser:
    return BlockDispenser(make, EqualSplit(n, **kw) if equal else FirstCome(n, **kw))


def drain(c: BlockDispenser, split: int, epoch: int = 0) -> list[int]:
    ticket = c.join(epoch, split)
    ids: list[int] = []
    while (t := c.fetch(ticket)) is not None:
        ids.extend(t.column("id").to_pylist())
    c.leave(ticket)
    return ids


def rest_of(c: BlockDispenser, ticket: Ticket) -> list[int]:
    ids: list[int] = []
    while (t := c.fetch(ticket)) is not None:
        ids.extend(t.column("id").to_pylist())
    return ids


def run_threads(c: BlockDispenser, n: int, epoch: int = 0) -> list[list[int]]:
    results: list[list[int]] = [[] for _ in range(n)]

    def work(i: int) -> None:
        results[i] = drain(c, i, epoch)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    return results


def test_each_row_goes_to_exactly_one_split():
    sizes = [5, 7, 3, 9, 1, 4, 6]
    c = splits(lambda: iter(blocks(sizes)), 3)
    parts = run_threads(c, 3)
    assert sorted(i for p in parts for i in p) == list(range(sum(sizes)))


def test_equal_gives_every_split_the_same_rows():
    sizes = [10, 3, 17, 1, 8, 13, 2, 5]  # 59 rows: 19 each, 2 dropped
    c = splits(lambda: iter(blocks(sizes)), 3, equal=True, max_buffered_blocks=2)
    parts = run_threads(c, 3)
    assert [len(p) for p in parts] == [19, 19, 19]
    seen = [i for p in parts for i in p]
    assert len(set(seen)) == 57 and set(seen) <= set(range(59))
    assert c.policy.dropped_rows == 2


def test_equal_with_one_consumer_far_ahead_stays_balanced():
    # split 0 drains alone first: it may only run ahead by what the buffer holds
    c = splits(lambda: iter(blocks([4] * 10)), 2, equal=True, max_buffered_blocks=3)
    t0, t1 = c.join(0, 0), c.join(0, 1)
    got0 = 0
    fetched = threading.Event()

    def lead() -> None:
        nonlocal got0
        while (t := c.fetch(t0)) is not None:
            got0 += t.num_rows
        fetched.set()

    th = threading.Thread(target=lead)
    th.start()
    assert not fetched.wait(0.5)  # split 0 waits for split 1: bounded run-ahead
    assert got0 <= 4 * 3
    got1 = 0
    while (t := c.fetch(t1)) is not None:
        got1 += t.num_rows
    th.join(5)
    assert got0 == got1 == 20


def test_epochs_re_execute_after_every_split_finished():
    calls = []

    def make():
        calls.append(1)
        return iter(blocks([3, 3]))

    c = splits(make, 2)
    for epoch in range(2):
        parts = run_threads(c, 2, epoch)
        assert sorted(parts[0] + parts[1]) == list(range(6))
    assert len(calls) == 2
    with pytest.raises(ValueError, match="epoch 5"):
        c.join(5, 0)


def test_dead_consumer_reports_its_unconsumed_blocks_and_others_finish():
    c = splits(lambda: iter(blocks([2] * 6)), 2)
    t0, t1 = c.join(0, 0), c.join(0, 1)
    a, b = c.fetch(t0), c.fetch(t0)
    c.ack(t0, 2)
    c.leave(t0, clean=False)  # died holding its second block
    rest = rest_of(c, t1)
    c.leave(t1)
    assert [(x.split, x.blocks, x.rows) for x in c.policy.lost] == [(0, 1, 2)]
    assert sorted(a.column("id").to_pylist() + b.column("id").to_pylist() + rest) == list(range(12))


def test_a_clean_close_or_a_death_after_the_end_loses_nothing():
    c = splits(lambda: iter(blocks([2] * 4)), 2)
    t0, t1 = c.join(0, 0), c.join(0, 1)
    assert c.fetch(t0).num_rows == 2
    c.leave(t0)  # closed early on purpose, its block unacknowledged
    assert len(rest_of(c, t1)) == 6
    c.leave(t1, clean=False)  # died after its share ended
    assert c.policy.lost == []
    assert sorted(sum(run_threads(c, 2, 1), [])) == list(range(8))  # epoch 1 runs


def test_execution_error_reaches_every_split():
    def make():
        yield blocks([2])[0]
        raise RuntimeError("boom in udf")

    c = splits(make, 2)
    tickets = [c.join(0, 0), c.join(0, 1)]
    assert c.fetch(tickets[0]).num_rows == 2
    for ticket in tickets:
        with pytest.raises(RuntimeError, match="boom in udf"):
            c.fetch(ticket)


def test_close_wakes_waiting_consumers_and_closes_the_stream():
    closed = []

    def make():
        try:
            yield from blocks([1] * 100)
        finally:
            closed.append(True)

    c = splits(make, 2)
    t0, _ = c.join(0, 0), c.join(0, 1)
    assert c.fetch(t0).num_rows == 1
    c.close()
    assert closed == [True]
    with pytest.raises(SplitClosedError):
        c.fetch(t0)


def test_close_wakes_a_consumer_waiting_for_the_others_to_begin():
    c = splits(lambda: iter(blocks([1])), 2)
    t0 = c.join(0, 0)
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            c.fetch(t0)
        except BaseException as e:
            errors.append(e)

    th = threading.Thread(target=wait)
    th.start()
    time.sleep(0.3)
    c.close()
    th.join(5)
    assert not th.is_alive() and [type(e) for e in errors] == [ServiceClosedError]


def fetch_in_thread(c: BlockDispenser, split: int, epoch: int) -> tuple[threading.Thread, list]:
    """Join ``split`` and fetch one block on a thread; the list gets the ticket, then
    the block's ids (or the exception)."""
    got: list = []

    def run() -> None:
        got.append(c.join(epoch, split))
        try:
            got.append(c.fetch(got[0]).column("id").to_pylist())
        except BaseException as e:
            got.append(e)

    th = threading.Thread(target=run)
    th.start()
    return th, got


@pytest.mark.parametrize("equal", [False, True])
def test_an_epoch_begins_only_when_every_split_asked(equal):
    c = splits(lambda: iter(blocks([2] * 6)), 2, equal=equal)
    for epoch in range(2):  # the second epoch waits for every split too
        th, got = fetch_in_thread(c, 0, epoch)
        time.sleep(0.4)
        assert th.is_alive() and len(got) == 1  # split 0 waits for split 1
        t1 = c.join(epoch, 1)
        mine = c.fetch(t1).column("id").to_pylist()
        th.join(5)
        assert not th.is_alive() and len(got[1]) >= 1 and len(mine) >= 1
        # Both got rows; the rest is shared out as usual.
        rest = {0: got[1] + rest_of(c, got[0]), 1: mine + rest_of(c, t1)}
        c.leave(got[0])
        c.leave(t1)
        assert sorted(rest[0] + rest[1]) == list(range(12))
        if equal:
            assert len(rest[0]) == len(rest[1]) == 6


def test_a_split_that_never_begins_fails_the_others_naming_it():
    c = splits(lambda: iter(blocks([2] * 6)), 3, start_timeout_s=0.3)
    th, got = fetch_in_thread(c, 0, 0)
    th.join(5)
    assert not th.is_alive()
    [_, error] = got
    assert isinstance(error, SplitStartTimeoutError) and isinstance(error, TimeoutError)
    assert str(error) == (
        "streaming_split: splits 1, 2 of 3 did not start epoch 0 within 0.3 s of split 0; "
        "an epoch begins only when every split asks for data, so iterate all of them at "
        "once (one consumer per split), or raise DataContext.split_start_timeout_s if some "
        "start later"
    )
    # A split arriving after the timeout gets the same error.
    t1 = c.join(0, 1)
    with pytest.raises(SplitStartTimeoutError, match="splits 1, 2 of 3"):
        c.fetch(t1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="positive int"):
        FirstCome(0)
    c = splits(lambda: iter([]), 2)
    with pytest.raises(ValueError, match="out of range"):
        c.join(0, 2)
    with pytest.raises(ValueError, match="epochs must be"):
        Reserve(epochs=0)


def test_reserve_serves_again_what_a_consumer_did_not_acknowledge():
    c = BlockDispenser(lambda: iter(blocks([10, 10, 10])), Reserve())
    a, b = c.join(None), c.join(None)
    first, second = c.fetch(a), c.fetch(a)
    c.ack(a, 14)  # the first block and 4 rows of the second reached the user
    c.leave(a)
    got = rest_of(c, b)
    assert first.num_rows == second.num_rows == 10
    assert got == list(range(14, 30))  # the cut block first, then the rest
    assert c.policy.reserved_rows == 6
    c.ack(b, len(got))
    c.leave(b)
    assert c.wait(0)


def test_the_old_error_names_are_the_one_pair():
    from dataflow.errors import ServiceUsageError
    from dataflow.service.coordinator import SplitClosedError as OldSplitClosed
    from dataflow.service.coordinator import SplitUsageError
    from dataflow.service.feed import FeedClosedError, FeedUsageError

    assert OldSplitClosed is FeedClosedError is ServiceClosedError
    assert SplitUsageError is FeedUsageError is ServiceUsageError
    assert issubclass(ServiceUsageError, ValueError)
