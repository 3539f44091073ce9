"""The two sides of the network-namespace tests (run as separate processes).

Server: ``dataflow serve tests/dataflow/service/netns_peers.py:dataset ...``.
Consumer: ``python -m tests.dataflow.service.netns_peers ADDRESS OUT [--stop-after N]``
appends each batch's ids to OUT (one line a batch, flushed) as it gets it; with
``--stop-after`` it then writes OUT.ready and sleeps until it is killed.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import dataflow as df

ROWS = 20_000
BLOCKS = 40
BATCH = 250


def plus_one(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"id": batch["id"] + 1}


def dataset() -> df.Dataset:
    """ids 1..ROWS through a Python UDF (so the server runs worker processes)."""
    return df.range(ROWS, override_num_blocks=BLOCKS).map_batches(plus_one)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("out")
    parser.add_argument("--stop-after", type=int, default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    it = df.connect(args.address, token=os.environ.get("FEED_TOKEN"))
    with open(args.out, "w") as out:
        for i, batch in enumerate(it.iter_batches(batch_size=BATCH), 1):
            out.write(" ".join(map(str, batch["id"].tolist())) + "\n")
            out.flush()
            if i == args.stop_after:
                Path(args.out + ".ready").touch()
                time.sleep(600)  # holding its prefetched blocks until it is killed
            time.sleep(args.delay)


if __name__ == "__main__":
    main()
