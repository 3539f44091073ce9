"""split_feed: ``feed`` with ``streaming_split(2)`` consumed by two processes.

read_parquet(a, b, c) → map_batches(standardize) → streaming_split(2), each
iterator sent to a consumer process that runs iter_torch_batches(4096) to the
end (the data-parallel training loop). The rate is the aggregate over both
consumers; compare it with ``feed`` in the same run. The consumer processes are
spawned inside the timed run, as a training script does, so their start (an
interpreter importing torch and dataflow, overlapped with the pipeline's start)
is part of the wall time. The reference (``pyarrow-mp``) feeds two consumer
processes from the pool's per-file reads through pipes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from benchmarks.workloads import Result, RunContext, Workload, checksum
from benchmarks.workloads.feed import BATCH, COLUMNS, standardize

SPLITS = 2


def _sums(batches: Iterable[dict]) -> tuple[int, dict[str, float]]:
    rows = 0
    sums = dict.fromkeys(COLUMNS, 0.0)
    for batch in batches:
        rows += len(batch["a"])
        for k in COLUMNS:
            sums[k] += float(batch[k].double().sum())
    return rows, sums


def consume_split(iterator: Any) -> tuple[int, dict[str, float]]:
    """A consumer process: one split, fully, as torch batches."""
    return _sums(iterator.iter_torch_batches(batch_size=BATCH))


def consume_tables(paths: list[str]) -> tuple[int, dict[str, float]]:
    """The reference consumer: its share of the files, read and standardized here."""
    from benchmarks.workloads._common import torch_batches
    from benchmarks.workloads.feed import _read_standardized

    return _sums(torch_batches((_read_standardized(p) for p in paths), BATCH))


def _result(parts: Iterable[tuple[int, dict[str, float]]]) -> Result:
    rows = 0
    sums = dict.fromkeys(COLUMNS, 0.0)
    for n, part in parts:
        rows += n
        for k in COLUMNS:
            sums[k] += part[k]
    return Result(
        rows=rows, checksum=checksum(rows=rows, **{f"sum_{k}": v for k, v in sums.items()})
    )


def _consumers() -> Any:
    import multiprocessing

    # spawn: the driver runs gRPC and executor threads, which fork would break.
    return multiprocessing.get_context("spawn").Pool(SPLITS)


def _dataflow(ctx: RunContext) -> Result:
    import dataflow as df

    with _consumers() as pool:
        ds = df.read_parquet(list(ctx.data.main_files), columns=list(COLUMNS))
        ds = ds.map_batches(standardize, batch_format="numpy")
        splits = ds.streaming_split(SPLITS)
        return _result(pool.map(consume_split, splits, chunksize=1))


def _pyarrow_mp(ctx: RunContext) -> Result:
    files = list(ctx.data.main_files)
    with _consumers() as pool:
        shares = [files[i::SPLITS] for i in range(SPLITS)]
        return _result(pool.map(consume_tables, shares, chunksize=1))


WORKLOAD = Workload(
    name="split_feed",
    description="feed through streaming_split(2) into two consumer processes (torch batches)",
    dataset="main",
    runs={"dataflow": _dataflow, "pyarrow-mp": _pyarrow_mp},
    preload=("torch",),
)
