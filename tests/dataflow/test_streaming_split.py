"""Dataset.streaming_split consumed by other processes (DDP ranks on gloo)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import threading
import time

import pytest
import torch.distributed as dist
import torch.multiprocessing as tmp

import dataflow as df
from dataflow.errors import SplitStartTimeoutError
from dataflow.service.split import coordinator_of

ROWS = 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, its, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ids, steps = [], 0
        for batch in its[rank].iter_torch_batches(batch_size=16):
            ids += batch["id"].tolist()
            steps += 1
        all_steps = [None] * world
        dist.all_gather_object(all_steps, steps)
        with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
            json.dump({"ids": ids, "steps": all_steps}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("equal", [False, True])
def test_two_ddp_ranks_see_every_row_once(tmp_path, equal):
    ds = df.range(ROWS, override_num_blocks=10).map_batches(lambda b: {"id": b["id"] * 1})
    its = ds.streaming_split(2, equal=equal)
    tmp.spawn(_rank_main, args=(2, its, _free_port(), str(tmp_path)), nprocs=2, join=True)
    out = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    seen = out[0]["ids"] + out[1]["ids"]
    assert sorted(seen) == list(range(ROWS))
    if equal:
        assert len(out[0]["ids"]) == len(out[1]["ids"]) == ROWS // 2
        assert out[0]["steps"] == out[1]["steps"] == [32, 32]


def _consume(it, die_after: int | None, out_path: str) -> None:
    ids = []
    for k, batch in enumerate(it.iter_batches(batch_size=100, prefetch_batches=0)):
        ids += [int(i) for i in batch["id"]]
        if die_after is not None and k + 1 == die_after:
            with open(out_path, "w") as f:
                json.dump(ids, f)
            os._exit(1)  # a crashed rank: no goodbye to the coordinator
    with open(out_path, "w") as f:
        json.dump(ids, f)


@pytest.mark.slow
def test_a_dead_consumer_does_not_hang_the_other(tmp_path):
    its = df.range(ROWS, override_num_blocks=10).streaming_split(2)
    ctx = mp.get_context("spawn")
    paths = [str(tmp_path / f"{i}.json") for i in range(2)]
    dying = ctx.Process(target=_consume, args=(its[0], 2, paths[0]))
    survivor = ctx.Process(target=_consume, args=(its[1], None, paths[1]))
    dying.start()
    survivor.start()  # the epoch begins once both asked for data
    dying.join(60)
    assert dying.exitcode == 1
    survivor.join(60)
    assert survivor.exitcode == 0
    w0, w1 = (json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2))
    coord = coordinator_of(its[0]).policy
    delivered0 = coord.delivered_rows()[0]
    assert not set(w0) & set(w1)
    assert len(w1) + delivered0 == ROWS
    [lost] = coord.lost
    assert (lost.split, lost.epoch) == (0, 0)
    assert (
        lost.rows == delivered0 - 100 and lost.blocks == lost.rows // 100
    )  # all but the acked block
    its[0]._open_stream.keepalive.stop()


def _read_ids(it, out: list[int], pause_s: float = 0.0) -> None:
    for batch in it.iter_batches(batch_size=None, prefetch_batches=0):
        out += batch["id"].tolist()
        time.sleep(pause_s)


def test_consumers_start_each_epoch_together():
    """equal=False: the consumer that starts first waits for the other, so it
    cannot take the whole stream; the same again in the second epoch."""
    its = df.range(ROWS, override_num_blocks=20).streaming_split(2)
    for _epoch in range(2):
        first: list[int] = []
        th = threading.Thread(target=_read_ids, args=(its[0], first, 0.02))
        th.start()
        time.sleep(0.5)
        assert first == []  # consumer 0 waits for consumer 1
        second: list[int] = []
        _read_ids(its[1], second)
        th.join(30)
        assert first and second
        assert sorted(first + second) == list(range(ROWS))


def test_a_consumer_that_never_starts_fails_the_others(monkeypatch):
    monkeypatch.setattr(df.DataContext.get_current(), "split_start_timeout_s", 0.5)
    its = df.range(ROWS).streaming_split(3)
    with pytest.raises(SplitStartTimeoutError) as info:
        _read_ids(its[0], [])
    assert str(info.value).startswith(
        "streaming_split: splits 1, 2 of 3 did not start epoch 0 within 0.5 s of split 0;"
    )
    assert "DataContext.split_start_timeout_s" in str(info.value)
