"""Datasets on a three-node Ray cluster (head + 2 workers, all on 127.0.0.1):
etl on every node, a worker node removed mid-pipeline, streaming_split to actors
on two nodes. One fresh interpreter runs all three (a cluster cannot share a
process with the session's single-node Ray; starting it is most of the time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

_SCRIPT = r"""
import json, sys, time
from collections import defaultdict
from pathlib import Path
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.cluster_utils import Cluster
import dataflow as df

tmp = Path(sys.argv[1])
report = {}

def add_d(t):
    time.sleep(0.1)  # long enough that every node's CPU gets tasks
    return t.append_column("d", pc.add(pc.multiply(t["a"], t["b"]), t["c"]))

def slow_double(batch):
    time.sleep(0.15)
    return {"id": batch["id"] * 2}

def node_of(worker_id):
    return worker_id.rsplit(":", 1)[0]

cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
    "resources": {"on_head": 1}})
workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={name: 1})
           for name in ("on_a", "on_b")]
cluster.wait_for_nodes()
df.init(backend="ray", address=cluster.address)
try:
    nodes = {n["NodeID"][:12] for n in ray.nodes() if n["Alive"]}  # as worker ids name them
    # (1) etl on every node; the trace names each task's node and bytes.
    rng = np.random.default_rng(0)
    src = tmp / "src"
    src.mkdir()
    n = 100_000  # enough bytes for the planner to make several read tasks
    for i in range(12):
        pq.write_table(pa.table({"id": np.arange(i * n, (i + 1) * n),
                                 "a": rng.normal(size=n), "b": rng.normal(size=n),
                                 "c": rng.normal(size=n)}), src / f"part-{i:02d}.parquet")
    ctx = df.DataContext.get_current()
    ctx.trace_path = str(tmp / "etl.trace.json")
    ds = df.read_parquet(str(src)).map_batches(add_d, batch_format="pyarrow")
    ds.filter(expr="d > 0").write_parquet(str(tmp / "out"))
    ctx.trace_path = None
    full = pq.read_table(src)
    full = full.append_column("d", pc.add(pc.multiply(full["a"], full["b"]), full["c"]))
    want = full.filter(pc.greater(full["d"], 0))
    got = pq.read_table(tmp / "out")
    per_node = defaultdict(lambda: [0, 0])
    for e in json.loads((tmp / "etl.trace.json").read_text())["traceEvents"]:
        if e.get("cat") == "task":
            per_node[node_of(e["args"]["worker"])][0] += 1
            per_node[node_of(e["args"]["worker"])][1] += e["args"]["bytes"]
    report["etl"] = {
        "rows": [got.num_rows, want.num_rows],
        "ids": sorted(got["id"].to_pylist()) == sorted(want["id"].to_pylist()),
        "sum_d": [round(pc.sum(got["d"]).as_py(), 6), round(pc.sum(want["d"]).as_py(), 6)],
        "nodes": len(nodes), "task_nodes": sorted(per_node) == sorted(nodes),
        "per_node": dict(per_node),
    }
    # (2) a worker node removed mid-pipeline: its tasks and blocks are redone.
    ids = []
    it = df.range(3000, override_num_blocks=30).map_batches(slow_double).iter_batches(batch_size=100)
    for i, batch in enumerate(it):
        ids.extend(batch["id"].tolist())
        if i == 3:
            cluster.remove_node(workers[0])
    report["removed"] = {"ok": sorted(ids) == [2 * i for i in range(3000)], "n": len(ids),
                         "alive": sum(n["Alive"] for n in ray.nodes())}
    # (3) streaming_split(2) consumed by two actors on different nodes.
    @ray.remote(num_cpus=0)
    class Trainer:
        def run(self, it):
            ids = [i for b in it.iter_batches(batch_size=64) for i in b["id"].tolist()]
            return ray.get_runtime_context().get_node_id(), ids
    a, b = df.range(2000, override_num_blocks=16).streaming_split(2)
    actors = [Trainer.options(resources={r: 0.01}).remote() for r in ("on_head", "on_b")]
    (na, ia), (nb, ib) = ray.get([actors[0].run.remote(a), actors[1].run.remote(b)], timeout=120)
    report["split"] = {"nodes_differ": na != nb, "disjoint_complete": sorted(ia + ib) == list(range(2000)),
                       "both": bool(ia) and bool(ib)}
finally:
    df.shutdown()
    cluster.shutdown()
print(json.dumps(report))
"""


@pytest.mark.slow
def test_datasets_on_a_three_node_cluster(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    # Nodes bind to 127.0.0.1 only when Ray's multi-node address lookup is off.
    env = {**os.environ, "PYTHONPATH": str(root), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    etl = report["etl"]
    assert etl["rows"][0] == etl["rows"][1] > 0 and etl["ids"]
    assert etl["sum_d"][0] == pytest.approx(etl["sum_d"][1])
    assert etl["nodes"] == 3 and etl["task_nodes"], etl["per_node"]
    assert all(tasks > 0 and nbytes > 0 for tasks, nbytes in etl["per_node"].values())
    assert report["removed"] == {"ok": True, "n": 3000, "alive": 2}
    assert report["split"] == {"nodes_differ": True, "disjoint_complete": True, "both": True}
