"""What the out-of-core workloads (``ooc_*``, issue 17) share.

Each one sends the whole main dataset (at ``--rows 64000000``: about 5 GiB in
memory, 3 GiB of Parquet) through an all-to-all step (sort, groupby with
``rows / 16`` keys, a join with a dimension table of ``rows / 16`` rows, a
random shuffle, ``repartition(64)``) and writes the result with
``write_parquet``, every engine's object store at ``STORE_MIB`` (dataflow's and
Ray's ``object_store_memory``; Daft has none). dataflow runs under
``DataContext.memory_limit = MEMORY_LIMIT`` (the issue's goal for the whole
process tree) and puts its spill counters into the record's ``extra``.

Exact, with nothing held whole: ``reference`` sums the input one file at a time
(cached as JSON next to the data), and each workload's check reads the written
files one batch at a time and compares. A run whose output differs fails (the
run's record gets ``error``). Row counts and integer sums must be equal, float
sums equal to 1e-9 relative.

>>> keys(DataPaths(Path("/d"), (), (), rows=64_000_000, small_rows=0))  # doctest: +SKIP
4000000
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.workloads import DataPaths, Result, RunContext, Workload, checksum

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

STORE_MIB = 512
MEMORY_LIMIT = int(2.5 * 1024**3)
"""dataflow's ``memory_limit``: the issue's goal for the peak RSS of the process tree."""
KEY_DIVISOR = 16
"""``rows / 16`` group keys and dimension rows: 4,000,000 at 64M rows."""
DIM_SEED = 17
REL_TOL = 1e-9


def keys(data: DataPaths) -> int:
    """How many group keys (``k = id % keys``) and dimension-table rows."""
    return max(1, data.rows // KEY_DIVISOR)


def _cache_dir(data: DataPaths) -> Path:
    path = data.root / "ooc"
    path.mkdir(exist_ok=True)
    return path


def _write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """``write`` into a temporary sibling, then rename: no half-written cache."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)
    return path


def reference(
    data: DataPaths,
    name: str,
    columns: list[str],
    partial: Callable[[pa.Table], dict[str, int | float]],
) -> dict[str, int | float]:
    """The sums ``partial`` gives, added up over the input files read one at a
    time (``columns`` only), cached as ``<data>/ooc/<name>.json``."""
    import pyarrow.parquet as pq

    path = _cache_dir(data) / f"{name}.json"
    if path.exists():
        return json.loads(path.read_text())
    totals: dict[str, int | float] = {}
    for file in data.main_files:
        for key, value in partial(pq.read_table(file, columns=columns)).items():
            totals[key] = totals.get(key, 0) + value
    _write_atomic(path, lambda p: p.write_text(json.dumps(totals)))
    return totals


def int_sum(values: Any) -> int:
    """An exact integer sum (Python ints: no int64 overflow)."""
    import pyarrow.compute as pc

    return int(pc.sum(values).as_py() or 0)


def float_sum(values: Any) -> float:
    import pyarrow.compute as pc

    return float(pc.sum(values).as_py() or 0.0)


def base_sums(table: pa.Table) -> dict[str, int | float]:
    """Rows, ``sum(id)`` and ``sum(a)``: what sort, shuffle and repartition keep."""
    return {"rows": table.num_rows, "sum_id": int_sum(table["id"]), "sum_a": float_sum(table["a"])}


class IdSet:
    """The ids of ``0..rows-1`` a check has seen (a byte each: 61 MiB at 64M
    rows). With as many rows as ids and every id seen, each was seen once.

    >>> ids = IdSet(3); ids.add(pa.array([2, 0, 1])); ids.check("x")  # doctest: +SKIP
    """

    def __init__(self, rows: int) -> None:
        import numpy as np

        self.seen = np.zeros(rows, dtype=bool)
        self.count = 0

    def add(self, ids: Any) -> None:
        values = ids.to_numpy()
        self.count += len(values)
        self.seen[values[(values >= 0) & (values < len(self.seen))]] = True

    def check(self, workload: str) -> None:
        """Raise AssertionError unless every id was seen exactly once."""
        missing = len(self.seen) - int(self.seen.sum())
        if missing or self.count != len(self.seen):
            raise AssertionError(
                f"{workload}: {self.count} rows written for {len(self.seen)} ids, "
                f"{missing} ids missing"
            )


def output_files(ctx: RunContext) -> list[str]:
    """The Parquet files a run wrote (any engine's naming), sorted by name."""
    return sorted(
        str(p) for p in Path(ctx.out_dir).rglob("*") if p.is_file() and p.suffix == ".parquet"
    )


def batches(path: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """``path``'s rows, ``columns`` only, about a million rows at a time."""
    import pyarrow.parquet as pq

    yield from pq.ParquetFile(path).iter_batches(batch_size=1 << 20, columns=columns)


def compare(workload: str, got: dict[str, Any], want: dict[str, Any]) -> None:
    """Raise AssertionError naming every value of ``got`` that differs from ``want``."""
    wrong = []
    for key, expected in want.items():
        value = got.get(key)
        same = (
            math.isclose(value, expected, rel_tol=REL_TOL, abs_tol=1e-6)
            if isinstance(expected, float) and value is not None
            else value == expected
        )
        if not same:
            wrong.append(f"{key}: {value!r} != {expected!r}")
    if wrong:
        raise AssertionError(
            f"{workload}: the output differs from the pyarrow reference: {'; '.join(wrong)}"
        )


def result(data: DataPaths, got: dict[str, Any], files: int) -> Result:
    """The checked output as a Result: rows read for the rate, an engine-free checksum."""
    return Result(rows=data.rows, checksum=checksum(**got), extra={"files": files})


def check_written(
    ctx: RunContext,
    workload: str,
    columns: list[str] | None,
    visit: Callable[[str, pa.RecordBatch], dict[str, int | float]],
    want: dict[str, int | float],
    ids: IdSet,
    id_column: str = "id",
) -> Result:
    """Read what the run wrote one batch at a time: each batch's ``id_column``
    into ``ids`` (every one must be seen once) and the sums ``visit(path,
    batch)`` returns (it may raise on a wrong row) added up and compared with
    ``want``."""
    got: dict[str, int | float] = {}
    files = output_files(ctx)
    for path in files:
        for batch in batches(path, columns):
            ids.add(batch[id_column])
            for key, value in visit(path, batch).items():
                got[key] = got.get(key, 0) + value
    ids.check(workload)
    compare(workload, got, want)
    return result(ctx.data, got, len(files))


def workload(
    name: str,
    description: str,
    runs: dict[str, Callable[[RunContext], Any]],
    check: Callable[[RunContext], Result],
    prepare: Callable[[DataPaths], Any],
) -> Workload:
    """An out-of-core workload: the main dataset through a ``STORE_MIB`` store."""
    return Workload(
        name=name,
        description=f"{description}, {STORE_MIB} MiB store (out of core)",
        dataset="main",
        runs=runs,
        check=check,
        prepare=prepare,
        store_mib=STORE_MIB,
    )


def dataflow_write(ctx: RunContext, ds: Any) -> None:
    """``ds.write_parquet(out)`` under the memory limit; spill stats into ``ctx.extra``."""
    from dataflow.context import DataContext

    DataContext.get_current().memory_limit = MEMORY_LIMIT
    ds.write_parquet(str(ctx.out_dir))
    stats = ds._last_stream.stats()  # the run's DatasetStats (ds.stats() is its text)
    ctx.extra.update(
        spilled_bytes=stats.store_spilled_bytes,
        restored_bytes=stats.store_restored_bytes,
        spill_write_s=round(stats.spill_write_s, 3),
        spill_dir=stats.spill_dir,
        store_peak_bytes=stats.store_peak_bytes,
        executor_peak_rss_bytes=stats.peak_rss_bytes,
    )


def read_all(data: DataPaths, columns: list[str] | None = None) -> pa.Table:
    """The whole main dataset in memory: the ``pyarrow`` runs' input. Those runs
    are the hand-written reference at small sizes (the tests' tiny data); at
    64M rows they need about 10 GiB, so the benchmark runs leave them out."""
    import pyarrow.dataset as pads

    return pads.dataset(list(data.main_files), format="parquet").to_table(columns=columns)


def write_one(ctx: RunContext, table: pa.Table, name: str = "part-0") -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, Path(ctx.out_dir) / f"{name}.parquet")


# -- the dimension table of ooc_join ----------------------------------------------


def dim_path(data: DataPaths) -> Path:
    """``keys(data)`` rows ``k`` (every key once, shuffled) and ``v`` (random ints
    below 10^6), one Parquet file, made once next to the data."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = keys(data)
    path = _cache_dir(data) / f"dim-{n}.parquet"
    if not path.exists():
        rng = np.random.default_rng(DIM_SEED)
        table = pa.table({"k": rng.permutation(n), "v": rng.integers(0, 10**6, n)})
        _write_atomic(path, lambda p: pq.write_table(table, p, row_group_size=1 << 16))
    return path


def dim_values(data: DataPaths) -> np.ndarray:
    """``v`` indexed by ``k``: the dimension table as a lookup array (32 MiB at 4M keys)."""
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(dim_path(data))
    out = np.empty(table.num_rows, dtype=np.int64)
    out[table["k"].to_numpy()] = table["v"].to_numpy()
    return out
