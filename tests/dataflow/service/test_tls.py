"""The batch service over TLS on this host (certificates by trustme), and its refusal
to serve or consume in plaintext off loopback unless insecure=True is explicit."""

from __future__ import annotations

import pickle
import threading

import pytest

import dataflow as df
from dataflow.errors import DataflowError
from dataflow.service.policies import Reserve
from tests.dataflow.service.helpers import blocks


@pytest.fixture
def serve(serve_blocks):
    def start(sizes: list[int], address: str = "127.0.0.1:0", *, epochs: int = 1, **kw):
        return serve_blocks(blocks(sizes), Reserve(epochs=epochs), address, **kw)

    return start


@pytest.fixture
def tls(tls_files):
    return tls_files("127.0.0.1", "localhost")


def ids(it) -> list[int]:
    return [i for b in it.iter_batches(batch_size=7) for i in b["id"].tolist()]


def test_a_consumer_with_the_ca_gets_every_row(serve, tls, monkeypatch):
    server = serve([10, 20, 30], certfile=tls.cert, keyfile=tls.key, epochs=2)
    assert server.tls
    assert ids(df.connect(server.address, ca=tls.ca)) == list(range(60))
    monkeypatch.setenv("DATAFLOW_SERVICE_CA", tls.ca)  # the same from the environment
    assert ids(df.connect(server.address)) == list(range(60))


def test_the_server_reads_its_certificate_from_the_environment(serve, tls, monkeypatch):
    monkeypatch.setenv("DATAFLOW_SERVICE_CERT", tls.cert)
    monkeypatch.setenv("DATAFLOW_SERVICE_KEY", tls.key)
    server = serve([5, 5], token="t0k3n")
    assert server.tls
    assert ids(df.connect(server.address, token="t0k3n", ca=tls.ca)) == list(range(10))


def test_a_consumer_without_the_ca_is_refused_with_what_to_do(serve, tls):
    server = serve([10], certfile=tls.cert, keyfile=tls.key)
    with pytest.raises(DataflowError) as wrong_ca:
        ids(df.connect(server.address, ca=tls.other_ca))
    assert str(wrong_ca.value).startswith(
        f"connect: this consumer cannot reach {server.address}: the server's TLS certificate "
        "is not trusted here: pass ca=PATH (the CA certificate that signed it, for this "
        "address) or set DATAFLOW_SERVICE_CA (UNAVAILABLE: "
    )
    with pytest.raises(DataflowError) as plaintext:  # on loopback without a CA: plaintext
        ids(df.connect(server.address))
    assert "(does it speak TLS?): pass ca=PATH" in str(plaintext.value)
    assert ids(df.connect(server.address, ca=tls.ca)) == list(range(10))  # nothing was lost


def test_the_token_is_still_required_over_tls(serve, tls):
    server = serve([4], certfile=tls.cert, keyfile=tls.key, token="right")
    with pytest.raises(DataflowError, match="UNAUTHENTICATED.*token"):
        ids(df.connect(server.address, ca=tls.ca, token="wrong"))
    with pytest.raises(DataflowError, match="UNAUTHENTICATED"):
        ids(df.connect(server.address, ca=tls.ca))
    assert ids(df.connect(server.address, ca=tls.ca, token="right")) == [0, 1, 2, 3]


def test_plaintext_off_loopback_needs_insecure_true(serve, tls):
    with pytest.raises(ValueError) as info:
        serve([3], "0.0.0.0:0", token="t")
    message = str(info.value)
    assert message.startswith("serve: refusing to serve in plaintext on '0.0.0.0' (not loopback)")
    assert "certfile=" in message and "DATAFLOW_SERVICE_CERT" in message
    assert "insecure=True" in message
    server = serve([3, 3], "0.0.0.0:0", token="t", insecure=True)
    assert not server.tls
    port = server.address.rsplit(":", 1)[1]
    # A TLS consumer of a plaintext server is told what is wrong.
    with pytest.raises(DataflowError, match="does not speak TLS.*insecure=True"):
        ids(df.connect(f"127.0.0.1:{port}", token="t", ca=tls.ca))
    assert ids(df.connect(f"127.0.0.1:{port}", token="t")) == list(range(6))


def test_bad_tls_arguments_name_the_file_and_the_knob(serve, tls, tmp_path):
    with pytest.raises(ValueError, match="keyfile \\(or DATAFLOW_SERVICE_KEY\\) is not"):
        serve([1], certfile=tls.cert)
    with pytest.raises(ValueError, match="certfile \\(or DATAFLOW_SERVICE_CERT\\) is not"):
        serve([1], keyfile=tls.key)
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ValueError, match=f"cannot read the TLS certificate chain '{missing}'"):
        serve([1], certfile=missing, keyfile=tls.key)
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ValueError, match="junk.pem' is not a PEM file"):
        df.connect("10.0.0.1:7000", ca=str(tmp_path / "junk.pem"))


def _drain(it, out: list[int]) -> None:
    out += [r["id"] for r in it.iter_rows()]


def test_streaming_split_over_tls_and_its_pickled_iterators_carry_the_ca(tls):
    ds = df.range(200, override_num_blocks=8)
    with pytest.raises(ValueError, match="streaming_split: refusing to serve in plaintext"):
        ds.streaming_split(2, host="0.0.0.0")
    its = ds.streaming_split(2, certfile=tls.cert, keyfile=tls.key, ca=tls.ca)
    moved = pickle.loads(pickle.dumps(its[1]))  # as sent to another process
    out: list[list[int]] = [[], []]
    th = threading.Thread(target=_drain, args=(its[0], out[0]))
    th.start()
    _drain(moved, out[1])
    th.join(30)
    assert out[0] and out[1]
    assert sorted(out[0] + out[1]) == list(range(200))


def test_streaming_split_in_plaintext_off_loopback_with_insecure_true():
    its = df.range(50).streaming_split(1, host="0.0.0.0", insecure=True)
    out: list[int] = []
    _drain(its[0], out)
    assert out == list(range(50))
