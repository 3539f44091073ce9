"""Ray Data's "Working with PyTorch" examples (CPU, no Ray Train), written from
the documented API; only the import differs from a Ray Data script.
(``ray.data.from_torch`` is not in dataflow yet: see docs/ray_compat.md.)"""

import numpy as np
import torch

from dataflow.compat import ray  # a Ray Data script has: import ray

ray.init()

# Iterating over torch tensors for training.
ds = ray.data.from_items([{"x": np.full(4, i, np.float32), "y": float(i % 2)} for i in range(64)])
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
batches = 0
for _epoch in range(2):
    for batch in ds.iter_torch_batches(batch_size=16, dtypes=torch.float32):
        assert isinstance(batch["x"], torch.Tensor) and batch["x"].shape == (16, 4)
        loss = torch.nn.functional.mse_loss(model(batch["x"]).squeeze(1), batch["y"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        batches += 1
assert batches == 8


# Transformations with torch tensors inside map_batches.
def convert_to_torch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tensor = torch.as_tensor(batch["x"])
    return {"norm": torch.linalg.vector_norm(tensor, dim=1).numpy()}


norms = ds.map_batches(convert_to_torch).take(2)
assert [round(float(r["norm"]), 3) for r in norms] == [0.0, 2.0]


# Batch inference with a PyTorch model in a callable class.
class TorchPredictor:
    def __init__(self):
        self.model = torch.nn.Identity()
        self.model.eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.model(torch.as_tensor(batch["data"], dtype=torch.float32))
        return {"output": out.numpy()}


preds = ray.data.from_numpy(np.ones((32, 100))).map_batches(
    TorchPredictor, concurrency=2, batch_size=8
)
out = preds.take_batch(4)["output"]
assert out.shape == (4, 100) and float(out.sum()) == 400.0

ray.shutdown()
print("working_with_pytorch: ok")
