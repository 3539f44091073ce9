"""Ray Data's "Loading data" examples (local files only), written from the
documented API; only the import differs from a Ray Data script."""

import os
import shutil
import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dataflow.compat import ray  # a Ray Data script has: import ray

ray.init()
root = tempfile.mkdtemp()

# Reading files: Parquet, CSV, JSON Lines, text, NumPy, binary.
pq.write_table(
    pa.table({"sepal.length": [5.1, 4.9], "variety": ["Setosa", "Setosa"]}),
    os.path.join(root, "iris.parquet"),
)
ds = ray.data.read_parquet(os.path.join(root, "iris.parquet"))
print(ds.schema())
assert ds.count() == 2

# Column selection and row filters pushed into the Parquet scan.
ds = ray.data.read_parquet(os.path.join(root, "iris.parquet"), columns=["sepal.length"])
assert ds.columns() == ["sepal.length"]

pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}).to_csv(
    os.path.join(root, "t.csv"), index=False
)
ds = ray.data.read_csv(os.path.join(root, "t.csv"))
assert ds.take(limit=2) == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]

with open(os.path.join(root, "logs.jsonl"), "w") as f:
    f.write('{"level": "INFO", "msg": "ok"}\n{"level": "ERROR", "msg": "bad"}\n')
ds = ray.data.read_json(os.path.join(root, "logs.jsonl"), lines=True)
assert ds.filter(lambda row: row["level"] == "ERROR").count() == 1

with open(os.path.join(root, "this.txt"), "w") as f:
    f.write("Beautiful is better than ugly.\nExplicit is better than implicit.\n")
ds = ray.data.read_text(os.path.join(root, "this.txt"))
assert ds.take(1) == [{"text": "Beautiful is better than ugly."}]

np.save(os.path.join(root, "arr.npy"), np.arange(6).reshape(3, 2))
ds = ray.data.read_numpy(os.path.join(root, "arr.npy"))
assert ds.count() == 3

ds = ray.data.read_binary_files(os.path.join(root, "this.txt"), include_paths=True)
row = ds.take(1)[0]
assert row["path"].endswith("this.txt") and row["bytes"].startswith(b"Beautiful")

# Reading a directory with other files in it and a missing path.
ds = ray.data.read_parquet(root)  # only the .parquet file: file_extensions=["parquet"]
assert ds.count() == 2
ds = ray.data.read_csv(
    [os.path.join(root, "t.csv"), os.path.join(root, "gone.csv")], ignore_missing_paths=True
)
assert ds.count() == 3

# Loading data from other libraries.
ds = ray.data.from_items([{"food": "spam", "price": 9.34}, {"food": "ham", "price": 5.37}])
assert ds.sum("price") == 9.34 + 5.37
ds = ray.data.from_pandas(pd.DataFrame({"food": ["spam", "ham"], "price": [9.34, 5.37]}))
assert ds.count() == 2
ds = ray.data.from_numpy(np.ones((3, 2, 2)))
assert ds.schema().names == ["data"]
ds = ray.data.from_arrow(pa.table({"food": ["spam"], "price": [9.34]}))
assert ds.take_all() == [{"food": "spam", "price": 9.34}]

# Creating synthetic data.
assert ray.data.range(10000).count() == 10000
assert ray.data.range_tensor(10, shape=(64, 64)).take(1)[0]["data"].shape == (64, 64)

# Parallelism and resources of the read.
ds = ray.data.read_csv(os.path.join(root, "t.csv"), override_num_blocks=2, num_cpus=1)
assert ds.materialize().count() == 3

ray.shutdown()
shutil.rmtree(root)
print("loading_data: ok")
