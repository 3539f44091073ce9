"""Tiny benchmark datasets under tmp_path, and a helper that runs one workload in a fresh process."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.data import DataSpec, ensure
from benchmarks.runner import run_once
from benchmarks.workloads import DataPaths

TINY = DataSpec(rows=6_000, files=3, row_group_rows=1_000, small_files=12, small_file_rows=50)
# Shrinks overhead from 2,000 blocks to 12 and webdataset_feed to 600 images, so a run
# takes well under a second.
TINY_PARAMS = {
    "overhead_rows": 1_200,
    "overhead_blocks": 12,
    "webdataset_images": 600,  # 3 shards of 200 JPEGs instead of 20 of 1,000
    "webdataset_shard_images": 200,
}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> DataPaths:
    return ensure(TINY, tmp_path_factory.mktemp("bench-cache"))


@pytest.fixture(scope="session")
def run_tiny(tiny_data: DataPaths):
    """Run (workload, engine) once in a fresh sampled process; results cached per session."""
    cache: dict[tuple[str, str], dict] = {}

    def run(workload: str, engine: str) -> dict:
        if (workload, engine) not in cache:
            cache[workload, engine] = run_once(
                workload, engine, Path(tiny_data.root), repeat=0, timeout_s=240, params=TINY_PARAMS
            )
        return cache[workload, engine]

    return run
