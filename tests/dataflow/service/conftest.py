"""Fixtures of the batch service's tests: servers stopped at the end, and TLS
files made by ``trustme`` (test extra)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from dataflow.service.dispenser import BlockDispenser, Policy
from dataflow.service.server import BlockServer


@pytest.fixture
def serve_blocks() -> Iterator[Callable[..., BlockServer]]:
    """``serve_blocks(tables_or_fn, policy, address="127.0.0.1:0", **server_kw)``: a
    ``BlockServer`` of ``policy`` over the tables (or ``fn()``), stopped at the end."""
    servers: list[BlockServer] = []

    def start(tables_or_fn, policy: Policy, address: str = "127.0.0.1:0", **kw) -> BlockServer:
        make = tables_or_fn if callable(tables_or_fn) else (lambda: iter(tables_or_fn))
        server = BlockServer(BlockDispenser(make, policy), address, **kw)
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop(0)


@dataclass(frozen=True)
class TLSFiles:
    """PEM paths: a CA, a server certificate chain and key it signed for some
    hosts, and another CA that did not sign it."""

    ca: str
    cert: str
    key: str
    other_ca: str


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> Callable[..., TLSFiles]:
    """``tls_files(*hosts)``: a fresh CA and a server certificate for ``hosts``."""
    trustme = pytest.importorskip("trustme")

    def make(*hosts: str) -> TLSFiles:
        d = tmp_path_factory.mktemp("tls")
        files = TLSFiles(*(str(d / n) for n in ("ca.pem", "server.pem", "server.key", "x.pem")))
        ca = trustme.CA()
        cert = ca.issue_cert(*hosts)
        ca.cert_pem.write_to_path(files.ca)
        for blob in cert.cert_chain_pems:
            blob.write_to_path(files.cert, append=True)
        cert.private_key_pem.write_to_path(files.key)
        trustme.CA().cert_pem.write_to_path(files.other_ca)
        return files

    return make
