"""to_torch_dataset with DataLoader, and resuming iteration in a fresh process."""

from __future__ import annotations

import collections
import json
import multiprocessing as mp
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
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


@pytest.fixture(params=["parquet", "memory"])
def source(request, tmp_path) -> df.Dataset:
    """Ids 0..ROWS-1 (and a float column) from 7 Parquet files, or from 3 in-memory
    blocks; filtered and mapped, so each share runs a real pipeline."""
    table = pa.table({"id": np.arange(ROWS), "x": np.arange(ROWS) * 0.5})
    if request.param == "memory":
        ds = df.from_arrow([table.slice(0, 100), table.slice(100, 350), table.slice(450)])
    else:
        for k, start in enumerate(range(0, ROWS, 90)):
            pq.write_table(table.slice(start, 90), tmp_path / f"part-{k}.parquet")
        ds = df.read_parquet(str(tmp_path))
    return ds.filter(expr="id >= 0").map_batches(lambda b: {"id": b["id"], "y": b["x"] * 2})


@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_every_row_exactly_once_for_any_number_of_workers(source, num_workers):
    loader = DataLoader(
        source.to_torch_dataset(batch_size=64), batch_size=None, num_workers=num_workers
    )
    ids, ys = [], []
    for batch in loader:
        assert isinstance(batch, dict) and set(batch) == {"id", "y"}
        ids += batch["id"].tolist()
        ys += batch["y"].tolist()
    assert collections.Counter(ids) == collections.Counter(range(ROWS))
    assert sorted(ys) == [float(i) for i in range(ROWS)]


def test_persistent_workers_run_their_share_every_epoch():
    tds = _dataset().to_torch_dataset(batch_size=64)
    loader = DataLoader(tds, batch_size=None, num_workers=2, persistent_workers=True)
    for _ in range(2):
        assert sorted(i for b in loader for i in b["id"].tolist()) == list(range(ROWS))


_NO_GRPC = """
import collections, sys
import dataflow as df
from torch.utils.data import DataLoader

df.init("local", num_cpus=2)
ds = df.range(3000, override_num_blocks=6).map_batches(lambda b: {"id": b["id"] + 0})
list(ds.iter_batches())  # the parent has run a pipeline: its backend is up
tds = ds.to_torch_dataset(batch_size=100)
ids = [i for b in DataLoader(tds, batch_size=None, num_workers=2) for i in b["id"].tolist()]
assert collections.Counter(ids) == collections.Counter(range(3000)), len(ids)
print("grpc" in sys.modules)
df.shutdown()
"""


def test_dataloader_workers_start_without_grpc_or_warnings():
    """A fresh interpreter: nothing gRPC exists in the parent to be forked, and
    nothing at all reaches stderr (gRPC's fork-handler messages would)."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", _NO_GRPC],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), "DATAFLOW_DISABLE_PROGRESS_BARS": "1"},
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert out.stderr == ""


@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataloader_batch_size_on_batches_is_a_clear_error(num_workers):
    tds = _dataset().to_torch_dataset(batch_size=50)
    loader = DataLoader(tds, batch_size=4, num_workers=num_workers)
    with pytest.raises(TypeError) as info:
        next(iter(loader))
    assert (
        "to_torch_dataset: DataLoader(batch_size=4) would stack 4 batches of 50 rows into "
        "one; the dataset already yields whole batches. Pass batch_size=None to DataLoader "
        "and choose the batch size with to_torch_dataset(batch_size=...)"
    ) in str(info.value)


def test_a_plan_that_needs_every_row_is_a_clear_error_with_workers():
    tds = _dataset().random_shuffle(seed=1).to_torch_dataset(batch_size=50)
    assert sorted(i for b in DataLoader(tds, batch_size=None) for i in b["id"].tolist()) == list(
        range(ROWS)
    )
    with pytest.raises(df.PlanError) as info:
        next(iter(DataLoader(tds, batch_size=None, num_workers=2)))
    assert (
        "to_torch_dataset with DataLoader(num_workers=2): random_shuffle(seed=1) needs the "
        "rows of every share, so the plan cannot be split into 2 independent shares at its "
        "sources; run it in one process (e.g. DataLoader num_workers=0"
    ) in str(info.value)


@pytest.mark.slow
def test_spawned_dataloader_workers_get_the_plan_by_value():
    tds = _dataset().to_torch_dataset(batch_size=50)
    loader = DataLoader(tds, batch_size=None, num_workers=2, multiprocessing_context="spawn")
    assert sorted(i for b in loader for i in b["id"].tolist()) == list(range(ROWS))


def test_main_process_iteration_with_state_dict():
    tds = _dataset().to_torch_dataset(batch_size=100, dtypes=torch.float32)
    it = iter(DataLoader(tds, batch_size=None, num_workers=0))
    first = next(it)
    assert first["id"].dtype == torch.float32 and len(first["id"]) == 100
    assert tds.state_dict()["rows"] == 100
    copy = pickle.loads(pickle.dumps(tds))  # as another process would get it
    assert type(copy).__name__ == "TorchIterableDataset"
    assert sorted(i for b in copy for i in b["id"].tolist()) == list(range(ROWS))
    with pytest.raises(RuntimeError, match="call them on the original dataset"):
        copy.state_dict()


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
