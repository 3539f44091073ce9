"""The Ray backend on a three-node Ray cluster (head + 2 workers, all on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Runs in a fresh interpreter: a cluster cannot share a process with the
# session's single-node Ray.
_CLUSTER_SCRIPT = """
import json, os
import pyarrow as pa
import ray
from ray.cluster_utils import Cluster
from runtime.backends.ray import RayBackend
from runtime.resources import Resources

def where(tables, tag):
    node = ray.get_runtime_context().get_node_id()
    rows = sum(t.num_rows for t in tables)
    yield pa.table({"tag": [tag], "node": [node], "rows_in": [rows]})

class Tagger:
    def __init__(self):
        self.node = ray.get_runtime_context().get_node_id()
    def __call__(self, tables):
        for t in tables:
            yield t.append_column("actor_node", pa.array([self.node] * t.num_rows))

def place(node):
    return next(p for p in ("on_head", "on_a", "on_b") if p in node["Resources"])

cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
    "resources": {"on_head": 1}})
for name in ("on_a", "on_b"):
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={name: 1})
cluster.wait_for_nodes()
backend = RayBackend(address=cluster.address)
try:
    fn = backend.register_function(where)
    places = ("on_head", "on_a", "on_b")
    first = [backend.submit(fn, [], (p,), resources=Resources.of(cpu=1, custom={p: 1}))
             for p in places]
    refs = [f.result(120).refs[0] for f in first]
    # Each output moves to the next node: blocks cross nodes without the driver.
    second = [backend.submit(fn, [refs[i - 1]], (p,), resources=Resources.of(cpu=1, custom={p: 1}))
              for i, p in enumerate(places)]
    rows = [backend.get(f.result(120).refs[0]).to_pylist()[0] for f in first + second]
    actor = backend.start_actor(backend.register_function(Tagger),
                                resources=Resources.of(cpu=1, custom={"on_b": 1}))
    actor.ready.result(120)
    tagged = backend.get(backend.submit_actor(actor, [refs[0]]).result(120).refs[0])
    report = {
        "rows": rows,
        "actor_node": tagged["actor_node"][0].as_py(),
        "nodes": {place(n): n["NodeID"] for n in ray.nodes() if n["Alive"]},
        "addresses": sorted({n["NodeManagerAddress"] for n in ray.nodes()}),
        "total_cpu": backend.total_resources().cpu,
    }
finally:
    backend.shutdown()
    cluster.shutdown()
print(json.dumps(report))
"""


@pytest.mark.slow
def test_tasks_actors_and_blocks_span_all_nodes(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[3]
    # Nodes bind to 127.0.0.1 only when Ray's multi-node address lookup is off.
    env = {**os.environ, "PYTHONPATH": str(root), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    out = subprocess.run(
        [sys.executable, "-c", _CLUSTER_SCRIPT],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    nodes = report["nodes"]
    assert len(set(nodes.values())) == 3
    assert report["addresses"] == ["127.0.0.1"]
    assert report["total_cpu"] == 3
    assert [(r["tag"], r["node"], r["rows_in"]) for r in report["rows"]] == [
        ("on_head", nodes["on_head"], 0),
        ("on_a", nodes["on_a"], 0),
        ("on_b", nodes["on_b"], 0),
        ("on_head", nodes["on_head"], 1),
        ("on_a", nodes["on_a"], 1),
        ("on_b", nodes["on_b"], 1),
    ]
    assert report["actor_node"] == nodes["on_b"]
