"""ooc_shuffle: read_parquet → random_shuffle(seed=0) → write_parquet, 512 MiB store.

Out of core (issue 17, see ``_ooc``). The check reads the output one batch at
a time: every id exactly once, the sums of the input, and the rows shuffled
(about half of the neighbouring ids ascend, as in a random order; the input's
all do).
"""

from __future__ import annotations

from benchmarks.workloads import DataPaths, Result, RunContext, Workload, _ooc

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

    got = {"rows": 0, "sum_id": 0, "sum_a": 0.0}
    seen = _ooc.IdSet(ctx.data.rows)
    files = _ooc.output_files(ctx)
    pairs = ascending = 0
    for path in files:
        for batch in _ooc.batches(path, COLUMNS):
            seen.add(batch["id"])
            for key, value in _ooc.base_sums(batch).items():
                got[key] += value
            ids = batch["id"].to_numpy()
            pairs += max(0, len(ids) - 1)
            ascending += int((np.diff(ids) > 0).sum())
    if pairs and not 0.45 < ascending / pairs < 0.55:
        raise AssertionError(
            f"ooc_shuffle: {ascending / pairs:.1%} of neighbouring ids ascend: not shuffled"
        )
    seen.check("ooc_shuffle")
    _ooc.compare("ooc_shuffle", got, _ooc.reference(ctx.data, "sums", COLUMNS, _ooc.base_sums))
    return _ooc.result(ctx.data, got, len(files))


WORKLOAD = Workload(
    name="ooc_shuffle",
    description="read_parquet → random_shuffle(seed=0) → write_parquet, 512 MiB store (out of core)",
    dataset="main",
    runs={"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
    check=_check,
    prepare=_prepare,
    store_mib=_ooc.STORE_MIB,
)
