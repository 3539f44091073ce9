"""The main dataset as lakehouse tables (Delta, Iceberg, Lance), converted once by
each format's own library and cached next to the Parquet files, and what the
three ``*_read`` workloads share: the selective filter and the checksum.

Each source Parquet file (sorted, dense ids) becomes one data file or fragment,
in order, so a filter ``id < rows / 10`` can be answered from about a tenth of
the files: the statistics in the table's metadata decide which.

>>> cutoff(paths)  # doctest: +SKIP
800000
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.workloads import DataPaths, Result, checksum

if TYPE_CHECKING:
    import pyarrow as pa

ICEBERG_TABLE = "bench.main"
_DONE = ".complete"


def cutoff(data: DataPaths) -> int:
    """The selective filter's bound: ``id < cutoff`` keeps a tenth of the rows."""
    return max(1, data.rows // 10)


def result(data: DataPaths, table: pa.Table) -> Result:
    """Rows kept, ``sum(id)`` and ``sum(a)`` of the filtered table (any engine)."""
    import pyarrow.compute as pc

    return Result(
        rows=data.rows,  # rows/s counts the table's rows: what the filter had to answer
        checksum=checksum(
            rows=table.num_rows,
            sum_id=pc.sum(table["id"]).as_py() or 0,
            sum_a=float(pc.sum(table["a"]).as_py() or 0.0),
        ),
    )


def _cached(path: Path, write: Callable[[Path], None]) -> Path:
    """``path`` built by ``write`` unless a completed build is there (an
    interrupted one is removed and redone)."""
    if (path / _DONE).exists():
        return path
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    write(path)
    (path / _DONE).touch()
    return path


def delta_path(data: DataPaths) -> str:
    return str(data.root / "lakehouse" / "delta")


def lance_uri(data: DataPaths) -> str:
    return str(data.root / "lakehouse" / "lance" / "main.lance")


def iceberg_catalog(data: DataPaths) -> dict[str, Any]:
    """``catalog_kwargs`` of the sqlite catalog holding ``ICEBERG_TABLE``."""
    base = data.root / "lakehouse" / "iceberg"
    return {
        "name": "bench",
        "type": "sql",
        "uri": f"sqlite:///{base}/catalog.db",
        "warehouse": f"file://{base}/warehouse",
    }


def load_iceberg(data: DataPaths) -> Any:
    """The pyiceberg table (for the peers that take one)."""
    from pyiceberg.catalog import load_catalog

    kwargs = dict(iceberg_catalog(data))
    return load_catalog(kwargs.pop("name"), **kwargs).load_table(ICEBERG_TABLE)


def prepare_delta(data: DataPaths) -> None:
    def write(path: Path) -> None:
        import pyarrow.parquet as pq
        from deltalake import write_deltalake

        for f in data.main_files:  # one commit and one data file per source file
            write_deltalake(str(path), pq.read_table(f), mode="append")

    _cached(Path(delta_path(data)), write)


def prepare_iceberg(data: DataPaths) -> None:
    def write(path: Path) -> None:
        import pyarrow.parquet as pq
        from pyiceberg.catalog import load_catalog

        kwargs = dict(iceberg_catalog(data))
        catalog = load_catalog(kwargs.pop("name"), **kwargs)
        catalog.create_namespace(ICEBERG_TABLE.split(".")[0])
        table = catalog.create_table(ICEBERG_TABLE, schema=pq.read_schema(data.main_files[0]))
        for f in data.main_files:
            table.append(pq.read_table(f))

    _cached(Path(iceberg_catalog(data)["warehouse"].removeprefix("file://")).parent, write)


def prepare_lance(data: DataPaths) -> None:
    def write(path: Path) -> None:
        import lance
        import pyarrow as pa
        import pyarrow.parquet as pq

        per_file = -(-data.rows // len(data.main_files))
        batches = (b for f in data.main_files for b in pq.ParquetFile(f).iter_batches())
        schema = pq.read_schema(data.main_files[0])
        reader = pa.RecordBatchReader.from_batches(schema, batches)
        lance.write_dataset(reader, lance_uri(data), max_rows_per_file=per_file)

    _cached(Path(lance_uri(data)).parent, write)
