"""ooc_join: read_parquet → k = id % (rows/16) → inner join with a dimension
table of rows/16 rows on k → write_parquet, 512 MiB store.

Out of core (issue 17, see ``_ooc``): at 64M rows a 4,000,000-row dimension
table (``k``, ``v``: every key once, shuffled; made once next to the data),
and every fact row matches one dimension row, so the output has every input
row with its ``v``. The check reads the output one batch at a time: every id
exactly once, ``k == id % keys`` and ``v`` the dimension's value for ``k`` on
every row, and the sums of ``id``, ``a``, ``v`` and ``v * (id % 1000)``
against the input summed one file at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.workloads import DataPaths, Result, RunContext, _ooc

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

RAY_PARTITIONS = 64


def _dataflow(ctx: RunContext) -> None:
    import dataflow as df

    facts = df.read_parquet(list(ctx.data.main_files))
    facts = facts.with_column("k", df.col("id") % _ooc.keys(ctx.data))
    dim = df.read_parquet(str(_ooc.dim_path(ctx.data)))
    _ooc.dataflow_write(ctx, facts.join(dim, "inner", on=("k",)))


def _daft(ctx: RunContext) -> None:
    import daft
    from daft import col

    facts = daft.read_parquet(list(ctx.data.main_files))
    facts = facts.with_column("k", col("id") % _ooc.keys(ctx.data))
    dim = daft.read_parquet(str(_ooc.dim_path(ctx.data)))
    facts.join(dim, on="k").write_parquet(str(ctx.out_dir))


def _ray(ctx: RunContext) -> None:
    import pyarrow.compute as pc
    import ray.data

    n = _ooc.keys(ctx.data)
    facts = ray.data.read_parquet(list(ctx.data.main_files)).map_batches(
        lambda t: t.append_column("k", pc.subtract(t["id"], pc.multiply(pc.divide(t["id"], n), n))),
        batch_format="pyarrow",
    )
    dim = ray.data.read_parquet(str(_ooc.dim_path(ctx.data)))
    facts.join(dim, "inner", RAY_PARTITIONS, on=("k",)).write_parquet(str(ctx.out_dir))


def _pyarrow(ctx: RunContext) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = _ooc.read_all(ctx.data)
    n = _ooc.keys(ctx.data)
    k = pc.subtract(table["id"], pc.multiply(pc.divide(table["id"], n), n))
    dim = pq.read_table(_ooc.dim_path(ctx.data))
    _ooc.write_one(ctx, table.append_column("k", k).join(dim, "k"))


def _sums(ids: np.ndarray, a: np.ndarray, v: np.ndarray) -> dict[str, int | float]:
    return {
        "rows": len(ids),
        "sum_id": int(ids.sum()),
        "sum_a": float(a.sum()),
        "sum_v": int(v.sum()),
        "pair": int((v * (ids % 1000)).sum()),
    }


def _want(data: DataPaths) -> dict[str, int | float]:
    n = _ooc.keys(data)
    dim = _ooc.dim_values(data)

    def partial(table: pa.Table) -> dict[str, int | float]:
        ids = table["id"].to_numpy()
        return _sums(ids, table["a"].to_numpy(), dim[ids % n])

    return _ooc.reference(data, f"join-{n}", ["id", "a"], partial)


def _prepare(data: DataPaths) -> None:
    _want(data)


def _check(ctx: RunContext) -> Result:
    n = _ooc.keys(ctx.data)
    dim = _ooc.dim_values(ctx.data)

    def visit(path: str, batch: pa.RecordBatch) -> dict[str, int | float]:
        ids, k, v = (batch[c].to_numpy() for c in ("id", "k", "v"))
        if (k != ids % n).any() or (v != dim[k]).any():
            raise AssertionError(f"ooc_join: {path} has rows joined to the wrong key")
        return _sums(ids, batch["a"].to_numpy(), v)

    columns = ["id", "a", "k", "v"]
    return _ooc.check_written(
        ctx, "ooc_join", columns, visit, _want(ctx.data), _ooc.IdSet(ctx.data.rows)
    )


WORKLOAD = _ooc.workload(
    "ooc_join",
    "read_parquet → k = id % (rows/16) → join(dimension table of rows/16 rows, on k) "
    "→ write_parquet",
    {"dataflow": _dataflow, "daft": _daft, "ray": _ray, "pyarrow": _pyarrow},
    _check,
    _prepare,
)
