"""The Ray backend and datasets on one three-node Ray cluster (head + 2 worker
nodes, all on 127.0.0.1), started once for the module: tasks, actors and blocks
on every node; etl on every node; streaming_split to actors on two nodes;
sort, groupby and random_shuffle with their tasks and blocks on every node; a
worker node removed mid-pipeline, then another removed mid-shuffle (Ray re-runs
the lost map pieces from lineage: the result stays exact).

The cluster runs in a fresh interpreter (it cannot share a process with the
session's single-node Ray) that runs every scenario and prints one JSON report;
each test checks its part. Starting the cluster is most of the time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

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
from runtime.backends.ray import RayBackend
from runtime.resources import Resources

tmp = Path(sys.argv[1])
report = {"seconds": {}}
clock = time.perf_counter()

def lap(name):
    global clock
    now = time.perf_counter()
    report["seconds"][name] = round(now - clock, 2)
    clock = now

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

def add_d(t):
    time.sleep(0.02)  # long enough that every node's CPU gets tasks
    return t.append_column("d", pc.add(pc.multiply(t["a"], t["b"]), t["c"]))

def add_noise_free(t):
    time.sleep(0.02)  # a Python stage before the exchange, spread like etl's
    return t

def slow_double(batch):
    time.sleep(0.1)
    return {"id": batch["id"] * 2}

def place(node):
    return next(p for p in ("on_head", "on_a", "on_b") if p in node["Resources"])

# Fast failure detection: a removed node is declared dead within about a second.
cluster = Cluster(initialize_head=True, head_node_args={
    "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
    "resources": {"on_head": 1},
    "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 200,
                       "health_check_failure_threshold": 3}})
workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={name: 1})
           for name in ("on_a", "on_b")]
cluster.wait_for_nodes()
lap("start")
try:
    # (1) the backend alone: tasks pinned to each node, outputs moved node to node.
    backend = RayBackend(address=cluster.address)
    try:
        fn = backend.register_function(where)
        places = ("on_head", "on_a", "on_b")
        first = [backend.submit(fn, [], (p,), resources=Resources.of(cpu=1, custom={p: 1}))
                 for p in places]
        refs = [f.result(120).refs[0] for f in first]
        second = [backend.submit(fn, [refs[i - 1]], (p,),
                                 resources=Resources.of(cpu=1, custom={p: 1}))
                  for i, p in enumerate(places)]
        rows = [backend.get(f.result(120).refs[0]).to_pylist()[0] for f in first + second]
        actor = backend.start_actor(backend.register_function(Tagger),
                                    resources=Resources.of(cpu=1, custom={"on_b": 1}))
        actor.ready.result(120)
        tagged = backend.get(backend.submit_actor(actor, [refs[0]]).result(120).refs[0])
        report["backend"] = {
            "rows": rows,
            "actor_node": tagged["actor_node"][0].as_py(),
            "nodes": {place(n): n["NodeID"] for n in ray.nodes() if n["Alive"]},
            "addresses": sorted({n["NodeManagerAddress"] for n in ray.nodes()}),
            "total_cpu": backend.total_resources().cpu,
        }
    finally:
        backend.shutdown()
    lap("backend")
    df.init(backend="ray", address=cluster.address)
    nodes = {n["NodeID"][:12] for n in ray.nodes() if n["Alive"]}  # as worker ids name them
    # (2) etl on every node; the trace names each task's node and bytes.
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
            node = e["args"]["worker"].rsplit(":", 1)[0]
            per_node[node][0] += 1
            per_node[node][1] += e["args"]["bytes"]
    report["etl"] = {
        "rows": [got.num_rows, want.num_rows],
        "ids": sorted(got["id"].to_pylist()) == sorted(want["id"].to_pylist()),
        "sum_d": [round(pc.sum(got["d"]).as_py(), 6), round(pc.sum(want["d"]).as_py(), 6)],
        "nodes": len(nodes), "task_nodes": sorted(per_node) == sorted(nodes),
        "per_node": dict(per_node),
    }
    lap("etl")
    # (3) streaming_split(2) consumed by two actors on different nodes.
    @ray.remote(num_cpus=0)
    class Trainer:
        def run(self, it):
            ids = [i for b in it.iter_batches(batch_size=64) for i in b["id"].tolist()]
            return ray.get_runtime_context().get_node_id(), ids
    # equal=True: a consumer that starts first cannot take the whole (small) stream.
    a, b = df.range(2000, override_num_blocks=16).streaming_split(2, equal=True)
    actors = [Trainer.options(resources={r: 0.01}).remote() for r in ("on_head", "on_b")]
    (na, ia), (nb, ib) = ray.get([actors[0].run.remote(a), actors[1].run.remote(b)], timeout=120)
    report["split"] = {"nodes_differ": na != nb,
                       "disjoint_complete": sorted(ia + ib) == list(range(2000)),
                       "both": len(ia) == len(ib) == 1000}
    for actor in actors:
        ray.kill(actor)
    lap("split")
    # (4) sort, groupby and shuffle: exchange tasks and their blocks on every node.
    def per_op_node(path):
        out = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        for e in json.loads(Path(path).read_text())["traceEvents"]:
            if e.get("cat") == "task":
                node = e["args"]["worker"].rsplit(":", 1)[0]
                out[e["name"]][node][0] += 1
                out[e["name"]][node][1] += e["args"]["bytes"]
        return {op: dict(nodes) for op, nodes in out.items()}

    n = 120_000
    ids = np.arange(n)
    keys, vals = ids % 97, (ids * 7919) % 100_003
    ctx.target_max_block_size = 256 << 10  # several map and reduce tasks at this size
    base = df.from_arrow([pa.table({"id": ids[i::12], "k": keys[i::12], "v": vals[i::12]})
                          for i in range(12)]).map_batches(add_noise_free, batch_format="pyarrow")
    want_groups = {k: int(vals[keys == k].sum()) for k in range(97)}
    exchanges = {}
    for name, make in [("sort", lambda d: d.sort("v")),
                       ("groupby", lambda d: d.groupby("k").sum("v")),
                       ("shuffle", lambda d: d.random_shuffle(seed=1))]:
        ctx.trace_path = str(tmp / f"{name}.trace.json")
        got = make(base).to_arrow()
        ctx.trace_path = None
        ops = per_op_node(tmp / f"{name}.trace.json")
        exchange = next(op for op in ops if not op.startswith("from_arrow"))
        if name == "groupby":
            exact = dict(zip(got["k"].to_pylist(), got["sum(v)"].to_pylist())) == want_groups
        else:
            exact = sorted(got["id"].to_pylist()) == list(range(n))
            if name == "sort":
                exact = exact and got["v"].to_pylist() == sorted(vals.tolist())
            else:
                exact = exact and got["id"].to_pylist() != list(range(n))
        exchanges[name] = {"exact": exact, "op": exchange,
                           "per_node": ops[exchange], "all_nodes": sorted(ops[exchange]) == sorted(nodes)}
    report["exchanges"] = exchanges
    ctx.target_max_block_size = 32 << 20
    lap("exchanges")
    # (5) a worker node removed mid-pipeline; its tasks and blocks are redone.
    ids = []
    it = df.range(1500, override_num_blocks=15).map_batches(slow_double)
    for i, batch in enumerate(it.iter_batches(batch_size=100)):
        ids.extend(batch["id"].tolist())
        if i == 2:
            cluster.remove_node(workers[0])
    report["removed"] = {"ok": sorted(ids) == [2 * i for i in range(1500)], "n": len(ids),
                         "alive": sum(n["Alive"] for n in ray.nodes())}
    lap("removed")
    # (6) last: the other worker node removed mid-shuffle, once every map task is
    # done (the first output means the reduce side runs) and some of the map
    # pieces live only on that node: Ray rebuilds them from lineage (the map task,
    # and the block it read, run again elsewhere) and retries the reduce.
    ctx.target_max_block_size = 256 << 10
    ctx.trace_path = str(tmp / "removed.trace.json")
    gone = workers[1].node_id[:12]
    ids = []
    for i, batch in enumerate(base.random_shuffle(seed=2).iter_batches(batch_size=5000)):
        ids.extend(batch["id"].tolist())
        if i == 0:
            cluster.remove_node(workers[1])
    ctx.trace_path = None
    ops = per_op_node(tmp / "removed.trace.json")
    report["removed_mid_shuffle"] = {
        "ok": sorted(ids) == list(range(n)), "n": len(ids),
        "alive": sum(nd["Alive"] for nd in ray.nodes()),
        "pieces_on_removed_node": ops["random_shuffle(seed=2)"].get(gone, [0, 0])[1] > 0,
    }
    lap("removed_mid_shuffle")
finally:
    df.shutdown()
    cluster.shutdown()
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("ray-cluster")
    root = Path(__file__).resolve().parents[3]
    # Nodes bind to 127.0.0.1 only when Ray's multi-node address lookup is off.
    env = {**os.environ, "PYTHONPATH": str(root), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp)],
        capture_output=True,
        text=True,
        timeout=280,
        env=env,
        cwd=tmp,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_tasks_actors_and_blocks_span_all_nodes(report: dict[str, Any]) -> None:
    backend = report["backend"]
    nodes = backend["nodes"]
    assert len(set(nodes.values())) == 3
    assert backend["addresses"] == ["127.0.0.1"]
    assert backend["total_cpu"] == 3
    # Each output moved to the next node: blocks cross nodes without the driver.
    assert [(r["tag"], r["node"], r["rows_in"]) for r in backend["rows"]] == [
        ("on_head", nodes["on_head"], 0),
        ("on_a", nodes["on_a"], 0),
        ("on_b", nodes["on_b"], 0),
        ("on_head", nodes["on_head"], 1),
        ("on_a", nodes["on_a"], 1),
        ("on_b", nodes["on_b"], 1),
    ]
    assert backend["actor_node"] == nodes["on_b"]


def test_etl_runs_on_every_node(report: dict[str, Any]) -> None:
    etl = report["etl"]
    assert etl["rows"][0] == etl["rows"][1] > 0 and etl["ids"]
    assert etl["sum_d"][0] == pytest.approx(etl["sum_d"][1])
    assert etl["nodes"] == 3 and etl["task_nodes"], etl["per_node"]
    assert all(tasks > 0 and nbytes > 0 for tasks, nbytes in etl["per_node"].values())


def test_streaming_split_to_actors_on_two_nodes(report: dict[str, Any]) -> None:
    assert report["split"] == {"nodes_differ": True, "disjoint_complete": True, "both": True}


def test_worker_node_removed_mid_pipeline(report: dict[str, Any]) -> None:
    assert report["removed"] == {"ok": True, "n": 1500, "alive": 2}, report["seconds"]


def test_sort_groupby_and_shuffle_spread_over_every_node(report: dict[str, Any]) -> None:
    exchanges = report["exchanges"]
    assert {name: e["exact"] for name, e in exchanges.items()} == dict.fromkeys(
        ("sort", "groupby", "shuffle"), True
    )
    for name, e in exchanges.items():
        # Per-node tasks and bytes of the exchange operator, from the Chrome trace.
        assert e["all_nodes"], (name, e["per_node"])
        assert all(tasks > 0 and nbytes > 0 for tasks, nbytes in e["per_node"].values()), (
            name,
            e["per_node"],
        )


def test_worker_node_removed_mid_shuffle(report: dict[str, Any]) -> None:
    assert report["removed_mid_shuffle"] == {
        "ok": True,
        "n": 120_000,
        "alive": 1,
        "pieces_on_removed_node": True,
    }, report["seconds"]
