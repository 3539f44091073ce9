"""to_torch_dataset with DataLoader, and resuming iteration in a fresh process."""

from __future__ import annotations

import json
import multiprocessing as mp
import pickle

import torch
from torch.utils.data import DataLoader

import dataflow as df
from dataflow.context import DataContext

ROWS = 600


def _dataset() -> df.Dataset:
    return df.range(ROWS, override_num_blocks=6).map_batches(lambda b: {"id": b["id"] * 1})


def test_dataloader_workers_cover_the_dataset_exactly_once():
    tds = _dataset().to_torch_dataset(batch_size=50)
    loader = DataLoader(tds, batch_size=None, num_workers=2)
    for _ in range(2):  # a second epoch re-executes and gives the same rows
        seen = [i for batch in loader for i in batch["id"].tolist()]
        assert sorted(seen) == list(range(ROWS))


def test_main_process_iteration_with_state_dict():
    tds = _dataset().to_torch_dataset(batch_size=100, dtypes=torch.float32)
    it = iter(DataLoader(tds, batch_size=None, num_workers=0))
    first = next(it)
    assert first["id"].dtype == torch.float32 and len(first["id"]) == 100
    assert tds.state_dict()["rows"] == 100
    assert type(pickle.loads(pickle.dumps(tds))).__name__ == "TorchIterableDataset"


def _resume(state: dict, out_path: str) -> None:
    DataContext.get_current().preserve_order = True
    it = _dataset().iterator()
    it.load_state_dict(state)
    rest = [
        b["id"].tolist()
        for b in it.iter_torch_batches(
            batch_size=64, local_shuffle_buffer_size=100, local_shuffle_seed=5
        )
    ]
    with open(out_path, "w") as f:
        json.dump(rest, f)


def test_resume_in_a_fresh_process_continues_exactly(tmp_path):
    ctx = DataContext.get_current()
    old, ctx.preserve_order = ctx.preserve_order, True
    try:
        kw = dict(batch_size=64, local_shuffle_buffer_size=100, local_shuffle_seed=5)
        full = [b["id"].tolist() for b in _dataset().iter_torch_batches(**kw)]
        it = _dataset().iterator()
        got = []
        for batch in it.iter_torch_batches(**kw):
            got.append(batch["id"].tolist())
            if len(got) == 4:
                break
        state = it.state_dict()
    finally:
        ctx.preserve_order = old
    proc = mp.get_context("spawn").Process(target=_resume, args=(state, str(tmp_path / "r.json")))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    rest = json.loads((tmp_path / "r.json").read_text())
    assert got + rest == full
    assert sorted(i for b in full for i in b) == list(range(ROWS))
