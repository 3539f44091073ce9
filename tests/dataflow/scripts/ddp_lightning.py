"""A Lightning ``Trainer(strategy="ddp", devices=2, accelerator="cpu")`` fed by
``to_torch_dataset``; Lightning launches rank 1 by running this script again.
Writes what each rank trained on to ``<out>/<rank>.json`` for
tests/dataflow/test_distributed.py.

Two fits: two epochs, checkpointed (with the dataset's ``state_dict()``) after
``STOP_AT`` steps; then a second trainer resumes from that mid-epoch checkpoint.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from collections import defaultdict

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader

import dataflow as df

BATCH = 64
STOP_AT = 7


def double(batch: dict) -> dict:
    return {"id": batch["id"], "x": batch["id"] * 2}


class Model(pl.LightningModule):
    def __init__(self, data: str, workers: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.data = data
        self.workers = workers
        self.seen: dict[int, list] = defaultdict(list)
        self.resume_from = None
        self.tds = None

    def train_dataloader(self) -> DataLoader:
        ds = df.read_parquet(self.data).map_batches(double)
        self.tds = ds.to_torch_dataset(
            batch_size=BATCH, local_shuffle_buffer_size=100, local_shuffle_seed=3
        )
        if self.resume_from is not None:
            self.tds.load_state_dict(self.resume_from)
        return DataLoader(self.tds, batch_size=None, num_workers=self.workers)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        assert torch.equal(batch["x"], batch["id"] * 2)
        self.seen[self.current_epoch].append(batch["id"].tolist())
        return self.layer(batch["x"].float().unsqueeze(1) / 1000).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1e-3)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["dataflow"] = self.tds.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.resume_from = checkpoint["dataflow"]


class SaveAt(pl.Callback):
    """Checkpoint once, after step ``STOP_AT`` (as ModelCheckpoint(every_n_train_steps) would)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == STOP_AT:
            trainer.save_checkpoint(self.path)


def trainer(**kw) -> pl.Trainer:
    return pl.Trainer(
        strategy=DDPStrategy(process_group_backend="gloo", timeout=datetime.timedelta(seconds=60)),
        devices=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    df.init("inline")  # in-process: the test is about Lightning, not the pool
    ckpt = os.path.join(args.out, "mid.ckpt")
    fit = Model(args.data, workers=args.workers)
    trainer(max_epochs=2, callbacks=[SaveAt(ckpt)], enable_checkpointing=False).fit(fit)
    # As if the job had died after step STOP_AT: a new trainer resumes there.
    resumed = Model(args.data, workers=args.workers)
    trainer(max_epochs=1, enable_checkpointing=False).fit(resumed, ckpt_path=ckpt)

    with open(os.path.join(args.out, f"{fit.global_rank}.json"), "w") as f:
        json.dump(
            {
                "fit": {str(k): v for k, v in fit.seen.items()},
                "resumed": resumed.seen[0],
            },
            f,
        )
    df.shutdown()


if __name__ == "__main__":
    main()
