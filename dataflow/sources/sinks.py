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
MODES = ("error", "overwrite", "append")
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
        **format_kwargs: Any,
    ) -> None:
        if mode not in self.modes:
            raise ValueError(f"{self.where}: mode must be one of {self.modes}, got {mode!r}")
        self.target_file_size = int(format_kwargs.pop("target_file_size", DEFAULT_TARGET_FILE_SIZE))
        if self.target_file_size <= 0:
            raise ValueError(f"{self.where}: target_file_size must be > 0 bytes")
        self.fs, (self.path,) = resolve_filesystem([os.fspath(path)], filesystem, self.where)
        self.path = self.path.rstrip("/") or "/"
        self.partition_cols = list(partition_cols or [])
        self.mode = mode
        self.format_kwargs = format_kwargs
        self.write_id = ""
        self._dest_existed = True

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
        if self.mode == "error" and self._dest_existed and fs.ls(self.path, detail=False):
            raise FileExistsError(
                f"{self.where}: {self.path!r} already exists and is not empty; pass "
                "mode='overwrite' to replace it or mode='append' to add files to it"
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
        prefix = self.file_prefix()
        open_files: dict[str, tuple[str, _FileWriter, dict[str, Any]]] = {}
        done: list[dict] = []
        seq = 0

        def finish(key: str) -> None:
            rel, writer, values = open_files.pop(key)
            writer.close()
            size = self.fs.fsspec.size(f"{self.staging}/{rel}")
            info = self.file_info(writer.state, values)
            done.append({"path": rel, "num_rows": writer.num_rows, "num_bytes": size, **info})

        try:
            for block in blocks:
                for key, values, part in self._split_partitions(block):
                    if not part.num_rows:
                        continue
                    current = open_files.get(key)
                    if current is not None:
                        cast = current[1].accepts(part)
                        if cast is None:
                            finish(key)
                            current = None
                        else:
                            part = cast
                    if current is None:
                        rel = f"{key}{prefix}-{task_index:05d}-{seq:04d}.{self.extension}"
                        seq += 1
                        if key:
                            self.fs.arrow.create_dir(f"{self.staging}/{key}", recursive=True)
                        stream = self.fs.arrow.open_output_stream(f"{self.staging}/{rel}")
                        current = (rel, _FileWriter(stream, part.schema, self), values)
                        open_files[key] = current
                    current[1].write(part)
                    if current[1].nbytes >= self.target_file_size:
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
        """Stem of the file names: appended files carry the write id, so they
        never collide with files already there."""
        return "part" if self.mode != "append" else f"part-{self.write_id}"

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
