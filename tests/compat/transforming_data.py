"""Ray Data's "Transforming data" examples, written from the documented API;
only the import differs from a Ray Data script."""

from typing import Any

import numpy as np
import pandas as pd

from dataflow.compat import ray  # a Ray Data script has: import ray

ray.init()


# Transforming rows with map.
def parse_filename(row: dict[str, Any]) -> dict[str, Any]:
    row["double"] = row["id"] * 2
    return row


ds = ray.data.range(5).map(parse_filename)
assert [r["double"] for r in ds.take_all()] == [0, 2, 4, 6, 8]


# Transforming rows with flat_map.
def duplicate_row(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [row] * 2


assert ray.data.range(3).flat_map(duplicate_row).count() == 6


# Transforming batches with NumPy and pandas.
def increase_brightness(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    batch["image"] = np.clip(batch["image"] + 4, 0, 255)
    return batch


images = ray.data.from_numpy(np.zeros((8, 4, 4, 3), dtype=np.uint8)).rename_columns(
    {"data": "image"}
)
bright = images.map_batches(increase_brightness, batch_format="numpy")
assert int(bright.take(1)[0]["image"].max()) == 4


def drop_nas(batch: pd.DataFrame) -> pd.DataFrame:
    return batch.dropna()


frame = pd.DataFrame({"x": [1.0, None, 3.0]})
assert ray.data.from_pandas(frame).map_batches(drop_nas, batch_format="pandas").count() == 2


# Stateful transforms: a callable class on an actor pool.
class TorchPredictor:
    def __init__(self):
        self.weight = 2.0  # stands for loading a model once per actor

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"output": batch["id"] * self.weight}


pred = ray.data.range(16).map_batches(TorchPredictor, concurrency=2, batch_size=4)
assert sorted(r["output"] for r in pred.take_all()) == [2.0 * i for i in range(16)]
pred = ray.data.range(8).map_batches(
    TorchPredictor, compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2), batch_size=4
)
assert pred.sum("output") == 56.0

# Expressions: with_column and filter.
from dataflow import col  # noqa: E402  (Ray: from ray.data.expressions import col)

ds = ray.data.range(4).with_column("id_x10", col("id") * 10)
assert ds.take_all()[-1] == {"id": 3, "id_x10": 30}

# Groupby and map_groups.
ds = ray.data.from_items([{"group": i % 2, "value": i} for i in range(10)])
means = ds.groupby("group").mean("value").take_all()
assert sorted((r["group"], r["mean(value)"]) for r in means) == [(0, 4.0), (1, 5.0)]


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    df["value"] = df["value"] - df["value"].mean()
    return df


centered = ds.groupby("group").map_groups(normalize, batch_format="pandas")
assert abs(centered.sum("value")) < 1e-9

# Shuffling and repartitioning.
shuffled = ray.data.range(100).random_shuffle(seed=42)
assert sorted(r["id"] for r in shuffled.take_all()) == list(range(100))
assert ray.data.range(100).repartition(4).materialize().count() == 100
sample = ray.data.range(1000).random_sample(0.1, seed=0)
assert 50 < sample.count() < 150

ray.shutdown()
print("transforming_data: ok")
