"""Shared fixtures: the backend matrix and the input matrix (STYLE point 14).

``backend`` runs a test on the in-process ``inline`` backend, on the
``local`` backend (worker processes + shared memory) and, in the slow tier,
on the ``ray`` backend, so the backends must agree on every result. ``make_ds`` builds the
same rows as in-memory blocks or as Parquet files read back, so a dataset test
checks both input paths.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import dataflow as df
from dataflow import session


@pytest.fixture(
    scope="module", params=["inline", "local", pytest.param("ray", marks=pytest.mark.slow)]
)
def backend(request):
    """A running backend (module-scoped: one start per backend per test module).
    ``ray`` (slow tier) attaches to the session's one local Ray (``ray_session``)."""
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    started = session.init(request.param, num_cpus=2)
    yield started
    session.shutdown()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole test session (it takes seconds to start): 2 CPUs
    and 2 units of the custom resource ``slot``, on 127.0.0.1. Tests that need Ray
    ask for it; a ``RayBackend()`` made inside then reuses it."""
    from runtime.backends.ray import RayBackend

    owner = RayBackend(num_cpus=2, resources={"slot": 2})
    yield
    owner.shutdown()


@pytest.fixture(params=["memory", "parquet"])
def make_ds(request, tmp_path) -> Callable[..., df.Dataset]:
    """``make_ds(table, num_blocks=3)``: a Dataset of ``table``'s rows, from memory
    blocks or from ``num_blocks`` Parquet files."""

    def make(table: pa.Table, num_blocks: int = 3) -> df.Dataset:
        n = table.num_rows
        bounds = [n * i // num_blocks for i in range(num_blocks + 1)]
        parts = [table.slice(a, b - a) for a, b in zip(bounds, bounds[1:])]
        if request.param == "memory":
            return df.from_arrow(parts)
        for i, part in enumerate(parts):
            pq.write_table(part, tmp_path / f"part-{i:03d}.parquet")
        return df.read_parquet(str(tmp_path))

    make.kind = request.param
    return make


@pytest.fixture
def tiny_disk(tmp_path) -> Iterator[str]:
    """A 2 MiB tmpfs mounted for the test: a disk that fills up for real.
    Skipped where this process may not mount (not root, or a container without
    CAP_SYS_ADMIN); the injected-ENOSPC tests cover those machines."""
    import shutil
    import subprocess

    path = tmp_path / "tiny-disk"
    path.mkdir()
    mount = shutil.which("mount")
    if os.geteuid() != 0 or mount is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield str(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
