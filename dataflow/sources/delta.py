"""Delta Lake tables (optional extra ``dataflow[deltalake]``): ``read_delta`` and
``write_delta``.

Reading: ``deltalake`` loads the table's log at a version (or a time); its add
actions list the live Parquet files with their partition values and column
statistics. Files whose partition values or min/max/null counts contradict the
filter are dropped before any is opened (each file's statistics become an
Arrow guarantee, the same simplification Arrow prunes row groups with); the
rest are read by ``ParquetDatasource.from_files``, so row-group pruning,
projection, task sizing and errors are read_parquet's.

Writing: workers stream their blocks into Parquet files straight in the table
directory (``ParquetDatasink``'s writer, partition directories and rollover),
named after the write id; a file is part of the table only once the log lists
it. The driver then commits every file in one transaction (a new table is
created by that commit). A failed write commits nothing and deletes the files
carrying its write id, so the table's version and files stay as they were.

>>> ds = read_delta("s3://bucket/events", version=3, columns=["id"], filter=col("day") == "x")  # doctest: +SKIP
>>> ds.write_delta("/tmp/events", mode="append", partition_by=["day"])  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import json
import math
import os
import posixpath
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from dataflow.errors import SourceError
from dataflow.sources.datasource import Datasource, ReadTask, WriteResult
from dataflow.sources.parquet import ParquetDatasource, conform, referenced_fields
from dataflow.sources.paths import FileEntry, resolve_filesystem
from dataflow.sources.sinks import ParquetDatasink

READ = "read_delta"
WRITE = "write_delta"
# Longer strings may be stored truncated in the statistics: no upper bound from them.
_MAX_STRING_STAT = 32
# Log paths are URI references: RFC 3986 path characters stay as they are.
_URI_PATH_SAFE = "/:@!$&'()*+,;="


def _deltalake(where: str) -> Any:
    try:
        import deltalake
    except ImportError as e:
        raise ImportError(
            f"{where} needs the deltalake package: pip install 'dataflow[deltalake]'"
        ) from e
    return deltalake


def _load_table(where: str, path: str, version: Any, storage_options: dict[str, str] | None) -> Any:
    """The ``DeltaTable`` at ``version`` (an int, a datetime or an ISO string);
    a missing table or version is a ``SourceError`` naming the path (never the
    storage options, which may hold credentials)."""
    deltalake = _deltalake(where)
    try:
        table = deltalake.DeltaTable(path, storage_options=storage_options)
    except Exception as e:
        raise SourceError(
            f"{where}: no readable Delta table at {path!r} ({type(e).__name__}: "
            f"{str(e).splitlines()[0]}); check the path and storage_options",
            path=path,
        ) from e
    if version is None:
        return table
    latest = table.version()
    try:
        table.load_as_version(version)
    except Exception as e:
        raise SourceError(
            f"{where}: {path!r} has no version {version!r} (the latest is {latest}); "
            "pass an existing version number, or a time after the table was created",
            path=path,
        ) from e
    return table


def _check_readable(table: Any, path: str) -> None:
    """Fail clearly on what changes how a data file is read and read_delta does
    not apply: deletion vectors in use, column mapping (physical column names)."""
    features = set(table.protocol().reader_features or ())
    problem = None
    if "deletionVectors" in features and pa.table(table.deletion_vectors()).num_rows:
        problem = (
            "has files with deletion vectors (rows deleted without rewriting the file); "
            "rewrite them first (DeltaTable.optimize.compact() or Spark's REORG TABLE ... "
            "APPLY (PURGE))"
        )
    mapping = (table.metadata().configuration or {}).get("delta.columnMapping.mode", "none")
    if mapping not in (None, "none"):
        problem = f"uses column mapping (delta.columnMapping.mode={mapping!r})"
    if problem:
        raise SourceError(
            f"{READ}: {path!r} {problem}, which read_delta does not apply; or read it with "
            "deltalake (DeltaTable(...).to_pyarrow_table()) and df.from_arrow",
            path=path,
        )


# -- reading ---------------------------------------------------------------------------


class DeltaDatasource(Datasource):
    """A Delta table at one version: the live files from its log, pruned by
    partition values and statistics, read as Parquet."""

    reads_without_gil = True
    supports_projection_pushdown = True
    supports_predicate_pushdown = True
    supports_limit_pushdown = True

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        version: int | str | datetime.datetime | None = None,
        storage_options: dict[str, str] | None = None,
        filesystem: Any = None,
        include_paths: bool = False,
    ) -> None:
        path = os.fspath(path)
        if not isinstance(path, str):
            raise TypeError(f"{READ}: path must be one table's path or URI, got {type(path)}")
        self.path = path
        self.include_paths = include_paths
        self.fs, (root,) = resolve_filesystem([path], filesystem, READ)
        self._root = root.rstrip("/")
        table = _load_table(READ, path, version, storage_options)
        self.version: int = table.version()
        _check_readable(table, path)
        self._schema = pa.schema(table.schema().to_arrow())
        self._partition_cols: list[str] = list(table.metadata().partition_columns)
        self._actions = pa.table(table.get_add_actions(flatten=True))
        order = pc.sort_indices(
            self._actions, [("modification_time", "ascending"), ("path", "ascending")]
        )
        self._actions = self._actions.take(order)
        self._pruned: dict[str, tuple[list[int], int, int]] = {}

    def get_name(self) -> str:
        return "delta"

    def schema(self) -> pa.Schema:
        if self.include_paths:
            return self._schema.append(pa.field("path", pa.string()))
        return self._schema

    def num_rows(self) -> int | None:
        counts = self._actions.column("num_records")
        if counts.null_count:
            return None
        return int(pc.sum(counts).as_py() or 0)

    # -- pruning ---------------------------------------------------------------------

    def _files(self, filter: pc.Expression | None) -> tuple[list[int], int, int]:
        """Indices of the add actions the filter may match, and how many files
        the partition values and the statistics pruned (cached per filter)."""
        total = self._actions.num_rows
        if filter is None:
            return list(range(total)), 0, 0
        key = str(filter)
        if key not in self._pruned:
            try:
                names = referenced_fields(filter, self._schema)
            except Exception:
                names = set()
            parts = [c for c in self._partition_cols if c in names]
            stats = [c for c in names if c not in self._partition_cols]
            by_partition = self._match(filter, parts, [], range(total))
            # Both together: an | across a partition column and another prunes more.
            kept = self._match(filter, parts, stats, by_partition) if stats else by_partition
            self._pruned[key] = (kept, total - len(by_partition), len(by_partition) - len(kept))
        return self._pruned[key]

    def _match(
        self, filter: pc.Expression, parts: list[str], stats: list[str], rows: Iterable[int]
    ) -> list[int]:
        """The rows of ``rows`` whose guarantees (partition values ``parts``,
        statistics of ``stats``) leave ``filter`` satisfiable."""
        rows = list(rows)
        if not parts and not stats:
            return rows
        actions = self._actions.take(rows)
        guarantees = [pc.scalar(True)] * len(rows)
        for name in parts:
            values = actions.column(f"partition.{name}")
            for i, v in enumerate(values):
                term = pc.field(name).is_null() if not v.is_valid else pc.field(name) == v
                guarantees[i] = guarantees[i] & term
        for name in stats:
            for i, term in enumerate(_stats_guarantees(actions, name, self._schema.field(name))):
                if term is not None:
                    guarantees[i] = guarantees[i] & term
        fmt = pads.ParquetFileFormat()
        fragments = [
            fmt.make_fragment(f"{i}", self.fs.arrow, partition_expression=g)
            for i, g in enumerate(guarantees)
        ]
        dataset = pads.FileSystemDataset(fragments, self._schema, fmt)
        try:
            kept = {int(f.path) for f in dataset.get_fragments(filter=filter)}
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return rows  # a filter Arrow cannot simplify prunes nothing
        return [r for i, r in enumerate(rows) if i in kept]

    def _entries(self, rows: Sequence[int]) -> list[FileEntry]:
        actions = self._actions.take(list(rows))
        paths = actions.column("path").to_pylist()
        sizes = actions.column("size_bytes").to_pylist()
        parts = {c: actions.column(f"partition.{c}").to_pylist() for c in self._partition_cols}
        entries = []
        for i, (rel, size) in enumerate(zip(paths, sizes)):
            entries.append(
                FileEntry(
                    self._file_path(rel),
                    int(size),
                    tuple((c, values[i]) for c, values in parts.items()),
                )
            )
        return entries

    def _file_path(self, rel: str) -> str:
        """A log path (a URI reference, percent-encoded) as the filesystem names it."""
        if "://" in rel:  # an absolute URI (shallow clones)
            return self.fs.fsspec._strip_protocol(urllib.parse.unquote(rel))
        return f"{self._root}/{urllib.parse.unquote(rel)}"

    # -- planning --------------------------------------------------------------------

    def iter_read_tasks(
        self,
        parallelism: int,
        *,
        columns: Sequence[str] | None = None,
        filter: pc.Expression | None = None,
        limit: int | None = None,
    ) -> Iterator[ReadTask]:
        rows, _, _ = self._files(filter)
        if not rows:
            return
        parquet = ParquetDatasource.from_files(
            self.fs,
            self._entries(rows),
            table=self.path,
            schema=self._schema,
            partition_schema=pa.schema([self._schema.field(c) for c in self._partition_cols]),
            where=READ,
            include_paths=self.include_paths,
        )
        yield from parquet.iter_read_tasks(parallelism, columns=columns, filter=filter, limit=limit)

    def get_read_tasks(self, parallelism: int, **pushdown: Any) -> list[ReadTask]:
        return list(self.iter_read_tasks(parallelism, **pushdown))

    def explain_read(self, **pushdown: Any) -> str:
        rows, by_partition, by_stats = self._files(pushdown.get("filter"))
        total = self._actions.num_rows
        text = (
            f"version {self.version}, files {len(rows)} of {total} "
            f"({by_partition} pruned by partition values, {by_stats} by statistics)"
        )
        if "columns" in pushdown:
            text += f", columns [{', '.join(pushdown['columns'])}]"
        if pushdown.get("filter") is not None:
            text += f", filter {pushdown['filter']}"
        return text


def _stats_guarantees(actions: pa.Table, name: str, field: pa.Field) -> list[pc.Expression | None]:
    """Per file, what its statistics guarantee about column ``name``:
    ``min <= name <= max`` (or null), ``is_null`` when every value is null,
    None when nothing is known."""
    n = actions.num_rows
    names = actions.column_names
    if pa.types.is_nested(field.type) or f"min.{name}" not in names:
        return [None] * n
    lows = actions.column(f"min.{name}")
    highs = actions.column(f"max.{name}")
    if pa.types.is_timestamp(highs.type):
        # The log keeps milliseconds: a max may be truncated below the true one.
        highs = pc.add(highs, pa.scalar(1000, pa.duration("us")).cast(pa.duration(highs.type.unit)))
    if pa.types.is_string(highs.type) or pa.types.is_large_string(highs.type):
        highs = pc.if_else(
            pc.less(pc.utf8_length(highs), _MAX_STRING_STAT), highs, pa.nulls(1, highs.type)[0]
        )
    nulls = (
        actions.column(f"null_count.{name}").to_pylist()
        if f"null_count.{name}" in names
        else [None] * n
    )
    records = actions.column("num_records").to_pylist()
    # NaN counts as null for is_null(): a float column may always hold "nulls".
    maybe_nan = pa.types.is_floating(field.type)
    out: list[pc.Expression | None] = []
    for i in range(n):
        lo, hi, nc = lows[i], highs[i], nulls[i]
        if nc is not None and records[i] is not None and nc == records[i] and not maybe_nan:
            out.append(pc.field(name).is_null())
            continue
        term = None
        if lo.is_valid:
            term = pc.field(name) >= lo
        if hi.is_valid:
            upper = pc.field(name) <= hi
            term = upper if term is None else term & upper
        if term is not None and (nc is None or nc > 0 or maybe_nan):
            term = term | pc.field(name).is_null()
        out.append(term)
    return out


# -- writing ---------------------------------------------------------------------------


def delta_type(t: pa.DataType, name: str) -> pa.DataType:
    """The Arrow type Delta stores ``t`` as (unsigned ints widen, nanoseconds
    become microseconds, large/view/dictionary/fixed-size types their plain
    form, tensors their lists); a type Delta has no form for is an error."""
    if isinstance(t, pa.BaseExtensionType):
        return delta_type(t.storage_type, name)
    if pa.types.is_unsigned_integer(t):
        widths = {8: pa.int16(), 16: pa.int32(), 32: pa.int64(), 64: pa.int64()}
        return widths[t.bit_width]
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if (
        pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
    ):
        return pa.binary()
    if pa.types.is_dictionary(t):
        return delta_type(t.value_type, name)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return pa.list_(pa.field("element", delta_type(t.value_type, name)))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, delta_type(f.type, f"{name}.{f.name}")) for f in t])
    if pa.types.is_map(t):
        return pa.map_(delta_type(t.key_type, name), delta_type(t.item_type, name))
    if pa.types.is_time(t) or pa.types.is_duration(t) or pa.types.is_interval(t):
        raise TypeError(
            f"{WRITE}: column {name!r} has type {t}, which Delta Lake cannot store; "
            "cast it (e.g. to int64) first"
        )
    return t


def _stat_json(value: Any, upper: bool) -> Any:
    """A Parquet statistic as Delta writes it in the log, or None to leave it out."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value if len(value) < _MAX_STRING_STAT else None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            return None  # timestamp_ntz statistics: left out
        value = value.astimezone(datetime.timezone.utc)
        if upper and value.microsecond % 1000:  # milliseconds in the log: round a max up
            value += datetime.timedelta(microseconds=1000 - value.microsecond % 1000)
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    if isinstance(value, datetime.date):
        return value.isoformat()
    return None


def _file_stats(metadata: Any, num_rows: int) -> str:
    """The ``stats`` of an add action from a written file's footer: row count,
    and per top-level column min, max and null count over its row groups."""
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    unknown: set[str] = set()
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            name = column.path_in_schema
            if "." in name:
                continue  # nested: no statistics
            st = column.statistics
            if st is None:
                unknown.add(name)
                continue
            if st.has_null_count:
                nulls[name] = nulls.get(name, 0) + st.null_count
            if not st.has_min_max:
                if not (st.has_null_count and st.null_count == group.num_rows):
                    unknown.add(name)
                continue
            if name not in lows or st.min < lows[name]:
                lows[name] = st.min
            if name not in highs or st.max > highs[name]:
                highs[name] = st.max
    mins = {k: _stat_json(v, False) for k, v in lows.items() if k not in unknown}
    maxs = {k: _stat_json(v, True) for k, v in highs.items() if k not in unknown}
    return json.dumps(
        {
            "numRecords": num_rows,
            "minValues": {k: v for k, v in mins.items() if v is not None},
            "maxValues": {k: v for k, v in maxs.items() if v is not None},
            "nullCount": nulls,
        }
    )


def _partition_string(value: Any) -> str | None:
    """A partition value as the Delta log spells it."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, bytes):
        raise TypeError(f"{WRITE}: binary partition columns are not supported")
    return str(value)


class DeltaDatasink(ParquetDatasink):
    """Parquet files in the table directory and one commit in the Delta log.

    ``mode``: "append" (default; creates the table if there is none), "overwrite"
    (replaces the table's rows in a new version; older versions stay readable),
    "error" (fails if the table exists), "ignore" (writes nothing if it exists).
    """

    where = WRITE
    modes = ("append", "overwrite", "error", "ignore")

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        mode: str = "append",
        partition_by: Sequence[str] | None = None,
        storage_options: dict[str, str] | None = None,
        filesystem: Any = None,
        name: str | None = None,
        description: str | None = None,
        **parquet_kwargs: Any,
    ) -> None:
        mode = getattr(mode, "value", mode)  # Ray Data's SaveMode enum works too
        if isinstance(partition_by, str):
            partition_by = [partition_by]
        super().__init__(
            path, filesystem=filesystem, partition_cols=partition_by, mode=mode, **parquet_kwargs
        )
        self.uri = os.fspath(path).rstrip("/")
        self.storage_options = storage_options
        self.name = name
        self.description = description
        self._exists = False
        self._skip = False
        # Appends conform every block to the table's schema (None: a new schema).
        self._table_schema: pa.Schema | None = None

    def __repr__(self) -> str:  # storage_options may hold credentials: never shown
        return f"DeltaDatasink({self.uri!r}, mode={self.mode!r})"

    @property
    def staging(self) -> str:
        # Files go straight into the table: the log, not the directory, says what is in it.
        return self.path

    def file_prefix(self) -> str:
        return f"part-{self.write_id}"

    # -- driver ------------------------------------------------------------------------

    def on_write_start(self) -> None:
        deltalake = _deltalake(WRITE)
        self._exists = bool(
            deltalake.DeltaTable.is_deltatable(self.uri, storage_options=self.storage_options)
        )
        if self._exists:
            if self.mode == "error":
                raise FileExistsError(
                    f"{WRITE}: a Delta table exists at {self.uri!r}; pass mode='append' to add "
                    "rows or mode='overwrite' to replace them"
                )
            self._skip = self.mode == "ignore"
            table = _load_table(WRITE, self.uri, None, self.storage_options)
            existing = list(table.metadata().partition_columns)
            if not self.partition_cols:
                self.partition_cols = existing
            elif self.partition_cols != existing:
                raise ValueError(
                    f"{WRITE}: {self.uri!r} is partitioned by {existing}, not by "
                    f"{self.partition_cols}; pass partition_by={existing} (or leave it out)"
                )
            if self.mode == "append":
                self._table_schema = pa.schema(table.schema().to_arrow())
        self._dest_existed = self.fs.fsspec.exists(self.path)
        self.write_id = os.urandom(6).hex()
        if not self._skip:
            self.fs.fsspec.makedirs(self.path, exist_ok=True)

    def on_write_complete(self, results: list[WriteResult]) -> int | None:
        """Commit every written file in one transaction; the new version."""
        if self._skip:
            return None
        deltalake = _deltalake(WRITE)
        from deltalake.transaction import AddAction, create_table_with_add_actions

        files = [f for r in results for f in r.extra.get("manifest", ())]
        schemas = [r.extra["schema"] for r in results if r.extra.get("schema") is not None]
        now = int(time.time() * 1000)
        actions = [
            AddAction(
                path=urllib.parse.quote(f["path"], safe=_URI_PATH_SAFE),
                size=f["num_bytes"],
                partition_values=f["partition_values"],
                modification_time=now,
                data_change=True,
                stats=f["stats"],
            )
            for f in files
        ]
        schema = self._table_schema
        if schema is None:
            if not schemas:
                if not self._exists:
                    raise ValueError(
                        f"{WRITE}: the dataset has no rows and no schema: nothing to create "
                        f"a table at {self.uri!r} from"
                    )
                schema = pa.schema(
                    _load_table(WRITE, self.uri, None, self.storage_options).schema().to_arrow()
                )
            else:
                schema = pa.unify_schemas(schemas, promote_options="permissive")
        try:
            if not self._exists:
                create_table_with_add_actions(
                    self.uri,
                    deltalake.Schema.from_arrow(schema),
                    actions,
                    mode="error",
                    partition_by=self.partition_cols or None,
                    name=self.name,
                    description=self.description,
                    storage_options=self.storage_options,
                )
            else:
                table = deltalake.DeltaTable(self.uri, storage_options=self.storage_options)
                table.create_write_transaction(
                    actions, mode=self.mode, schema=schema, partition_by=self.partition_cols or None
                )
        except BaseException as e:
            self.on_write_failed(e)
            raise
        return deltalake.DeltaTable(self.uri, storage_options=self.storage_options).version()

    def on_write_failed(self, error: BaseException) -> None:
        """Delete every file this write put in the table directory (the log never
        listed them) and the directories it left empty."""
        if not self.write_id or self._skip:
            return
        fs = self.fs.fsspec
        if not fs.exists(self.path):
            return
        marker = f"part-{self.write_id}-"
        found = fs.find(self.path, withdirs=True, detail=True)
        for path, info in sorted(found.items(), key=lambda kv: -len(kv[0])):
            rel = path[len(self.path) :].lstrip("/")
            if not rel or rel.startswith("_delta_log"):
                continue
            if info.get("type") != "directory":
                if posixpath.basename(path).startswith(marker):
                    fs.rm(path)
            elif not fs.ls(path, detail=False):
                fs.rm(path, recursive=True)
        if not self._dest_existed and not fs.ls(self.path, detail=False):
            fs.rm(self.path, recursive=True)

    # -- worker ------------------------------------------------------------------------

    def write(self, blocks: Iterable[pa.Table], task_index: int) -> WriteResult:
        if self._skip:
            return WriteResult()
        seen: list[pa.Schema] = []

        def prepared() -> Iterator[pa.Table]:
            for block in blocks:
                block = self._prepare(block)
                if not seen:
                    seen.append(block.schema)
                yield block

        result = super().write(prepared(), task_index)
        extra = {**result.extra, "schema": seen[0] if seen else None}
        return WriteResult(result.files, result.num_rows, result.num_bytes, extra)

    def _prepare(self, block: pa.Table) -> pa.Table:
        """``block`` in the types Delta stores (an append: the table's schema)."""
        for i, f in enumerate(block.schema):
            if isinstance(f.type, pa.BaseExtensionType):  # tensors: their fixed-size lists
                storage = pa.chunked_array(
                    [c.storage for c in block.column(i).chunks], f.type.storage_type
                )
                block = block.set_column(i, pa.field(f.name, f.type.storage_type), storage)
        if self._table_schema is None:
            schema = pa.schema(
                [pa.field(f.name, delta_type(f.type, f.name), f.nullable) for f in block.schema]
            )
            return conform(block, schema)
        extra = [c for c in block.column_names if c not in self._table_schema.names]
        if extra:
            raise ValueError(
                f"{WRITE}: columns {extra} are not in the Delta table {self.uri!r} "
                f"({self._table_schema.names}); drop them, or add them to the table first "
                "(DeltaTable.alter.add_columns), or write with mode='overwrite'"
            )
        return conform(block, self._table_schema)

    def file_info(self, state: Any, partition: dict[str, Any]) -> dict[str, Any]:
        metadata = state.writer().writer.metadata
        return {
            "stats": _file_stats(metadata, metadata.num_rows),
            "partition_values": {k: _partition_string(v) for k, v in partition.items()},
        }
