"""map_batches on a real GPU: cupy batches on the worker's device, and a
read → CPU map → GPU model (torch) pipeline whose actor owns its device."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataflow as df

pytestmark = pytest.mark.gpu


def on_device(batch):
    import cupy

    n = len(batch["name"])
    return {
        "x": batch["x"] * 2,
        "root": cupy.sqrt(batch["f"]),
        "name": batch["name"],
        # What the UDF got: numeric columns as cupy arrays on its GPU, strings on the host.
        "x_type": np.array([type(batch["x"]).__module__.split(".")[0]] * n),
        "name_type": np.array([type(batch["name"]).__module__.split(".")[0]] * n),
        "device": cupy.full(n, cupy.cuda.runtime.getDevice()),
        "visible": np.array([os.environ.get("CUDA_VISIBLE_DEVICES", "")] * n),
    }


def test_cupy_batches_arrive_on_the_device_and_come_back_to_host(gpu_backend):
    pytest.importorskip("cupy")
    table = pa.table(
        {"x": np.arange(300), "f": np.arange(300) / 4, "name": [f"n{i}" for i in range(300)]}
    )
    ds = df.from_arrow([table.slice(0, 150), table.slice(150)]).map_batches(
        on_device, batch_format="cupy", batch_size=100, num_gpus=1
    )
    out = ds.to_arrow().sort_by("x")
    assert out.column("x").to_pylist() == [2 * i for i in range(300)]
    np.testing.assert_allclose(out.column("root").to_numpy(), np.sqrt(np.arange(300) / 4))
    assert out.column("name").to_pylist() == [f"n{i}" for i in range(300)]
    assert set(out.column("x_type").to_pylist()) == {"cupy"}
    assert set(out.column("name_type").to_pylist()) == {"numpy"}
    # The worker sees only its reserved device, as device 0.
    assert set(out.column("device").to_pylist()) == {0}
    (visible,) = set(out.column("visible").to_pylist())
    assert visible != ""


WEIGHT = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
BIAS = np.array([1.0, -1.0], dtype=np.float32)


def features(batch):
    """The CPU stage: four float32 features per row."""
    x = batch["x"].astype(np.float32)
    return {"id": batch["x"], "features": np.stack([x, x**2, np.sin(x), np.ones_like(x)], 1)}


class TorchModel:
    """A linear layer with fixed weights, built once per actor on its GPU."""

    def __init__(self):
        import torch

        self.torch = torch
        self.net = torch.nn.Linear(4, 2).cuda().eval()
        with torch.no_grad():
            self.net.weight.copy_(torch.from_numpy(WEIGHT))
            self.net.bias.copy_(torch.from_numpy(BIAS))
        self.pid = os.getpid()

    def __call__(self, batch):
        torch = self.torch
        with torch.no_grad():
            out = self.net(torch.as_tensor(batch["features"], device="cuda"))
        n = len(batch["id"])
        # A CUDA tensor as output: it comes back to host memory for the store.
        return {"id": batch["id"], "out": out, "actor": np.full(n, self.pid)}


def test_read_cpu_map_gpu_model_pipeline(gpu_backend, tmp_path):
    for i in range(4):
        pq.write_table(
            pa.table({"x": np.arange(i * 250, (i + 1) * 250)}), tmp_path / f"{i}.parquet"
        )
    ds = (
        df.read_parquet(str(tmp_path))
        .map_batches(features, batch_size=None)
        .map_batches(TorchModel, concurrency=1, num_gpus=1, batch_size=128)
    )
    rows = sorted(ds.take_all(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == list(range(1000))
    x = np.arange(1000, dtype=np.float32)
    expected = np.stack([x, x**2, np.sin(x), np.ones_like(x)], 1) @ WEIGHT.T + BIAS
    np.testing.assert_allclose(np.stack([r["out"] for r in rows]), expected, rtol=1e-3)
    assert len({r["actor"] for r in rows}) == 1  # one actor, built once
    stats = ds._last_stream.stats()
    model = stats.operator("map_batches(TorchModel)")
    assert model.rows_out == 1000 and len(model.actor_spans) == 1
