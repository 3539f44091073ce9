"""Feeding DDP ranks (dataflow/distributed.py): each rank's share of every epoch.

Most tests play every rank in one process with explicit ``rank=``/``world_size=``
(the shares are computed without talking to other ranks); the slow ones run real
process groups on gloo under torchrun and under a Lightning ``Trainer``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

import dataflow as df

ROWS = 1003
WORLD = 3
BATCH = 64
ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).parent / "scripts"


@pytest.fixture(scope="module", autouse=True)
def session():
    df.init("local", num_cpus=2)
    yield
    df.shutdown()


def _write_ids(path: Path, n: int = ROWS, files: int = 7) -> Path:
    table = pa.table({"id": np.arange(n), "x": np.arange(n) * 0.5})
    for k in range(files):
        lo, hi = n * k // files, n * (k + 1) // files
        pq.write_table(table.slice(lo, hi - lo), path / f"part-{k}.parquet", row_group_size=50)
    return path


@pytest.fixture(params=["parquet", "memory"])
def source(request, tmp_path) -> df.Dataset:
    """Ids 0..ROWS-1 from 7 Parquet files (row groups of 50) or 3 in-memory
    blocks, through a map_batches (y = 2x = id) as a training transform."""
    if request.param == "parquet":
        ds = df.read_parquet(str(_write_ids(tmp_path)))
    else:
        table = pa.table({"id": np.arange(ROWS), "x": np.arange(ROWS) * 0.5})
        ds = df.from_arrow([table.slice(0, 100), table.slice(100, 550), table.slice(650)])
    return ds.map_batches(lambda b: {"id": b["id"], "y": b["x"] * 2})


def _batches(batches) -> list[list[int]]:
    out = []
    for batch in batches:
        if "y" in batch:
            assert torch.equal(batch["y"], batch["id"].double())
        out.append(batch["id"].tolist())
    return out


def _flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_every_rank_gets_an_equal_disjoint_share(source, remainder):
    ranks = [
        _batches(
            source.iter_torch_batches(
                batch_size=BATCH, rank=r, world_size=WORLD, ddp_remainder=remainder
            )
        )
        for r in range(WORLD)
    ]
    per_rank = ROWS // WORLD if remainder == "drop" else -(-ROWS // WORLD)
    assert [len(b) for b in ranks] == [-(-per_rank // BATCH)] * WORLD  # 6 batches each
    # In dataset order: rank r has rows [r * per_rank, (r + 1) * per_rank) (mod ROWS).
    for r, batches in enumerate(ranks):
        assert _flat(batches) == [i % ROWS for i in range(r * per_rank, (r + 1) * per_rank)]
    seen = collections.Counter(i for b in ranks for i in _flat(b))
    if remainder == "drop":  # the last ROWS % WORLD = 1 row goes to nobody
        assert seen == collections.Counter(range(ROWS - 1))
    else:  # the first WORLD * per_rank - ROWS = 2 rows twice, as DistributedSampler pads
        assert seen == collections.Counter([*range(ROWS), 0, 1])


@pytest.mark.parametrize("num_workers", [1, 2])
def test_dataloader_workers_split_each_rank_share_into_whole_batches(source, num_workers):
    seen = []
    for r in range(WORLD):
        tds = source.to_torch_dataset(batch_size=BATCH, rank=r, world_size=WORLD)
        batches = _batches(DataLoader(tds, batch_size=None, num_workers=num_workers))
        assert len(batches) == len(tds) == 6
        assert sorted(len(b) for b in batches) == [334 - 5 * BATCH] + [BATCH] * 5
        seen += _flat(batches)
    assert collections.Counter(seen) == collections.Counter(range(ROWS - 1))


def test_epochs_deal_the_shares_anew_from_a_shared_seed(source):
    kw = dict(batch_size=BATCH, local_shuffle_buffer_size=100, local_shuffle_seed=7)
    loaders = [
        DataLoader(source.to_torch_dataset(rank=r, world_size=WORLD, **kw), batch_size=None)
        for r in range(WORLD)
    ]
    epochs = [[_batches(loader) for loader in loaders] for _ in range(3)]
    for ranks in epochs:
        assert [len(b) for b in ranks] == [6] * WORLD
        assert sorted(i for b in ranks for i in _flat(b)) == list(range(ROWS - 1))
        # Shuffled within the share: not in dataset order.
        assert all(_flat(b) != sorted(_flat(b)) for b in ranks)
    # Each rank draws its own order (the seed is shared, the draws are not).
    offsets = [[i - min(_flat(b)) for i in _flat(b)] for b in epochs[0]]
    assert offsets[0] != offsets[1] != offsets[2]
    shares = [[frozenset(_flat(b)) for b in ranks] for ranks in epochs]
    assert len({tuple(s) for s in shares}) > 1  # the same shares, dealt to other ranks
    assert all(set(s) == set(shares[0]) for s in shares)
    assert epochs[0][0] != epochs[1][0] or epochs[0][0] != epochs[2][0]
    # set_epoch picks an epoch, as on a DistributedSampler.
    again = source.to_torch_dataset(rank=1, world_size=WORLD, **kw)
    again.set_epoch(2)
    assert _batches(DataLoader(again, batch_size=None)) == epochs[2][1]
    workers = source.to_torch_dataset(rank=1, world_size=WORLD, **kw)
    workers.set_epoch(2)
    loader = DataLoader(workers, batch_size=None, num_workers=2)
    assert set(_flat(_batches(loader))) == shares[2][1]


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("remainder", ["drop", "pad"])
def test_a_filter_is_counted_first_and_every_rank_runs_as_many_batches(
    source, remainder, num_workers
):
    # Skewed: the last share of the input keeps far fewer rows than the others.
    kept = source.filter(expr="id % 5 != 0 and id < 800")
    want = [i for i in range(ROWS) if i % 5 and i < 800]
    shares = [
        [i for i in want if a <= i < b] for a, b in ((0, 334), (334, 668), (668, ROWS))
    ]  # 267, 267 and 106 rows
    rows = 106 if remainder == "drop" else 267
    ranks = []
    for r in range(WORLD):
        tds = kept.to_torch_dataset(
            batch_size=BATCH, rank=r, world_size=WORLD, ddp_remainder=remainder
        )
        batches = _batches(DataLoader(tds, batch_size=None, num_workers=num_workers))
        assert len(batches) == len(tds) == -(-rows // BATCH)
        ranks.append(_flat(batches))
    if remainder == "drop":  # each rank keeps the first `rows` rows of its share
        expected = [s[:rows] for s in shares]
    else:  # the short share is topped up with the first rows of the dataset
        expected = [*shares[:2], shares[2] + want[: rows - len(shares[2])]]
    if num_workers:  # the loader interleaves its workers' batches
        ranks, expected = [sorted(r) for r in ranks], [sorted(r) for r in expected]
    assert ranks == expected
    if num_workers:
        return  # the stats below are the main process's run
    stats = kept.stats()
    dropped, padded = (2 * (267 - 106), 0) if remainder == "drop" else (0, 267 - 106)
    assert f"share: rank 2 of 3: {rows} rows; {dropped} rows of the epoch dropped, " in stats
    assert stats.endswith(f"{padded} padded")


def test_counted_units_of_a_share_add_up_to_its_rows(tmp_path):
    from dataflow.distributed import UNITS, DistributedShare

    ds = df.read_parquet(str(_write_ids(tmp_path))).filter(expr="id % 3 == 0 or id > 900")
    share = DistributedShare.prepare(
        ds._plan, rank=0, world_size=2, remainder="drop", batch_size=10, where="test"
    )
    assert share.counts is not None and [len(c) for c in share.counts] == [UNITS, UNITS]
    for slot, (start, stop) in enumerate([(0, 501), (501, ROWS)]):
        bounds = [start + (stop - start) * u // UNITS for u in range(UNITS + 1)]
        assert share.counts[slot] == tuple(
            sum(1 for i in range(a, b) if i % 3 == 0 or i > 900) for a, b in zip(bounds, bounds[1:])
        )
    assert share.rows_per_rank == min(sum(c) for c in share.counts) == 167


def test_a_map_batches_that_drops_rows_is_padded_and_logged(caplog):
    ds = df.range(300, override_num_blocks=3).map_batches(
        lambda b: {"id": b["id"][b["id"] % 10 != 0]}
    )
    with caplog.at_level(logging.WARNING, logger="dataflow.distributed"):
        ranks = [
            _batches(ds.iter_torch_batches(batch_size=32, rank=r, world_size=2)) for r in range(2)
        ]
    assert [len(b) for b in ranks] == [5, 5]  # 150 rows each, whatever the UDF did
    assert [len(_flat(b)) for b in ranks] == [150, 150]
    kept = [i for i in range(150) if i % 10]
    assert _flat(ranks[0]) == kept + kept[:15]  # padded with the dataset's first rows
    assert "yielded fewer rows than planned (a map_batches or flat_map that changes the " in (
        caplog.text
    )


def test_rank0_state_resumes_every_rank_mid_epoch(source):
    kw = dict(batch_size=BATCH, local_shuffle_buffer_size=100, local_shuffle_seed=5)
    reference = [
        _batches(DataLoader(source.to_torch_dataset(rank=r, world_size=WORLD, **kw), None))
        for r in range(WORLD)
    ]
    first = source.to_torch_dataset(rank=0, world_size=WORLD, **kw)
    it = iter(DataLoader(first, batch_size=None))
    _batches(next(it) for _ in range(2))
    state = first.state_dict()
    assert (state["epoch"], state["rows"], state["world_size"]) == (0, 2 * BATCH, WORLD)
    for r in range(WORLD):
        resumed = source.to_torch_dataset(rank=r, world_size=WORLD, **kw)
        resumed.load_state_dict(state)
        assert _batches(DataLoader(resumed, batch_size=None)) == reference[r][2:]
    other = source.to_torch_dataset(rank=0, world_size=2, **kw)
    with pytest.raises(ValueError, match="saved by a job of world_size=3 with 334 rows per rank"):
        other.load_state_dict(state)


def test_state_dict_after_dataloader_workers_is_a_clear_error():
    tds = df.range(200).to_torch_dataset(batch_size=50, rank=0, world_size=2)
    assert sum(len(b["id"]) for b in DataLoader(tds, batch_size=None, num_workers=2)) == 100
    with pytest.raises(RuntimeError, match="DataLoader workers iterated this dataset"):
        tds.state_dict()


def test_world_size_one_reads_everything():
    assert len(_flat(_batches(df.range(300).iter_torch_batches(rank=0, world_size=1)))) == 300


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(rank=1), ValueError, "to_torch_dataset: pass both rank= and world_size=, or neither"),
        (dict(rank=2, world_size=2), ValueError, "rank must be in 0..world_size-1"),
        (dict(rank=0, world_size=2, ddp_remainder="even"), ValueError, "ddp_remainder must be"),
        (
            dict(rank=0, world_size=2, batch_size=None),
            df.PlanError,
            "to_torch_dataset on rank 0 of 2: batch_size must be a positive int under DDP "
            "(got None): every rank must run the same number of batches",
        ),
        (
            dict(rank=0, world_size=2, local_shuffle_buffer_size=10),
            ValueError,
            "shuffling without a process group needs local_shuffle_seed= (the same on every rank)",
        ),
    ],
)
def test_bad_ddp_arguments_fail_before_anything_runs(kwargs, error, message):
    with pytest.raises(error) as info:
        df.range(10).to_torch_dataset(**kwargs)
    assert message in str(info.value)


def test_a_plan_that_needs_every_row_names_the_fix():
    with pytest.raises(df.PlanError) as info:
        df.range(10).random_shuffle(seed=1).iter_torch_batches(rank=1, world_size=2)
    assert str(info.value).startswith(
        "iter_torch_batches on rank 1 of 2: random_shuffle(seed=1) needs the rows of every "
        "share, so the plan cannot be split into independent shares at its sources; each "
        "rank reads its own share of the sources"
    )
    assert "pass local_shuffle_buffer_size= or use randomize_block_order()" in str(info.value)


def test_sources_without_row_counts_deal_read_tasks_and_count(tmp_path, monkeypatch):
    monkeypatch.setattr(df.DataContext.get_current(), "target_min_block_size", 1)
    for k in range(6):
        pacsv.write_csv(pa.table({"id": range(k * 50, k * 50 + 50)}), tmp_path / f"{k}.csv")
    ds = df.read_csv(str(tmp_path))
    ranks = [
        _flat(_batches(ds.iter_torch_batches(batch_size=20, rank=r, world_size=2)))
        for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 150
    assert sorted(ranks[0] + ranks[1]) == list(range(300))


# -- Dataset.shard --------------------------------------------------------------------


def test_shard_cuts_contiguous_row_ranges(source):
    shards = [source.shard(4, i).take_all() for i in range(4)]
    assert [[r["id"] for r in s] for s in shards] == [
        list(range(ROWS * i // 4, ROWS * (i + 1) // 4)) for i in range(4)
    ]
    assert source.shard(4, 3).count() == 251
    equal = [len(source.shard(4, i, equal=True).take_all()) for i in range(4)]
    assert equal == [250] * 4


def test_shard_of_a_source_without_row_counts_deals_read_tasks(tmp_path, monkeypatch):
    monkeypatch.setattr(df.DataContext.get_current(), "target_min_block_size", 1)
    for k in range(4):
        pacsv.write_csv(pa.table({"id": range(k * 10, k * 10 + 10)}), tmp_path / f"{k}.csv")
    ds = df.read_csv(str(tmp_path))
    shards = [sorted(r["id"] for r in ds.shard(2, i).take_all()) for i in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(40)) and all(shards)
    with pytest.raises(df.PlanError, match="shard: equal=True needs the row count"):
        ds.shard(2, 0, equal=True)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((2, 2), df.PlanError, "shard: index must be in 0..num_shards-1"),
        ((0, 0), df.PlanError, "shard: num_shards must be an int >= 1, got 0"),
        ((2.0, 0), df.PlanError, "shard: num_shards must be an int >= 1, got 2.0"),
    ],
)
def test_shard_bad_arguments(args, error, message):
    with pytest.raises(error, match=message):
        df.range(10).shard(*args)


def test_shard_refuses_a_plan_that_needs_every_row():
    with pytest.raises(df.PlanError, match="shard: sort"):
        df.range(10).sort("id").shard(2, 0)


# -- real process groups --------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(port: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "GLOO_SOCKET_IFNAME": "lo",  # gloo binds to loopback
        "DATAFLOW_DISABLE_PROGRESS_BARS": "1",
    }


def _run(cmd: list[str], port: int, out: Path) -> list[dict]:
    done = subprocess.run(
        cmd, env=_env(port), cwd=ROOT, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return [json.loads((out / f"{rank}.json").read_text()) for rank in range(2)]


def _check_epoch(ranks: list[list[list[int]]], rows: list[int]) -> None:
    """Both ranks ran as many batches and together saw ``rows`` exactly once."""
    assert len(ranks[0]) == len(ranks[1])
    assert collections.Counter(_flat(ranks[0]) + _flat(ranks[1])) == collections.Counter(rows)


@pytest.mark.slow
def test_torchrun_two_ranks(tmp_path):
    """5,000 rows, batches of 64: 2,500 rows and 40 batches (the last of 4 rows) a rank."""
    data = tmp_path / "data"
    data.mkdir()
    _write_ids(data, n=5000)
    port = _free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
    out = _run([*cmd, str(SCRIPTS / "ddp_torchrun.py"), str(data), str(tmp_path)], port, tmp_path)
    every = list(range(5000))
    for key in ("iter/0", "iter/1", "workers/0", "workers/1"):
        _check_epoch([o[key] for o in out], every)
        assert len(out[0][key]) == 40
    # The shuffled epochs: the same two halves (dealt from rank 0's seed), in new orders.
    halves = [{frozenset(_flat(o[f"iter/{e}"])) for o in out} for e in range(2)]
    assert halves[0] == halves[1] == {frozenset(range(2500)), frozenset(range(2500, 5000))}
    assert out[0]["iter/0"] != out[0]["iter/1"]
    assert _flat(out[0]["iter/0"]) != sorted(_flat(out[0]["iter/0"]))
    _check_epoch([o["filter"] for o in out], [i for i in every if i % 7 != 3])
    assert out[1]["count_error"].startswith("UserCodeError: filter(<lambda>)")
    assert "ZeroDivisionError" in out[1]["count_error"]
    assert out[0]["count_error"].startswith(
        "DataflowError: to_torch_dataset on rank 0 of 2: rank 1 failed to count the rows "
        "of its share, so the ranks cannot agree on how many each gets: UserCodeError: "
    )
    for o in out:  # 5 batches, then the rest from rank 0's state_dict
        assert o["resume"] == o["resume_reference"]
    _check_epoch([o["resume"] for o in out], every)


@pytest.mark.slow
def test_lightning_ddp_two_ranks(tmp_path):
    pytest.importorskip("lightning", reason="Lightning is not installed (pip install lightning)")
    data = tmp_path / "data"
    data.mkdir()
    _write_ids(data, n=5000)
    port = _free_port()
    out = _run(
        [sys.executable, str(SCRIPTS / "ddp_lightning.py"), str(data), str(tmp_path)],
        port,
        tmp_path,
    )
    every = list(range(5000))
    for epoch in ("0", "1"):
        _check_epoch([o["fit"][epoch] for o in out], every)
        assert len(out[0]["fit"][epoch]) == 40  # ceil(2,500 / 64)
    for o in out:  # resumed after step 7 from the checkpoint: the rest of epoch 0
        assert o["resumed"] == o["fit"]["0"][7:]
