"""``FileBasedDatasource``: the listing, task sizing and error handling that every
file format shares; a format only says how to turn one file into tables.

Planning lists the paths once (``paths.expand_paths``), then groups files into
read tasks by estimated in-memory size: about ``parallelism`` tasks, none much
bigger than ``DataContext.target_max_block_size`` nor (when there is enough
data) smaller than ``target_min_block_size``. A task reads its files on a few
threads (decoders release the GIL), coalesces tiny tables and splits big ones
so its blocks stay under the block target.

>>> class Lines(FileBasedDatasource):
...     where = "read_lines"
...     def read_file(self, fs, path):
...         with fs.arrow.open_input_stream(path) as f:
...             yield pa.table({"line": f.read().decode().splitlines()})
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from dataflow.block import split_to_max_size
from dataflow.context import DataContext
from dataflow.errors import SourceError
from dataflow.sources.datasource import BlockMetadata, Datasource, ReadTask
from dataflow.sources.paths import (
    FileEntry,
    FileSystems,
    ListingOptions,
    add_constant_columns,
    expand_paths,
    partition_schema,
    partition_values,
    resolve_filesystem,
)
from runtime.store import table_nbytes

PATH_COLUMN = "path"
TASK_THREADS = 8
"""Files read at once inside one read task on a remote filesystem (latency-bound)."""
LOCAL_TASK_THREADS = 1
"""The same for local files: CPU- and GIL-bound, and read tasks already run in
parallel, so more threads only contend: each small read gives the GIL away and
waits for it back. One thread means the task's own thread, no pool. 2,000
1,000-row files mapped, warm, medians of 7: 0.54-0.62 s so, against 0.78-0.95 s
with a pool of 2 (three rounds), and a pool of 1, 2 or 3 took 0.70-0.74,
0.76-0.77 and 0.84-0.85 s (two rounds); a pool of 8 took 1.05 s earlier."""


def task_threads(local: bool, files: int) -> int:
    """Threads for a read task over ``files`` files."""
    return min(LOCAL_TASK_THREADS if local else TASK_THREADS, files)


def task_target_bytes(total_bytes: int, parallelism: int, ctx: DataContext) -> int:
    """In-memory bytes per read task: an even share of ``total_bytes`` over
    ``parallelism`` tasks, clamped to the context's block size bounds."""
    share = total_bytes / max(1, parallelism)
    return int(min(ctx.target_max_block_size, max(ctx.target_min_block_size, share)))


def group_by_size(
    items: Iterable[Any], size_of: Callable[[Any], int], target: int
) -> Iterator[list[Any]]:
    """Consecutive groups of ``items`` each holding about ``target`` bytes."""
    group: list[Any] = []
    acc = 0
    for item in items:
        group.append(item)
        acc += size_of(item)
        if acc >= target:
            yield group
            group, acc = [], 0
    if group:
        yield group


def coalesce(
    tables: Iterable[tuple[str, pa.Table]], max_bytes: int, where: str
) -> Iterator[pa.Table]:
    """Merge small ``(path, table)`` pieces and split big ones into blocks of at
    most ~``max_bytes``; schemas are unified (nulls for missing columns,
    widened numeric types) and a conflict names both files."""
    pending: list[tuple[str, pa.Table]] = []
    acc = 0

    def flush() -> pa.Table:
        if len(pending) == 1:
            return pending[0][1]
        try:
            return pa.concat_tables([t for _, t in pending], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            schema, bad = pending[0][1].schema, pending[-1][0]
            for path, table in pending[1:]:
                try:
                    schema = pa.unify_schemas([schema, table.schema], promote_options="permissive")
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    bad = path
                    break
            raise SourceError(
                f"{where}: {bad!r} has a schema incompatible with {pending[0][0]!r} ({e}); "
                "cast the files to one schema or read them separately",
                path=bad,
            ) from e

    for path, table in tables:
        for piece in split_to_max_size(table, max_bytes):
            nbytes = table_nbytes(piece)
            if acc and acc + nbytes > max_bytes:
                yield flush()
                pending, acc = [], 0
            pending.append((path, piece))
            acc += nbytes
    if pending:
        yield flush()


def read_error(where: str, path: str, error: BaseException) -> SourceError:
    """A ``SourceError`` naming the file (passes an existing one through)."""
    if isinstance(error, SourceError):
        return error
    err = SourceError(f"{where}: cannot read {path!r}: {type(error).__name__}: {error}", path=path)
    err.__cause__ = error
    return err


class FileBasedDatasource(Datasource):
    """Base of the per-file formats. Subclasses set ``where`` (the user-facing
    function name) and implement ``read_file``; ``expansion`` estimates
    in-memory bytes per file byte for sizing tasks."""

    where: str = "read_files"
    default_extensions: tuple[str, ...] | None = None
    expansion: float = 1.0
    sequential: bool = False
    """Read a task's files one after another, each streamed (archives such as tar
    shards): a task then holds about one block, not its whole group of files."""
    columns: tuple[str, ...] | None = None
    """The pushed projection (formats with ``supports_projection_pushdown`` may
    skip decoding other fields; the base selects these columns either way)."""
    limit: int | None = None
    """The pushed limit: each task stops after this many rows."""

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str],
        *,
        filesystem: Any = None,
        include_paths: bool = False,
        partitioning: Any = "hive",
        file_extensions: Sequence[str] | None = None,
        ignore_missing_paths: bool = False,
        partition_filter: Any = None,
        shuffle: Any = None,
    ) -> None:
        self.listing = ListingOptions.of(
            self.where,
            file_extensions=file_extensions or self.default_extensions,
            partitioning=partitioning,
            ignore_missing_paths=ignore_missing_paths,
            partition_filter=partition_filter,
            shuffle=shuffle,
        )
        self.fs, self.paths = resolve_filesystem(paths, filesystem, self.where)
        self.include_paths = include_paths
        self.open_args: dict[str, Any] = {}
        """Ray's ``arrow_open_stream_args``: keywords of pyarrow's ``open_input_stream``."""
        self.partitioning = self.listing.partitioning
        self.file_extensions = self.listing.file_extensions
        self._entries: list[FileEntry] | None = None

    def __getstate__(self) -> dict:
        # Read tasks carry the datasource to workers: the listing stays behind.
        return {**self.__dict__, "_entries": None}

    def get_name(self) -> str:
        return self.where.removeprefix("read_")

    def files(self) -> list[FileEntry]:
        """The listed files (listed once, on first use)."""
        if self._entries is None:
            self._entries = expand_paths(self.fs, self.paths, self.where, options=self.listing)
        return self._entries

    def read_file(self, fs: FileSystems, path: str) -> Iterator[pa.Table]:
        """Tables of one file; raise anything, it is reported with the path."""
        raise NotImplementedError

    def open_stream(self, fs: FileSystems, path: str, compression: str | None = None) -> Any:
        """``path`` opened for reading, with the reader's ``arrow_open_stream_args``
        (they override ``compression``, e.g. ``{"compression": "gzip"}``)."""
        kwargs = {"compression": compression, **getattr(self, "open_args", {})}
        return fs.arrow.open_input_stream(path, **kwargs)

    def estimate_inmemory_data_size(self) -> int | None:
        return int(sum(e.size for e in self.files()) * self.expansion)

    def with_pushdown(
        self, columns: Sequence[str] | None = None, limit: int | None = None, **_: Any
    ) -> FileBasedDatasource:
        """A copy that reads only ``columns`` and at most ``limit`` rows a task."""
        source = copy.copy(self)
        source.columns = tuple(columns) if columns is not None else None
        source.limit = limit
        return source

    def explain_read(self, **pushdown: Any) -> str:
        parts = []
        if pushdown.get("columns") is not None:
            parts.append(f"decodes only {', '.join(pushdown['columns'])}")
        if pushdown.get("limit") is not None:
            parts.append(f"each task stops after {pushdown['limit']} rows")
        return "; ".join(parts)

    def get_read_tasks(self, parallelism: int, **pushdown: Any) -> list[ReadTask]:
        entries = self.files()
        source = self.with_pushdown(**pushdown) if pushdown else self
        ctx = DataContext.get_current()
        target = task_target_bytes(self.estimate_inmemory_data_size() or 0, parallelism, ctx)
        part_schema = partition_schema(entries)
        tasks = []
        for group in group_by_size(entries, lambda e: max(1, int(e.size * self.expansion)), target):
            fn = functools.partial(
                _read_files, source, group, part_schema, ctx.target_max_block_size
            )
            meta = BlockMetadata(
                size_bytes=int(sum(e.size for e in group) * self.expansion),
                input_files=tuple(e.path for e in group),
            )
            tasks.append(ReadTask(fn, meta))
        return tasks

    def finish_table(self, table: pa.Table, entry: FileEntry, part_schema: pa.Schema) -> pa.Table:
        """Add the hive partition columns and, with ``include_paths``, ``path``."""
        if len(part_schema):
            table = add_constant_columns(table, partition_values(entry, part_schema), part_schema)
        if self.include_paths:
            table = table.append_column(
                PATH_COLUMN, pa.repeat(pa.scalar(entry.path, pa.string()), table.num_rows)
            )
        if self.columns is not None:
            # A column the file lacks reads as nulls, as it would after a union of files.
            for c in self.columns:
                if c not in table.column_names:
                    table = table.append_column(c, pa.nulls(table.num_rows))
            table = table.select(list(self.columns))  # keeps the row count with no column
        return table


def _iter_one(
    source: FileBasedDatasource, entry: FileEntry, part_schema: pa.Schema
) -> Iterator[tuple[str, pa.Table]]:
    try:
        for table in source.read_file(source.fs, entry.path):
            yield entry.path, source.finish_table(table, entry, part_schema)
    except Exception as e:
        raise read_error(source.where, entry.path, e) from e


def batches_to_blocks(
    batches: Iterable[pa.RecordBatch],
    post_filter: Any,
    output: Sequence[str] | None,
    limit: int | None,
    max_bytes: int,
) -> Iterator[pa.Table]:
    """A table library's scan (Iceberg, Lance) as blocks: ``post_filter`` (what
    the library could not apply) then the ``output`` projection it needed, at
    most ``limit`` rows (stops pulling then), joined into blocks of ~``max_bytes``."""
    pending: list[pa.RecordBatch] = []
    nbytes, left = 0, limit
    for batch in batches:
        if post_filter is not None:
            batch = batch.filter(post_filter)
            if output is not None:
                batch = batch.select(list(output))
        if left is not None:
            batch = batch.slice(0, left)
            left -= batch.num_rows
        if batch.num_rows:
            pending.append(batch)
            nbytes += table_nbytes(batch)
        if nbytes >= max_bytes:
            yield pa.Table.from_batches(pending)
            pending, nbytes = [], 0
        if left == 0:
            break
    if pending:
        yield pa.Table.from_batches(pending)


def limit_rows(tables: Iterable[pa.Table], limit: int | None) -> Iterator[pa.Table]:
    """``tables`` cut after ``limit`` rows in all (None: no cut); stops pulling then."""
    if limit is None:
        yield from tables
        return
    left = limit
    for table in tables:
        if left <= 0:
            return
        if table.num_rows > left:
            table = table.slice(0, left)
        left -= table.num_rows
        yield table


def _read_files(
    source: FileBasedDatasource, group: list[FileEntry], part_schema: pa.Schema, max_bytes: int
) -> Iterator[pa.Table]:
    yield from limit_rows(_read_group(source, group, part_schema, max_bytes), source.limit)


def _read_group(
    source: FileBasedDatasource, group: list[FileEntry], part_schema: pa.Schema, max_bytes: int
) -> Iterator[pa.Table]:
    threads = task_threads(source.fs.is_local, len(group))
    # Sequential: stream big files (do not hold them), and with a limit stop
    # opening files once the task has its rows (a pool would read them all).
    if threads == 1 or source.sequential or source.limit is not None:
        pieces = (p for e in group for p in _iter_one(source, e, part_schema))
        yield from coalesce(_limit_pieces(pieces, source.limit), max_bytes, source.where)
        return
    with ThreadPoolExecutor(threads) as pool:
        results = pool.map(lambda e: list(_iter_one(source, e, part_schema)), group)
        yield from coalesce(
            (piece for pieces in results for piece in pieces), max_bytes, source.where
        )


def _limit_pieces(
    pieces: Iterable[tuple[str, pa.Table]], limit: int | None
) -> Iterator[tuple[str, pa.Table]]:
    """``(path, table)`` pieces cut after ``limit`` rows, so a streamed file stops
    being read (and decoded) once the task has its rows."""
    if limit is None:
        yield from pieces
        return
    left = limit
    for path, table in pieces:
        if left <= 0:  # a zero limit
            return
        table = table.slice(0, left)
        left -= table.num_rows
        yield path, table
        if left <= 0:  # done: do not pull (open) the next file
            return
