"""Hugging Face ``datasets`` (extra ``dataflow[huggingface]``) as a source.

A ``datasets.Dataset`` already is an Arrow table (in memory, or memory-mapped
from its cache files after ``save_to_disk``/``load_from_disk``): read tasks are
row ranges of it, sliced without copying or converting rows. A task carries a
memory-mapped range as the ``datasets.Dataset`` slice itself (it pickles as file
names, and the worker maps the same files) and an in-memory range as just its
rows. Transformations that left an indices mapping (``shuffle``, ``filter``,
``select``) are applied with one ``take`` per task. Columns keep the Arrow types
``datasets`` stores: an ``Image()`` column is ``struct<bytes, path>``, a
``ClassLabel`` is its integer, as in Ray Data.

A ``datasets.IterableDataset`` streams: each task iterates some of its shards
(``IterableDataset.shard``) in Arrow batches.

Projection pushdown selects columns of the dataset before slicing; limit
pushdown reads only the first rows (map-style) or stops each task's iteration.

>>> src = HuggingFaceDatasource(datasets.load_from_disk("imdb/train"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from dataflow.block import split_to_max_size
from dataflow.context import DataContext
from dataflow.errors import PlanError, SourceError
from dataflow.sources.datasource import BlockMetadata, Datasource, ReadTask

_ITER_BATCH_ROWS = 4096


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            "from_huggingface needs the datasets package: pip install 'dataflow[huggingface]'"
        ) from e
    return datasets


class _CompactTable:
    """A table slice that pickles only its own rows (Arrow IPC), not the whole
    buffers it views (what pickling a ``pa.Table`` slice would send)."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __reduce__(self) -> tuple:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, self.table.schema) as writer:
            writer.write_table(self.table)
        return (_CompactTable._restore, (sink.getvalue(),))

    @staticmethod
    def _restore(buf: pa.Buffer) -> _CompactTable:
        return _CompactTable(pa.ipc.open_stream(buf).read_all())


def _mapped(dataset: Any) -> bool:
    """True when every row of ``dataset`` lives in its cache files (memory-mapped)."""
    return bool(dataset.cache_files) and not any(
        type(t).__name__ == "InMemoryTable" for t in _blocks(dataset.data)
    )


def _blocks(table: Any) -> list[Any]:
    blocks = getattr(table, "blocks", None)
    if blocks is None:
        return [table]
    return [t for row in blocks for t in row]


def _read_map_slice(
    part: Any, columns: list[str] | None, max_bytes: int, name: str
) -> Iterator[pa.Table]:
    try:
        if isinstance(part, _CompactTable):
            table = part.table
        else:  # a pickled Dataset slice: unpickling maps its cache files, here
            table = pickle.loads(part).with_format("arrow")[:]  # a zero-copy slice of the map
        if columns is not None:
            table = table.select(columns)
    except FileNotFoundError as e:
        raise SourceError(
            f"from_huggingface: a cache file of {name!r} is gone ({e}); reload the dataset "
            "(datasets.load_from_disk) or keep its cache directory",
            path=str(e.filename or name),
        ) from e
    yield from split_to_max_size(table, max_bytes)


def _read_iterable(
    dataset: Any, columns: list[str] | None, limit: int | None
) -> Iterator[pa.Table]:
    if columns is not None:
        dataset = dataset.select_columns(columns)
    if limit is not None:
        dataset = dataset.take(limit)
    for batch in dataset.with_format("arrow").iter(batch_size=_ITER_BATCH_ROWS):
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_pydict(batch)
        if table.num_rows:
            yield table


class HuggingFaceDatasource(Datasource):
    """A ``datasets.Dataset`` (row ranges, zero-copy) or ``datasets.IterableDataset``
    (streamed by shards)."""

    supports_projection_pushdown = True
    supports_limit_pushdown = True

    def __init__(self, dataset: Any) -> None:
        datasets = _datasets()
        if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            raise PlanError(
                "from_huggingface: got a DatasetDict with splits "
                f"{list(dataset.keys())}; pass one split, e.g. "
                f"from_huggingface(ds[{next(iter(dataset.keys()), 'train')!r}])"
            )
        if not isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
            raise PlanError(
                "from_huggingface: expected a datasets.Dataset or datasets.IterableDataset, "
                f"got {type(dataset).__name__}"
            )
        self.dataset = dataset
        self.iterable = isinstance(dataset, datasets.IterableDataset)
        # Slicing an Arrow table needs no Python per row: reads can stay on driver threads.
        self.reads_without_gil = not self.iterable

    def get_name(self) -> str:
        return "huggingface"

    def _name(self) -> str:
        """What errors call the dataset: its name, else its first cache file."""
        info = getattr(self.dataset, "info", None)
        name = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None)
        if name:
            return str(name)
        files = [] if self.iterable else self.dataset.cache_files
        return files[0]["filename"] if files else "in-memory dataset"

    def schema(self) -> pa.Schema | None:
        features = self.dataset.features
        return features.arrow_schema if features is not None else None

    def num_rows(self) -> int | None:
        return None if self.iterable else len(self.dataset)

    def estimate_inmemory_data_size(self) -> int | None:
        return None if self.iterable else int(self.dataset.data.nbytes)

    def explain_read(self, **pushdown: Any) -> str:
        parts = []
        if pushdown.get("columns") is not None:
            parts.append(f"select_columns({', '.join(pushdown['columns'])}) on the dataset")
        if pushdown.get("limit") is not None:
            n = pushdown["limit"]
            parts.append(f"take({n}) per shard group" if self.iterable else f"first {n} rows")
        if self.iterable:
            kind = "iterable, streamed by shards"
        else:
            kind = "memory-mapped" if _mapped(self.dataset) else "in memory"
        return "; ".join([kind, *parts])

    def get_read_tasks(
        self, parallelism: int, *, columns: list[str] | None = None, limit: int | None = None
    ) -> list[ReadTask]:
        if columns is not None:
            missing = [c for c in columns if c not in (self.dataset.column_names or columns)]
            if missing:
                raise PlanError(
                    f"from_huggingface: columns {missing} are not in the dataset "
                    f"({self.dataset.column_names})"
                )
        if self.iterable:
            return self._iterable_tasks(parallelism, columns, limit)
        return self._map_tasks(parallelism, columns, limit)

    def _map_tasks(
        self, parallelism: int, columns: list[str] | None, limit: int | None
    ) -> list[ReadTask]:
        ds = self.dataset
        n = len(ds) if limit is None else min(len(ds), limit)
        ctx = DataContext.get_current()
        row_bytes = ds.data.nbytes / max(1, len(ds))
        by_size = math.ceil(n * row_bytes / ctx.target_max_block_size) if row_bytes else 1
        count = max(1, min(n, max(parallelism, by_size)))
        bounds = [n * i // count for i in range(count + 1)]
        mapped = _mapped(ds)
        arrow = None if mapped else ds.with_format("arrow")
        name = self._name()
        tasks = []
        for lo, hi in zip(bounds, bounds[1:]):
            if hi <= lo:
                continue
            # Memory-mapped: the Dataset slice (pickles as file names); in memory: the rows.
            part = pickle.dumps(ds.select(range(lo, hi))) if mapped else _CompactTable(arrow[lo:hi])
            meta = BlockMetadata(num_rows=hi - lo, size_bytes=int((hi - lo) * row_bytes))
            tasks.append(ReadTask(_MapRead(part, columns, ctx.target_max_block_size, name), meta))
        return tasks

    def _iterable_tasks(
        self, parallelism: int, columns: list[str] | None, limit: int | None
    ) -> list[ReadTask]:
        ds = self.dataset
        shards = max(1, int(getattr(ds, "n_shards", 1) or 1))
        count = max(1, min(parallelism, shards))
        parts = [ds] if count == 1 else [ds.shard(num_shards=count, index=i) for i in range(count)]
        return [ReadTask(_IterRead(p, columns, limit), BlockMetadata()) for p in parts]


class _MapRead:
    def __init__(self, *args: Any) -> None:
        self.args = args

    def __call__(self) -> Iterator[pa.Table]:
        return _read_map_slice(*self.args)


class _IterRead:
    def __init__(self, *args: Any) -> None:
        self.args = args

    def __call__(self) -> Iterator[pa.Table]:
        return _read_iterable(*self.args)
