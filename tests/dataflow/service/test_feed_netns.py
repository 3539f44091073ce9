"""``dataflow serve`` in one network namespace, consumers in another, over a veth
link with addresses this test assigns (10.77.0.1/24 and 10.77.0.2/24). Off
loopback the service speaks TLS: the server's certificate (for 10.77.0.1) and the
consumers' CA are made by trustme and given through the environment.

Needs root and iproute2's ``ip``; skipped with the reason otherwise. The
namespaces (and the veth pair inside them) are removed at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.workloads.service_feed import SERVER_IP, namespace_pair
from tests.dataflow.service import netns_peers

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "netns-test-token"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    """Processes a test started: killed if still running, their pipes closed."""
    started: list[subprocess.Popen] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)
        for pipe in (p.stdout, p.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture(scope="module")
def tls(tls_files):
    return tls_files(SERVER_IP)


@pytest.fixture(scope="module")
def netns() -> Iterator[tuple[str, str]]:
    try:
        with namespace_pair() as pair:
            yield pair
    except OSError as e:
        pytest.skip(f"cannot create network namespaces here: {e}")


def start_server(ns: str, log: Path, procs: list, tls) -> tuple[subprocess.Popen, str]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "dataflow.cli", "serve"]
    cmd += [f"{netns_peers.__file__}:dataset", "--address", f"{SERVER_IP}:0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATAFLOW_SERVICE_TOKEN": TOKEN}
    env.update(DATAFLOW_SERVICE_CERT=tls.cert, DATAFLOW_SERVICE_KEY=tls.key)
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    procs.append(proc)
    line = proc.stdout.readline()
    assert "serving" in line, log.read_text()[-3000:]
    return proc, line.rsplit(" at ", 1)[1].strip()


def start_consumer(
    procs: list, ns: str, address: str, out: Path, *args: str, token: str = TOKEN, ca: str = ""
):
    """A consumer in ``ns``; ``ca`` (the PEM it trusts) travels as $DATAFLOW_SERVICE_CA."""
    cmd = ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.dataflow.service.netns_peers"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FEED_TOKEN": token}
    env.pop("DATAFLOW_SERVICE_CA", None)
    if ca:
        env["DATAFLOW_SERVICE_CA"] = ca
    proc = subprocess.Popen(
        [*cmd, address, str(out), *args], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    procs.append(proc)
    return proc


def ids_in(path: Path) -> list[int]:
    return [int(x) for line in path.read_text().splitlines() for x in line.split()]


def wait_file(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
def test_served_across_namespaces_disjoint_kill_and_token(netns, tls, procs, tmp_path: Path):
    server_ns, client_ns = netns
    server, address = start_server(server_ns, tmp_path / "server.log", procs, tls)
    assert address.startswith(f"{SERVER_IP}:")
    # Without the CA (the system's CAs do not know it) the consumer is refused and told why.
    for name, ca in (("no-ca", ""), ("other-ca", tls.other_ca)):
        refused = start_consumer(procs, client_ns, address, tmp_path / name, ca=ca)
        _, err = refused.communicate(timeout=60)
        assert refused.returncode != 0
        expected = (
            f"connect: this consumer cannot reach {address}: the server's TLS certificate "
            "is not trusted here: pass ca=PATH"
        )
        assert expected in err, err[-3000:]
    # A wrong token is refused before anything is served, TLS or not.
    bad = start_consumer(procs, client_ns, address, tmp_path / "bad", token="wrong", ca=tls.ca)
    _, err = bad.communicate(timeout=60)
    assert bad.returncode != 0 and "UNAUTHENTICATED" in err
    # The victim takes 5 batches (and more blocks on credit), then is SIGKILLed
    # while the survivor streams: its unacknowledged rows go to the survivor.
    victim = start_consumer(
        procs, client_ns, address, tmp_path / "victim", "--stop-after", "5", ca=tls.ca
    )
    wait_file(tmp_path / "victim.ready", victim)
    survivor = start_consumer(
        procs, client_ns, address, tmp_path / "survivor", "--delay", "0.002", ca=tls.ca
    )
    time.sleep(1.0)
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    _, err = survivor.communicate(timeout=90)
    assert survivor.returncode == 0, err[-3000:]
    got_victim, got_survivor = ids_in(tmp_path / "victim"), ids_in(tmp_path / "survivor")
    assert len(got_victim) == 5 * netns_peers.BATCH
    assert sorted(got_victim + got_survivor) == list(range(1, netns_peers.ROWS + 1))
    assert server.wait(30) == 0  # every row served: the server exits on its own


@pytest.mark.slow
def test_two_consumers_share_the_stream_across_namespaces(netns, tls, procs, tmp_path: Path):
    server_ns, client_ns = netns
    # Plaintext off loopback is refused unless asked for.
    cmd = ["ip", "netns", "exec", server_ns, sys.executable, "-m", "dataflow.cli", "serve"]
    cmd += [f"{netns_peers.__file__}:dataset", "--address", f"{SERVER_IP}:0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DATAFLOW_SERVICE_TOKEN": TOKEN}
    plain = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2
    assert f"serve: refusing to serve in plaintext on '{SERVER_IP}'" in plain.stderr
    assert "insecure=True (dataflow serve --insecure)" in plain.stderr
    server, address = start_server(server_ns, tmp_path / "server.log", procs, tls)
    outs = [tmp_path / "a", tmp_path / "b"]
    consumers = [
        start_consumer(procs, client_ns, address, o, "--delay", "0.005", ca=tls.ca) for o in outs
    ]
    for p in consumers:
        _, err = p.communicate(timeout=90)
        assert p.returncode == 0, err[-3000:]
    a, b = ids_in(outs[0]), ids_in(outs[1])
    assert sorted(a + b) == list(range(1, netns_peers.ROWS + 1))
    assert a and b  # both took part (each sleeps per batch, so neither drains it alone)
    assert server.wait(30) == 0
