"""File sinks: Parquet, CSV, JSON Lines and ``.npy``, with hive partitioning,
size-based file rollover and an atomic commit.

The commit protocol (Hadoop's ``_temporary`` + ``_SUCCESS``, made atomic for
the reader): ``on_write_start`` (driver) checks ``mode`` and picks a staging
prefix ``<path>/_temporary-<id>/``; every ``write`` (worker) streams its blocks
into files under it, one open file per partition, rolled over when it reaches
``target_file_size`` bytes; ``on_write_complete`` (driver) moves the files
into place (``mode="overwrite"`` first removes the old content) and writes a
``_SUCCESS`` manifest listing every file with its rows and bytes;
``on_write_failed`` removes the staging prefix, leaving the destination as it
was. Readers skip ``_``-prefixed names, so staging files are never read.

>>> sink = ParquetDatasink("out/", partition_cols=["day"], mode="overwrite")
>>> sink.on_write_start()
>>> result = sink.write(blocks, task_index=0)          # in a worker   # doctest: +SKIP
>>> manifest = sink.on_write_complete([result])        # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import urllib.parse
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dataflow.block import column_to_numpy, table_to_pandas
from dataflow.sources.datasource import Datasink, WriteResult
from dataflow.sources.paths import resolve_filesystem

MiB = 1024 * 1024
DEFAULT_TARGET_FILE_SIZE = 256 * MiB
ROW_GROUP_TARGET_BYTES = 128 * MiB
MANIFEST = "_SUCCESS"
MODES = ("error", "overwrite", "append", "ignore")
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_MOVE_THREADS = 16


class _FileWriter:
    """One output file: the stream, its schema and the format's state for it."""

    def __init__(self, stream: Any, schema: pa.Schema, sink: FileDatasink) -> None:
        self.stream = stream
        self.schema = schema
        self.sink = sink
        self.num_rows = 0
        self.state = sink.open_file(stream, schema)

    def accepts(self, table: pa.Table) -> pa.Table | None:
        """``table`` cast to this file's schema, or None to start a new file."""
        if table.schema.equals(self.schema):
            return table
        try:
            return table.cast(self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, ValueError):
            return None

    def write(self, table: pa.Table) -> None:
        self.sink.write_table(self.state, self.stream, table)
        self.num_rows += table.num_rows

    @property
    def nbytes(self) -> int:
        return self.stream.tell() + self.sink.buffered_bytes(self.state)

    def close(self) -> None:
        self.sink.close_file(self.state, self.stream)
        self.stream.close()

    def abort(self) -> None:
        """Close after a failure; the staged file is discarded with the staging prefix."""
        try:
            self.sink.close_file(self.state, self.stream)
        except Exception:  # the error being raised matters, not this file
            pass
        self.stream.close()


class FileDatasink(Datasink):
    """Base of the file sinks; a format implements ``open_file``, ``write_table``
    and ``close_file``. ``format_kwargs`` may hold ``target_file_size`` (bytes,
    default 256 MiB); the rest goes to the format's writer."""

    where = "write_files"
    extension = ""
    modes: tuple[str, ...] = MODES

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        filesystem: Any = None,
        partition_cols: Sequence[str] | None = None,
        mode: str = "error",
        try_create_dir: bool = True,
        open_stream_args: dict[str, Any] | None = None,
        filename_provider: Any = None,
        min_rows_per_file: int | None = None,
        max_rows_per_file: int | None = None,
        format_args_fn: Any = None,
        **format_kwargs: Any,
    ) -> None:
        mode = getattr(mode, "value", mode)  # Ray Data's SaveMode enum works too
        if mode not in self.modes:
            raise ValueError(f"{self.where}: mode must be one of {self.modes}, got {mode!r}")
        self.target_file_size = int(format_kwargs.pop("target_file_size", DEFAULT_TARGET_FILE_SIZE))
        if self.target_file_size <= 0:
            raise ValueError(f"{self.where}: target_file_size must be > 0 bytes")
        for name, value in (
            ("min_rows_per_file", min_rows_per_file),
            ("max_rows_per_file", max_rows_per_file),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(
                    f"{self.where}: {name} must be a positive int or None, got {value!r}"
                )
        if min_rows_per_file and max_rows_per_file and min_rows_per_file > max_rows_per_file:
            raise ValueError(
                f"{self.where}: min_rows_per_file={min_rows_per_file} is more than "
                f"max_rows_per_file={max_rows_per_file}"
            )
        if filename_provider is not None and not any(
            callable(getattr(filename_provider, m, None)) for m in _PROVIDER_METHODS
        ):
            raise TypeError(
                f"{self.where}: filename_provider must have get_filename_for_task (a "
                f"dataflow or Ray Data FilenameProvider), got {type(filename_provider).__name__}"
            )
        if format_args_fn is not None and not callable(format_args_fn):
            raise TypeError(f"{self.where}: the *_args_fn must be callable, got {format_args_fn!r}")
        self.fs, (self.path,) = resolve_filesystem([os.fspath(path)], filesystem, self.where)
        self.path = self.path.rstrip("/") or "/"
        self.partition_cols = list(partition_cols or [])
        self.mode = mode
        self.try_create_dir = bool(try_create_dir)
        self.open_stream_args = dict(open_stream_args or {})
        """Ray's ``arrow_open_stream_args``: keywords of pyarrow's ``open_output_stream``."""
        self.filename_provider = filename_provider
        self.min_rows_per_file = min_rows_per_file
        self.max_rows_per_file = max_rows_per_file
        self.format_args_fn = format_args_fn
        """Ray's ``arrow_*_args_fn``: called in each write task; its dict adds
        format keywords (those given directly win)."""
        self.format_kwargs = format_kwargs
        self.write_id = ""
        self.skip_write = False
        """True after ``on_write_start`` in mode 'ignore' on a non-empty destination."""
        self._dest_existed = True
        self._dest_empty = False

    def get_name(self) -> str:
        return self.where.removeprefix("write_")

    @property
    def staging(self) -> str:
        return f"{self.path}/_temporary-{self.write_id}"

    # -- driver hooks ------------------------------------------------------------

    def on_write_start(self) -> None:
        fs = self.fs.fsspec
        self._dest_existed = fs.exists(self.path)
        if self._dest_existed and not fs.isdir(self.path):
            raise FileExistsError(f"{self.where}: {self.path!r} is a file; give a directory path")
        self._dest_empty = not self._dest_existed or not fs.ls(self.path, detail=False)
        if self.mode == "error" and not self._dest_empty:
            raise FileExistsError(
                f"{self.where}: {self.path!r} already exists and is not empty; pass "
                "mode='overwrite' to replace it or mode='append' to add files to it"
            )
        if self.mode == "ignore" and not self._dest_empty:
            self.skip_write = True
            return
        if not self._dest_existed and not self.try_create_dir:
            raise FileNotFoundError(
                f"{self.where}: {self.path!r} does not exist and try_create_dir=False; "
                "create it first or pass try_create_dir=True"
            )
        self.write_id = uuid.uuid4().hex[:12]
        fs.makedirs(self.staging, exist_ok=True)

    def on_write_complete(self, results: list[WriteResult]) -> dict:
        """Move the staged files into place and write the ``_SUCCESS`` manifest."""
        fs = self.fs.fsspec
        files = [f for r in results for f in r.extra.get("manifest", ())]
        previous: list[dict] = []
        if self.mode == "overwrite":
            for entry in fs.ls(self.path, detail=False):
                if entry.rstrip("/") != self.staging:
                    fs.rm(entry, recursive=True)
        elif self.mode == "append" and fs.exists(f"{self.path}/{MANIFEST}"):
            with fs.open(f"{self.path}/{MANIFEST}", "rb") as f:
                previous = json.load(f).get("files", [])

        def move(rel: str) -> None:
            dest = f"{self.path}/{rel}"
            parent = posixpath.dirname(dest)
            if parent != self.path:
                fs.makedirs(parent, exist_ok=True)
            fs.mv(f"{self.staging}/{rel}", dest)

        with ThreadPoolExecutor(_MOVE_THREADS) as pool:
            list(pool.map(move, [f["path"] for f in files]))
        all_files = previous + files
        manifest = {
            "write_id": self.write_id,
            "format": self.get_name(),
            "files": all_files,
            "num_rows": sum(f["num_rows"] for f in all_files),
            "num_bytes": sum(f["num_bytes"] for f in all_files),
        }
        with fs.open(f"{self.path}/{MANIFEST}", "wb") as f:
            f.write(json.dumps(manifest, indent=1).encode())
        if fs.exists(self.staging):  # object stores drop an emptied prefix by themselves
            fs.rm(self.staging, recursive=True)
        return manifest

    def on_write_failed(self, error: BaseException) -> None:
        """Remove everything this write staged; a destination it created goes too."""
        fs = self.fs.fsspec
        if self.write_id and fs.exists(self.staging):
            fs.rm(self.staging, recursive=True)
        if not self._dest_existed and fs.exists(self.path) and not fs.ls(self.path, detail=False):
            fs.rm(self.path, recursive=True)

    # -- worker --------------------------------------------------------------------

    def write(self, blocks: Iterable[pa.Table], task_index: int) -> WriteResult:
        """Stream ``blocks`` into staged files: one open file per partition, a new
        one when the current reaches ``target_file_size``."""
        if not self.write_id:
            raise RuntimeError(f"{self.where}: write() called before on_write_start()")
        if self.format_args_fn is not None:  # Ray's *_args_fn: made in the task
            self.format_kwargs = {**self.format_args_fn(), **self.format_kwargs}
            self.format_args_fn = None
        open_files: dict[str, tuple[str, _FileWriter, dict[str, Any]]] = {}
        done: list[dict] = []
        seq = 0
        key_seqs: dict[str, int] = {}
        max_rows = self.max_rows_per_file
        min_rows = self.min_rows_per_file or 0

        def finish(key: str) -> None:
            rel, writer, values = open_files.pop(key)
            writer.close()
            size = self.fs.fsspec.size(f"{self.staging}/{rel}")
            info = self.file_info(writer.state, values)
            done.append({"path": rel, "num_rows": writer.num_rows, "num_bytes": size, **info})

        try:
            for block in blocks:
                for key, values, part in self._split_partitions(block):
                    while part.num_rows:
                        current = open_files.get(key)
                        if current is not None:
                            cast = current[1].accepts(part)
                            if cast is None:
                                finish(key)
                                current = None
                            else:
                                part = cast
                        if current is None:
                            rel = key + self.file_name(task_index, seq, key_seqs.get(key, 0))
                            seq += 1
                            key_seqs[key] = key_seqs.get(key, 0) + 1
                            if key:
                                self.fs.arrow.create_dir(f"{self.staging}/{key}", recursive=True)
                            stream = self.fs.arrow.open_output_stream(
                                f"{self.staging}/{rel}", **self.open_stream_args
                            )
                            current = (rel, _FileWriter(stream, part.schema, self), values)
                            open_files[key] = current
                        writer = current[1]
                        take = part
                        if max_rows is not None:
                            take = part.slice(0, max_rows - writer.num_rows)
                        writer.write(take)
                        part = part.slice(take.num_rows)
                        full = max_rows is not None and writer.num_rows >= max_rows
                        big = writer.nbytes >= self.target_file_size and writer.num_rows >= min_rows
                        if full or big:
                            finish(key)
            for key in list(open_files):
                finish(key)
        except BaseException:
            for _, writer, _ in open_files.values():
                writer.abort()
            raise
        return WriteResult(
            files=tuple(f"{self.path}/{f['path']}" for f in done),
            num_rows=sum(f["num_rows"] for f in done),
            num_bytes=sum(f["num_bytes"] for f in done),
            extra={"manifest": done},
        )

    def file_prefix(self) -> str:
        """Stem of the file names: files appended to a non-empty directory carry
        the write id, so they never collide with files already there."""
        return "part" if self.mode != "append" or self._dest_empty else f"part-{self.write_id}"

    def file_name(self, task_index: int, seq: int, key_seq: int) -> str:
        """The name of a task's ``seq``-th file (its ``key_seq``-th in its
        partition directory): ``part-TTTTT-SSSS.ext``, or the ``filename_provider``'s
        name for the task, ``_NNNNNN`` added before the extension from the second
        file of a partition on (Ray Data's row-file suffix)."""
        if self.filename_provider is None:
            return f"{self.file_prefix()}-{task_index:05d}-{seq:04d}.{self.extension}"
        return provided_name(self.filename_provider, self.write_id, task_index, key_seq)

    def _split_partitions(self, table: pa.Table) -> Iterable[tuple[str, dict[str, Any], pa.Table]]:
        """``(hive directory prefix, partition values, rows)`` per partition
        value combination."""
        if not self.partition_cols:
            yield "", {}, table
            return
        missing = [c for c in self.partition_cols if c not in table.column_names]
        if missing:
            raise KeyError(
                f"{self.where}: partition_cols {missing} are not columns of the data "
                f"({table.column_names})"
            )
        if not table.num_rows:
            return
        table = table.take(
            pc.sort_indices(table, sort_keys=[(c, "ascending") for c in self.partition_cols])
        )
        n = table.num_rows
        change = np.zeros(n, dtype=bool)
        change[0] = True
        for c in self.partition_cols:
            col = table.column(c)
            prev, nxt = col.slice(0, n - 1), col.slice(1)
            differs = pc.fill_null(pc.not_equal(prev, nxt), True)
            both_null = pc.and_(pc.is_null(prev), pc.is_null(nxt))
            change[1:] |= np.asarray(pc.and_not(differs, both_null))
        starts = np.flatnonzero(change).tolist() + [n]
        data = table.drop_columns(self.partition_cols)
        for lo, hi in zip(starts[:-1], starts[1:]):
            values = {c: table.column(c)[lo].as_py() for c in self.partition_cols}
            dirs = "".join(f"{c}={_partition_text(v)}/" for c, v in values.items())
            yield dirs, values, data.slice(lo, hi - lo)

    # -- format hooks ----------------------------------------------------------------

    def open_file(self, stream: Any, schema: pa.Schema) -> Any:
        """Per-file state of the format (e.g. a ``ParquetWriter`` on ``stream``)."""
        return None

    def write_table(self, state: Any, stream: Any, table: pa.Table) -> None:
        raise NotImplementedError

    def close_file(self, state: Any, stream: Any) -> None:
        """Flush what the format buffers before the stream closes."""

    def buffered_bytes(self, state: Any) -> int:
        """Bytes held in memory for the file, not yet in the stream."""
        return 0

    def file_info(self, state: Any, partition: dict[str, Any]) -> dict[str, Any]:
        """Extra fields of a closed file's manifest entry (e.g. column statistics
        for a table log); ``partition`` holds its partition values."""
        return {}


_PROVIDER_METHODS = ("get_filename_for_task", "get_filename_for_block")


def provided_name(provider: Any, write_id: str, task_index: int, index: int) -> str:
    """A ``FilenameProvider``'s name for file ``index`` of a write task. A Ray
    Data provider that overrides only the deprecated ``get_filename_for_block``
    is asked that (block index = ``index``); otherwise ``get_filename_for_task``,
    with ``_{index:06}`` added before the extension from the second file on."""
    overrides_block = any(
        "get_filename_for_block" in vars(cls) and cls.__name__ != "FilenameProvider"
        for cls in type(provider).__mro__
    )
    overrides_task = any(
        "get_filename_for_task" in vars(cls) and cls.__name__ != "FilenameProvider"
        for cls in type(provider).__mro__
    )
    if overrides_block and not overrides_task:
        name = provider.get_filename_for_block(None, write_id, task_index, index)
    else:
        name = provider.get_filename_for_task(write_id, task_index)
        if index:
            stem, dot, ext = name.rpartition(".")
            name = f"{stem}_{index:06d}.{ext}" if dot else f"{name}_{index:06d}"
    if not isinstance(name, str) or not name.strip("/") or ".." in name.split("/"):
        raise ValueError(
            f"filename_provider: bad file name {name!r} for task {task_index}: give a "
            "non-empty name inside the output directory (no '..')"
        )
    return name.lstrip("/")


class FilenameProvider:
    """Names the files a write makes (Ray Data's ``FilenameProvider``): override
    ``get_filename_for_task``. The default is ``{dataset_uuid}_{write_uuid}_{task:06}.{file_format}``.
    A task writing several files (size or ``max_rows_per_file`` rollover,
    partitions) gets ``_000001``, ``_000002``... before the extension from its
    second file in a directory on; ``write_images`` names a row's file
    ``{task name stem}_{block:06}_{row:06}.{format}``.

    >>> FilenameProvider(file_format="csv").get_filename_for_task("w1", 3)
    'w1_000003.csv'
    """

    def __init__(self, dataset_uuid: str | None = None, file_format: str | None = None) -> None:
        self.dataset_uuid = dataset_uuid
        self.file_format = file_format

    def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
        name = f"{write_uuid}_{task_index:06}"
        if self.dataset_uuid is not None:
            name = f"{self.dataset_uuid}_{name}"
        return f"{name}.{self.file_format}" if self.file_format is not None else name


def _partition_text(value: Any) -> str:
    return _HIVE_NULL if value is None else urllib.parse.quote(str(value), safe="")


# Dictionary-encode a column only when a sample of it repeats values: on
# mostly distinct columns (ids, measurements, free text) the writer builds a
# dictionary it then abandons, which made writes ~3x costlier and files larger.
_DICT_SAMPLE_ROWS = 10_000
_DICT_MAX_DISTINCT = 0.5


def dictionary_columns(table: pa.Table) -> list[str]:
    """The columns of ``table`` worth dictionary-encoding in Parquet: those
    whose first ``_DICT_SAMPLE_ROWS`` values are at most half distinct.

    >>> dictionary_columns(pa.table({"k": ["a", "b"] * 50, "x": range(100)}))
    ['k']
    """
    chosen = []
    for name, column in zip(table.column_names, table.columns):
        sample = column.slice(0, _DICT_SAMPLE_ROWS)
        if pa.types.is_dictionary(column.type) or not len(sample):
            chosen.append(name)
            continue
        try:
            distinct = pc.count_distinct(sample, mode="all").as_py()
        except (pa.ArrowNotImplementedError, pa.ArrowTypeError):  # nested types
            chosen.append(name)
            continue
        if distinct <= _DICT_MAX_DISTINCT * len(sample):
            chosen.append(name)
    return chosen


class _ParquetFile:
    """A ``ParquetWriter`` and the rows waiting to fill its next row group: each
    ``write_table`` call ends a row group, so small blocks are buffered first.
    The writer opens with the first rows, which choose the dictionary columns
    (unless ``use_dictionary`` was given)."""

    def __init__(
        self, stream: Any, schema: pa.Schema, kwargs: dict, group_rows: int | None
    ) -> None:
        self._open = (stream, schema, kwargs)
        self._writer: pq.ParquetWriter | None = None
        self.group_rows = group_rows
        self.pending: list[pa.Table] = []
        self.rows = 0
        self.nbytes = 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        # Exact (not table_nbytes): a partition's slices would count whole
        # buffers, and the file's rollover goes by these bytes.
        self.nbytes += table.nbytes
        if self.group_rows is not None:
            if self.rows >= self.group_rows:
                whole = pa.concat_tables(self.pending)
                cut = self.rows - self.rows % self.group_rows
                self.writer(whole).write_table(whole.slice(0, cut), row_group_size=self.group_rows)
                rest = whole.slice(cut)
                self.pending, self.rows, self.nbytes = [rest], rest.num_rows, rest.nbytes
        elif self.nbytes >= ROW_GROUP_TARGET_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            whole = pa.concat_tables(self.pending)
            rows = self.group_rows or max(
                1, ROW_GROUP_TARGET_BYTES * whole.num_rows // max(1, whole.nbytes)
            )
            self.writer(whole).write_table(whole, row_group_size=rows)
        self.pending, self.rows, self.nbytes = [], 0, 0

    def writer(self, first: pa.Table | None = None) -> pq.ParquetWriter:
        """The file's writer, opened on ``first`` (the first rows written)."""
        if self._writer is None:
            stream, schema, kwargs = self._open
            if "use_dictionary" not in kwargs and first is not None:
                kwargs = {**kwargs, "use_dictionary": dictionary_columns(first)}
            self._writer = pq.ParquetWriter(stream, schema, **kwargs)
        return self._writer

    def close(self) -> None:
        self.flush()
        self.writer().close()


class ParquetDatasink(FileDatasink):
    """Parquet files; ``format_kwargs`` go to ``pyarrow.parquet.ParquetWriter``
    (``compression``, ``use_dictionary``, ...), ``row_group_size`` (rows) fixes
    the row groups' size; by default row groups hold about 128 MiB of data and
    only the columns whose values repeat are dictionary-encoded."""

    where = "write_parquet"
    writes_without_gil = True
    extension = "parquet"

    def open_file(self, stream: Any, schema: pa.Schema) -> _ParquetFile:
        kwargs = {k: v for k, v in self.format_kwargs.items() if k != "row_group_size"}
        return _ParquetFile(stream, schema, kwargs, self.format_kwargs.get("row_group_size"))

    def write_table(self, state: _ParquetFile, stream: Any, table: pa.Table) -> None:
        state.add(table)

    def buffered_bytes(self, state: _ParquetFile) -> int:
        return state.nbytes

    def close_file(self, state: _ParquetFile, stream: Any) -> None:
        state.close()


class CSVDatasink(FileDatasink):
    """CSV files with a header; ``format_kwargs`` go to ``pyarrow.csv.WriteOptions``."""

    where = "write_csv"
    writes_without_gil = True
    extension = "csv"

    def open_file(self, stream: Any, schema: pa.Schema) -> pacsv.CSVWriter:
        return pacsv.CSVWriter(
            stream, schema, write_options=pacsv.WriteOptions(**self.format_kwargs)
        )

    def write_table(self, state: pacsv.CSVWriter, stream: Any, table: pa.Table) -> None:
        state.write_table(table)

    def close_file(self, state: pacsv.CSVWriter, stream: Any) -> None:
        state.close()


class ORCDatasink(FileDatasink):
    """ORC files; ``format_kwargs`` go to ``pyarrow.orc.ORCWriter`` (compression...)."""

    where = "write_orc"
    writes_without_gil = True
    extension = "orc"

    def open_file(self, stream: Any, schema: pa.Schema) -> Any:
        import pyarrow.orc as orc

        return orc.ORCWriter(stream, **self.format_kwargs)

    def write_table(self, state: Any, stream: Any, table: pa.Table) -> None:
        state.write(table)

    def close_file(self, state: Any, stream: Any) -> None:
        state.close()


class JSONDatasink(FileDatasink):
    """JSON Lines files (one object per row); ``format_kwargs`` go to
    ``pandas.DataFrame.to_json``."""

    where = "write_json"
    extension = "json"

    def write_table(self, state: None, stream: Any, table: pa.Table) -> None:
        kwargs = {"date_format": "iso", **self.format_kwargs, "orient": "records", "lines": True}
        text = table_to_pandas(table).to_json(**kwargs)
        if text and not text.endswith("\n"):
            text += "\n"
        stream.write(text.encode())


class NumpyDatasink(FileDatasink):
    """``.npy`` files of one column (``column=``, optional when the data has one
    column); a file holds up to ``target_file_size`` bytes of rows."""

    where = "write_numpy"
    writes_without_gil = True
    extension = "npy"

    @property
    def column(self) -> str | None:
        return self.format_kwargs.get("column")

    def open_file(self, stream: Any, schema: pa.Schema) -> list[np.ndarray]:
        if self.column is None and len(schema.names) != 1:
            raise ValueError(
                f"{self.where}: the data has columns {schema.names}; pass column= to pick one"
            )
        if self.column is not None and self.column not in schema.names:
            raise KeyError(f"{self.where}: column {self.column!r} is not in {schema.names}")
        return []

    def write_table(self, state: list[np.ndarray], stream: Any, table: pa.Table) -> None:
        state.append(column_to_numpy(table.column(self.column or table.column_names[0])))

    def buffered_bytes(self, state: list[np.ndarray]) -> int:
        return sum(a.nbytes for a in state)

    def close_file(self, state: list[np.ndarray], stream: Any) -> None:
        buf = io.BytesIO()
        np.save(buf, np.concatenate(state), allow_pickle=False)
        stream.write(buf.getbuffer())
