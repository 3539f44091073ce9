"""``import dataflow`` stays light: no optional heavy modules, no processes."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "torch",
    "cupy",
    "ray",
    "PIL",
    "daft",
    "matplotlib",
    "tqdm",
    "prometheus_client",
    "ipywidgets",
    "datasets",
    "webdataset",
    "fastavro",
    "crc32c",
    "tensorflow",
    "jax",
    "dask",
    "sqlite3",
)

PROBE = """
import json, sys, multiprocessing, threading
import dataflow
import dataflow.dataset, dataflow.read_api, dataflow.iterators, dataflow.plan.optimizer
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps({{
    "heavy": heavy,
    "children": len(multiprocessing.active_children()),
    "threads": threading.active_count(),
    "version": dataflow.__version__,
}}))
"""


def test_import_loads_no_heavy_module_and_starts_nothing():
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=set(HEAVY))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"heavy": [], "children": 0, "threads": 1, "version": "0.1.0"}


def test_public_names_resolve():
    import dataflow

    missing = [n for n in dataflow.__all__ if not hasattr(dataflow, n)]
    assert missing == []
    assert {"range", "from_items", "col", "Dataset", "DataIterator", "OptimizerFlags"} <= set(
        dataflow.__all__
    )


NUMERIC_PIPELINE = """
import sys
import dataflow as df
ds = df.read_parquet(sys.argv[1]).map_batches(lambda b: {"y": b["x"] * 2.0}, batch_format="numpy")
total = sum(float(b["y"].sum()) for b in ds.iter_batches(batch_size=4096))
print(total, "pandas" in sys.modules, "pyarrow.dataset" in sys.modules)
"""


def test_a_numeric_pipeline_never_imports_pandas(tmp_path):
    """Read, numpy UDF, batches: pyarrow imports pandas (~0.5 s) when asked to
    convert Python or numpy values or to load pyarrow.dataset; this path avoids all."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": np.arange(10_000)}), tmp_path / "x.parquet")
    out = subprocess.run(
        [sys.executable, "-c", NUMERIC_PIPELINE, str(tmp_path / "x.parquet")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(2.0 * sum(range(10_000))), "False", "False"]


ARROW_PIPELINE = """
import sys
import dataflow as df
# (after a UDF: a filter pushed into the read prunes row groups with pyarrow.dataset)
ds = df.read_parquet(sys.argv[1]).map_batches(lambda t: t, batch_format="pyarrow")
ds = ds.filter(expr="x % 3 != 0 and k != 'z'")
means = sorted((r["k"], r["mean(x)"]) for r in ds.groupby("k").mean("x").take_all())
top = [r["x"] for r in ds.sort("x", descending=True).take(2)]
ds.with_column("y", df.col("x") * 2.5).write_parquet(sys.argv[2])
written = df.read_parquet(sys.argv[2]).sum("y")
print(means, top, written, *(m in sys.modules for m in ("pandas", "pyarrow.dataset", "fsspec")))
"""


def test_filter_groupby_sort_and_write_never_import_pandas(tmp_path):
    """Expression filters, string-keyed groupby, top-k sort and Parquet writes
    run on Arrow nodes and numpy buffer views, without pyarrow's pandas import;
    local paths are listed and written without importing fsspec."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.arange(9_000)
    keys = pa.array(["a", "b", "z"] * 3_000)  # row i has key "abz"[i % 3]
    pq.write_table(pa.table({"x": x, "k": keys}), tmp_path / "in.parquet")
    out = subprocess.run(
        [sys.executable, "-c", ARROW_PIPELINE, str(tmp_path / "in.parquet"), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kept = x[x % 3 == 1]  # x % 3 != 0 and not "z": the "b" rows
    expected = (
        f"[('b', {float(kept.mean())!r})] [{kept[-1]}, {kept[-2]}] {float(kept.sum() * 2.5)!r}"
    )
    assert out.strip() == expected + " False False False"


WORKER_PIPELINE = """
import os, sys
import numpy as np
import dataflow as df

df.DataContext.get_current().task_placement = "processes"

def probe(batch):
    n = len(batch["id"])
    return {"x": batch["id"] * 2, "pid": np.full(n, os.getpid()), "tag": np.array(["w"] * n),
            "pandas": np.full(n, "pandas" in sys.modules)}

rows = df.range(2_000, override_num_blocks=4).map_batches(probe, batch_format="numpy").take_all()
print(sum(r["x"] for r in rows), any(r["pid"] == os.getpid() for r in rows),
      any(r["pandas"] for r in rows), {r["tag"] for r in rows})
"""


def test_workers_do_not_import_pandas_for_numpy_batches():
    """Workers preload dataflow and pyarrow.parquet, not pandas (0.43 CPU-s each):
    a numpy batch UDF on workers never needs it, string columns included. (Per-row ``map`` does: pyarrow
    imports pandas in ``pa.array`` of a Python list.)"""
    out = subprocess.run(
        [sys.executable, "-c", WORKER_PIPELINE], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [str(2 * sum(range(2_000))), "False", "False", "{'w'}"]
