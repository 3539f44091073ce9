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
