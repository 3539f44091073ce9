"""ddp_feed: ``feed`` consumed by 2 DDP ranks (torch.distributed, gloo, CPU).

Each rank is a process as ``torchrun --nproc-per-node 2`` would start
(``RANK``, ``LOCAL_WORLD_SIZE``... set; 127.0.0.1): it joins the process group,
runs read_parquet(a, b, c) → map_batches(standardize) → iter_torch_batches(4096)
and all-reduces a tensor at every step, as DDP's backward does, so a rank waits
for the slower one at each step. Compare with ``feed`` (one process) in the
same run.

Two ways for the ranks to share the work (``--param ddp_split=N``):

* ``0`` (default, what ``iter_torch_batches`` does under DDP): each rank reads
  its own half of the rows on its own pool, half the machine's CPUs each;
* ``1``: one execution on rank 0 (a pool of all CPUs) served to both ranks by
  ``streaming_split(2, equal=True)``; rank 1 receives over gRPC.

The ranks' start-up (interpreter, imports, process group, pools) is reported as
``startup_s``; the timed window runs from a barrier that every rank passes once
ready to the last row on any rank. ``extra`` in the record has each rank's
rows, rows/s and time to its first batch (from the barrier); ``ttfb`` is the
largest of those, when every rank can take its first step.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import tempfile
import time
from pathlib import Path

from benchmarks.workloads import Result, RunContext, Workload, checksum
from benchmarks.workloads.feed import BATCH, COLUMNS, standardize

RANKS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, port: int, files: list[str], split: bool, out: str) -> None:
    """One DDP rank (a spawned process): feed its training loop, write what it saw."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(RANKS),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(RANKS),
        GLOO_SOCKET_IFNAME="lo",
        DATAFLOW_DISABLE_PROGRESS_BARS="1",
    )
    import datetime

    import torch
    import torch.distributed as dist

    import dataflow as df
    from runtime.resources import detect_num_cpus

    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=900))
    ds = df.read_parquet(files, columns=list(COLUMNS))
    ds = ds.map_batches(standardize, batch_format="numpy")
    if split:
        # One pool for everybody, on rank 0: all of the machine's CPUs.
        box = [None]
        if rank == 0:
            df.init(num_cpus=detect_num_cpus(), prestart_workers=True)
            box = [ds.streaming_split(RANKS, equal=True)]
        dist.broadcast_object_list(box, src=0)
        splits = box[0]
        batches = splits[rank].iter_torch_batches(batch_size=BATCH)
    else:
        df.init(prestart_workers=True)  # this rank's share of the machine
        batches = ds.iter_torch_batches(batch_size=BATCH)
    step = torch.zeros(1)
    dist.barrier()
    start = time.time()
    first = None
    rows = 0
    sums = dict.fromkeys(COLUMNS, 0.0)
    for batch in batches:
        if first is None:
            first = time.time()
        dist.all_reduce(step)  # as DDP's gradient all-reduce: both ranks take every step
        rows += len(batch["a"])
        for k in COLUMNS:
            sums[k] += float(batch[k].double().sum())
    end = time.time()
    dist.barrier()  # rank 0 serves until rank 1 is done (split)
    with open(out, "w") as f:
        json.dump({"rows": rows, "sums": sums, "start": start, "first": first, "end": end}, f)
    df.shutdown()
    dist.destroy_process_group()


def _dataflow(ctx: RunContext) -> Result:
    import dataflow

    dataflow.shutdown()  # the harness's pool: the ranks bring their own
    split = bool(ctx.param("ddp_split", 0))
    spawn = multiprocessing.get_context("spawn")
    launched = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        paths = [str(Path(tmp, f"{r}.json")) for r in range(RANKS)]
        port = _free_port()
        files = list(ctx.data.main_files)
        ranks = [
            spawn.Process(target=rank_main, args=(r, port, files, split, paths[r]))
            for r in range(RANKS)
        ]
        for p in ranks:
            p.start()
        try:
            for p in ranks:
                p.join(3600)
        finally:
            for p in ranks:
                if p.is_alive():
                    p.terminate()
                    p.join(30)
        codes = [p.exitcode for p in ranks]
        if codes != [0] * RANKS:
            raise RuntimeError(f"ddp_feed: rank processes exited with {codes}")
        reports = [json.loads(Path(p).read_text()) for p in paths]
    start = min(r["start"] for r in reports)
    wall = max(r["end"] for r in reports) - start
    rows = sum(r["rows"] for r in reports)
    sums = {k: sum(r["sums"][k] for r in reports) for k in COLUMNS}
    per_rank = [
        {
            "rank": i,
            "rows": r["rows"],
            "rows_per_s": round(r["rows"] / max(1e-9, r["end"] - r["start"])),
            "ttfb_s": None if r["first"] is None else round(r["first"] - r["start"], 4),
        }
        for i, r in enumerate(reports)
    ]
    firsts = [r["ttfb_s"] for r in per_rank if r["ttfb_s"] is not None]
    ctx.first_batch_s = max(firsts) if firsts else None
    return Result(
        rows=rows,
        checksum=checksum(rows=rows, **{f"sum_{k}": v for k, v in sums.items()}),
        wall_s=wall,
        startup_s=start - launched,
        extra={
            "ddp": "one execution on rank 0, streaming_split" if split else "a share per rank",
            "ranks": per_rank,
            "total_rows_per_s": round(rows / wall) if wall > 0 else None,
        },
    )


WORKLOAD = Workload(
    name="ddp_feed",
    description="feed into 2 DDP ranks (gloo, CPU); --param ddp_split=1: served from rank 0",
    dataset="main",
    runs={"dataflow": _dataflow},
    preload=("torch",),
)
