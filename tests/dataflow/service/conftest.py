"""TLS files for the batch service's tests, made by ``trustme`` (test extra)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest


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
