"""service_feed: the ``feed`` pipeline served by ``dataflow serve`` in one network
namespace to 2 consumers in another (a veth link), torch batches summed as ``feed`` does.

Needs root and iproute2 (``ip netns``). As the local ``feed`` starts its workers
before the timer, the server boots its workers and both consumers import torch and
reach the server before a barrier; the timed window runs from the barrier (both
consumers' first request) to the last row either consumer receives. The processes'
start-up until the barrier is reported separately (``startup_s``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.workloads import Result, RunContext, Workload, checksum
from benchmarks.workloads.feed import BATCH, COLUMNS

SERVER_IP = "10.77.0.1"
CLIENT_IP = "10.77.0.2"
_ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def namespace_pair() -> Iterator[tuple[str, str]]:
    """Two fresh network namespaces joined by a veth pair, ``SERVER_IP`` in the
    first and ``CLIENT_IP`` in the second (loopback up in both); removed on exit.

    Raises OSError with the reason when they cannot be made (not root, no ``ip``).
    """
    tag = f"df{os.getpid() % 100000}"
    server, client = f"{tag}s", f"{tag}c"
    steps = [
        ["ip", "netns", "add", server],
        ["ip", "netns", "add", client],
        ["ip", "link", "add", f"{tag}v0", "netns", server, "type", "veth", "peer", "name"]
        + [f"{tag}v1", "netns", client],
        ["ip", "-n", server, "addr", "add", f"{SERVER_IP}/24", "dev", f"{tag}v0"],
        ["ip", "-n", client, "addr", "add", f"{CLIENT_IP}/24", "dev", f"{tag}v1"],
    ]
    for ns, dev in ((server, f"{tag}v0"), (client, f"{tag}v1")):
        steps += [["ip", "-n", ns, "link", "set", "lo", "up"]]
        steps += [["ip", "-n", ns, "link", "set", dev, "up"]]
    try:
        for step in steps:
            try:
                out = subprocess.run(step, capture_output=True, text=True, timeout=30)
            except FileNotFoundError:
                raise OSError(
                    "iproute2's 'ip' is not installed (apt-get install iproute2)"
                ) from None
            if out.returncode != 0:
                raise OSError(f"{' '.join(step)}: {out.stderr.strip()}")
        yield server, client
    finally:
        for ns in (server, client):  # deleting a namespace deletes its veth end too
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


_SERVER_JOB = """
import dataflow as df
from benchmarks.workloads.feed import COLUMNS, standardize

def dataset():
    df.init(prestart_workers=True)  # as the local feed's engine setup, before the barrier
    ds = df.read_parquet({files!r}, columns=list(COLUMNS))
    return ds.map_batches(standardize, batch_format="numpy")
"""

# Ready once torch is imported and the server answers; "go" on stdin starts it.
_CONSUMER = """
import json, sys, time
import grpc, torch
import dataflow as df
grpc.channel_ready_future(grpc.insecure_channel(sys.argv[1])).result(timeout=60)
it = df.connect(sys.argv[1], token="bench", insecure=True)
print("ready", flush=True)
sys.stdin.readline()
rows, sums = 0, dict.fromkeys({columns!r}, 0.0)
for batch in it.iter_torch_batches(batch_size={batch}):
    rows += len(batch["a"])
    for k in sums:
        sums[k] += float(batch[k].double().sum())
print(json.dumps({{"rows": rows, "sums": sums, "end": time.perf_counter()}}))
"""


def _dataflow(ctx: RunContext) -> Result:
    env = {**os.environ, "PYTHONPATH": str(_ROOT), "DATAFLOW_SERVICE_TOKEN": "bench"}
    launched = time.perf_counter()
    with namespace_pair() as (server_ns, client_ns), tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp, "job.py")
        job.write_text(_SERVER_JOB.format(files=list(ctx.data.main_files)))
        server = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, sys.executable, "-m", "dataflow.cli", "serve"]
            + [f"{job}:dataset", "--address", f"{SERVER_IP}:0", "--insecure"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        consumers: list[subprocess.Popen] = []
        try:
            address = server.stdout.readline().rsplit(" at ", 1)[-1].strip()
            code = _CONSUMER.format(columns=COLUMNS, batch=BATCH)
            consumers = [
                subprocess.Popen(
                    ["ip", "netns", "exec", client_ns, sys.executable, "-c", code, address],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                for _ in range(2)
            ]
            for c in consumers:
                if c.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"service_feed: a consumer failed to start ({c.wait()})")
            start = time.perf_counter()
            for c in consumers:
                c.stdin.write("go\n")
                c.stdin.flush()
            reports = [json.loads(c.communicate(timeout=3600)[0]) for c in consumers]
            server.wait(60)
        finally:
            for proc in [*consumers, server]:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(30)
    rows = sum(r["rows"] for r in reports)
    sums = {k: sum(r["sums"][k] for r in reports) for k in COLUMNS}
    wall = max(r["end"] for r in reports) - start
    print(
        f"service_feed: startup_s={start - launched:.3f} served_s={wall:.3f} "
        f"rows/s={rows / wall:,.0f} per consumer={[r['rows'] for r in reports]}",
        file=sys.stderr,
    )
    return Result(
        rows=rows,
        checksum=checksum(rows=rows, **{f"sum_{k}": v for k, v in sums.items()}),
        wall_s=wall,
        startup_s=start - launched,
    )


WORKLOAD = Workload(
    name="service_feed",
    description="feed served over a network-namespace link to 2 consumers (dataflow serve)",
    dataset="main",
    runs={"dataflow": _dataflow},
    preload=("torch",),
)
