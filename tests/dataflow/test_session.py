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


def test_torchrun_ranks_each_take_their_share_of_the_machine(monkeypatch):
    from runtime.resources import detect_num_cpus
    from runtime.store import default_capacity, default_shm_root

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # as torchrun --nproc-per-node 2 sets it
    whole = default_capacity(default_shm_root())
    backend = df.init("local")
    try:
        assert backend.total_resources().cpu == max(1, detect_num_cpus() // 2)
        assert abs(backend._store.capacity_bytes - whole // 2) < whole // 100
    finally:
        df.shutdown()
    backend = df.init("local", num_cpus=3, object_store_memory=1 << 30)  # given: kept
    try:
        assert backend.total_resources().cpu == 3
        assert backend._store.capacity_bytes == 1 << 30
    finally:
        df.shutdown()


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown backend 'nope'; known backends: inline, local, ray"
    ):
        df.init("nope")


# Python 3.12 warns on any fork of a process with threads, which this test does on purpose.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_never_uses_its_parents_backend():
    """The child drops the inherited backend (its threads did not survive the
    fork) without shutting it down, and starts its own on first use."""
    import os

    from dataflow import session

    parent = df.init("local", num_cpus=2)
    try:
        assert df.range(10).map_batches(lambda b: b).sum("id") == 45
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code only
            ok = not is_initialized() and session._inherited == [parent]
            ok = ok and df.init("inline") is not parent and df.range(5).sum("id") == 10
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's backend is untouched by the child.
        assert get_backend() is parent and df.range(10).map_batches(lambda b: b).sum("id") == 45
    finally:
        df.shutdown()


def test_ray_backend_joins_the_cluster_named_by_the_environment():
    """A script run as a Ray job (KubeRay RayJob, ``ray job submit``) gets
    ``RAY_ADDRESS``; ``DATAFLOW_BACKEND=ray`` must then join that cluster, not
    start a private Ray beside it. ``DATAFLOW_RAY_ADDRESS`` wins over it."""
    from dataflow.session import ray_address_from_env

    assert ray_address_from_env({}) is None
    assert ray_address_from_env({"RAY_ADDRESS": ""}) is None
    assert ray_address_from_env({"RAY_ADDRESS": "10.0.0.5:6379"}) == "10.0.0.5:6379"
    both = {"DATAFLOW_RAY_ADDRESS": "ray://head:10001", "RAY_ADDRESS": "10.0.0.5:6379"}
    assert ray_address_from_env(both) == "ray://head:10001"
