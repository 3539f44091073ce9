"""service_feed: the ``feed`` pipeline served by ``dataflow serve`` in one network
namespace to 2 consumers in another (a veth link), torch batches summed as ``feed`` does.

Needs root and iproute2 (``ip netns``). The timed run includes starting the
server and consumer processes (about 2 s); the consumers' own served time is
printed to stderr (``served_s``) for the steady-state rate.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
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
    ds = df.read_parquet({files!r}, columns=list(COLUMNS))
    return ds.map_batches(standardize, batch_format="numpy")
"""

_CONSUMER = """
import json, sys, time
import torch
import dataflow as df
it = df.connect(sys.argv[1], token="bench")
rows, sums, t0 = 0, dict.fromkeys({columns!r}, 0.0), time.perf_counter()
for batch in it.iter_torch_batches(batch_size={batch}):
    rows += len(batch["a"])
    for k in sums:
        sums[k] += float(batch[k].double().sum())
print(json.dumps({{"rows": rows, "sums": sums, "served_s": time.perf_counter() - t0}}))
"""


def _dataflow(ctx: RunContext) -> Result:
    env = {**os.environ, "PYTHONPATH": str(_ROOT), "DATAFLOW_SERVICE_TOKEN": "bench"}
    with namespace_pair() as (server_ns, client_ns), tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp, "job.py")
        job.write_text(_SERVER_JOB.format(files=list(ctx.data.main_files)))
        server = subprocess.Popen(
            ["ip", "netns", "exec", server_ns, sys.executable, "-m", "dataflow.cli", "serve"]
            + [f"{job}:dataset", "--address", f"{SERVER_IP}:0"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            address = server.stdout.readline().rsplit(" at ", 1)[-1].strip()
            code = _CONSUMER.format(columns=COLUMNS, batch=BATCH)
            consumers = [
                subprocess.Popen(
                    ["ip", "netns", "exec", client_ns, sys.executable, "-c", code, address],
                    stdout=subprocess.PIPE,
                    text=True,
                    env=env,
                )
                for _ in range(2)
            ]
            reports = [json.loads(c.communicate(timeout=3600)[0]) for c in consumers]
            server.wait(60)
        finally:
            if server.poll() is None:
                server.terminate()
                server.wait(30)
    rows = sum(r["rows"] for r in reports)
    sums = {k: sum(r["sums"][k] for r in reports) for k in COLUMNS}
    served = max(r["served_s"] for r in reports)
    print(f"service_feed: served_s={served:.3f} rows/s={rows / served:,.0f}", file=sys.stderr)
    return Result(
        rows=rows, checksum=checksum(rows=rows, **{f"sum_{k}": v for k, v in sums.items()})
    )


WORKLOAD = Workload(
    name="service_feed",
    description="feed served over a network-namespace link to 2 consumers (dataflow serve)",
    dataset="main",
    runs={"dataflow": _dataflow},
    preload=("torch",),
)
