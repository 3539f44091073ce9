"""dataflow.init / shutdown: backend choice, prestarted workers."""

from __future__ import annotations

import pytest

import dataflow as df
from dataflow.session import get_backend, is_initialized


def test_init_prestart_workers_boots_ready_workers_before_any_pipeline():
    backend = df.init("local", num_cpus=2, prestart_workers=True)
    try:
        assert len(backend.worker_pids()) == 2  # up before the first plan
        assert df.range(100).map_batches(lambda b: {"id": b["id"] * 2}).sum("id") == 9900
        assert len(backend.worker_pids()) == 2  # the pipeline used them, started none
    finally:
        df.shutdown()
    assert not is_initialized()


def test_default_init_starts_no_worker_and_inline_ignores_prestart():
    backend = df.init("local", num_cpus=2)
    try:
        assert backend.worker_pids() == []
    finally:
        df.shutdown()
    assert df.init("inline", prestart_workers=True) is get_backend()
    df.shutdown()


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown backend 'nope'; known backends: inline, local, ray"
    ):
        df.init("nope")
