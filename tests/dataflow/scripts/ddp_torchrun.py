"""One DDP rank under ``torchrun --nproc-per-node 2`` (gloo, CPU): feeds a training
loop from ``iter_torch_batches`` / ``to_torch_dataset`` in several settings and
writes what this rank saw to ``<out>/<rank>.json`` for tests/dataflow/test_distributed.py.

Every step all-reduces a tensor, as DDP's backward does: a rank with more
batches than another would wait there (the group's timeout turns that into an
error instead of a hang).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

import dataflow as df


def double(batch: dict) -> dict:
    return {"id": batch["id"], "x": batch["id"] * 2}


def train(batches) -> dict:
    """A training loop's view of an epoch: ids per batch; checks x == 2 * id."""
    out = []
    for batch in batches:
        assert torch.equal(batch["x"], batch["id"] * 2)
        dist.all_reduce(torch.ones(1))  # every rank must reach every step
        out.append(batch["id"].tolist())
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    args = parser.parse_args()
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=45))
    rank = dist.get_rank()
    df.init("local", num_cpus=1)
    ds = df.read_parquet(args.data).map_batches(double)
    seen: dict[str, list] = {}

    # iter_torch_batches picks up the process group; the shuffle seed comes from rank 0.
    for epoch in range(2):
        batches = ds.iter_torch_batches(batch_size=64, local_shuffle_buffer_size=300)
        seen[f"iter/{epoch}"] = train(batches)

    # DataLoader workers inside each rank, padding the remainder.
    tds = ds.to_torch_dataset(batch_size=64, ddp_remainder="pad")
    loader = DataLoader(tds, batch_size=None, num_workers=2)
    for epoch in range(2):
        seen[f"workers/{epoch}"] = train(loader)

    # A filter: the ranks count their shares and agree on the rows per rank.
    kept = ds.filter(expr="id % 7 != 3")
    loader = DataLoader(kept.to_torch_dataset(batch_size=64), batch_size=None, num_workers=2)
    seen["filter"] = train(loader)

    # A rank whose count fails takes the others down with it (no rank left waiting).
    failing = ds.filter(lambda row: 1 // int(row["id"] < 4000) > 0)  # rows >= 4000: rank 1
    try:
        failing.to_torch_dataset(batch_size=64)
        seen["count_error"] = "no error"
    except Exception as e:
        seen["count_error"] = f"{type(e).__name__}: {e}"

    # Resume mid-epoch from rank 0's state_dict (the same on every rank).
    kw = dict(batch_size=50, local_shuffle_buffer_size=200, local_shuffle_seed=11)
    first = ds.to_torch_dataset(**kw)
    it = iter(DataLoader(first, batch_size=None))
    head = train(next(it) for _ in range(5))
    box = [first.state_dict()]
    dist.broadcast_object_list(box, src=0)
    again = ds.to_torch_dataset(**kw)
    again.load_state_dict(box[0])
    seen["resume"] = head + train(DataLoader(again, batch_size=None))
    whole = ds.to_torch_dataset(**kw)
    seen["resume_reference"] = train(DataLoader(whole, batch_size=None))

    with open(os.path.join(args.out, f"{rank}.json"), "w") as f:
        json.dump(seen, f)
    df.shutdown()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
