"""ooc_shuffle: read_parquet → random_shuffle(seed=0) → write_parquet, 512 MiB store.

Out of core (issue 17, see ``_ooc``). The check reads the output one batch at
a time: every id exactly once, the sums of the input, and the rows shuffled
(about half of the neighbouring ids ascend, as in a random order; the input's
all do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.workloads import DataPaths, Result, RunContext, _ooc

if TYPE_CHECKING:
    import pyarrow as pa

COLUMNS = ["id", "a"]


def _dataflow(ctx: RunContext) -> None:
    import dataflow as df

    ds = df.read_parquet(list(ctx.data.main_files)).random_shuffle(seed=0)
    _ooc.dataflow_write(ctx, ds)


def _daft(ctx: RunContext) -> None:
    import daft

    daft.read_parquet(list(ctx.data.main_files)).shuffle(seed=0).write_parquet(str(ctx.out_dir))


def _ray(ctx: RunContext) -> None:
    import ray.data

    ds = ray.data.read_parquet(list(ctx.data.main_files)).random_shuffle(seed=0)
    ds.write_parquet(str(ctx.out_dir))


def _pyarrow(ctx: RunContext) -> None:
    import numpy as np

    table = _ooc.read_all(ctx.data)
    _ooc.write_one(ctx, table.take(np.random.default_rng(0).permutation(table.num_rows)))


def _prepare(data: DataPaths) -> None:
    _ooc.reference(data, "sums", COLUMNS, _ooc.base_sums)


def _check(ctx: RunContext) -> Result:
    import numpy as np

    order = {"pairs": 0, "ascending": 0}

    def visit(_: str, batch: pa.RecordBatch) -> dict[str, int | float]:
        ids = batch["id"].to_numpy()
        order["pairs"] += max(0, len(ids) - 1)
        order["ascending"] += int((np.diff(ids) > 0).sum())
        return _ooc.base_sums(batch)

    want = _ooc.reference(ctx.data, "sums", COLUMNS, _ooc.base_sums)
    out = _ooc.check_written(ctx, "ooc_shuffle", COLUMNS, visit, want, _ooc.IdSet(ctx.data.rows))
    if order["pairs"] and not 0.45 < order["ascending"] / order["pairs"] < 0.55:
        raise AssertionError(
            f"ooc_shuffle: {order['ascending'] / order['pairs']:.1%} of neighbouring ids "
            "ascend: not shuffled"
        )
    return out


WORKLOAD = _ooc.workload(
    "ooc_shuffle",
    "read_parquet → random_shuffle(seed=0) → write_parquet",
    {"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
    _check,
    _prepare,
)
