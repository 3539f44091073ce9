"""Apache Iceberg tables (optional extra ``dataflow[iceberg]``, pyiceberg):
``read_iceberg`` and ``write_iceberg``.

Reading: the table is loaded from its catalog (``catalog_kwargs`` go to
``pyiceberg.catalog.load_catalog``); pyiceberg's scan planning prunes the data
files with the row filter against partition values and column metrics in the
manifests, then the planned files are read in parallel tasks by pyiceberg's
``ArrowScan`` (field-id projection, schema evolution, position deletes). A
filter the optimizer pushes down is translated into an Iceberg expression
where it can be (comparisons, ``is_in``, ``is_null``, ``&``, ``|``, ``~``);
what cannot is applied to the rows after reading, so results are exact.

Writing: each worker writes Parquet data files with pyiceberg's writer (field
ids, metrics, partition layout), named after the write's id; the driver adds
them all in one commit (``mode="overwrite"``: the same commit deletes the old
rows). A failed write commits nothing and deletes the files with its id.

>>> ds = read_iceberg("db.events", catalog_kwargs={"name": "default", "type": "sql",
...     "uri": "sqlite:////tmp/cat.db", "warehouse": "file:///tmp/wh"},
...     row_filter="day = '2024-01-01'", selected_fields=("id",))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import itertools
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataflow.context import DataContext
from dataflow.errors import SourceError
from dataflow.expressions import (
    BinaryExpr,
    ColumnExpr,
    Expr,
    IsInExpr,
    LiteralExpr,
    UnaryExpr,
)
from dataflow.sources.datasource import BlockMetadata, Datasink, Datasource, ReadTask, WriteResult
from dataflow.sources.file_based import batches_to_blocks, group_by_size, task_target_bytes
from dataflow.sources.parquet import conform

READ = "read_iceberg"
WRITE = "write_iceberg"
# In-memory bytes per byte of compressed Parquet, to size read tasks from file sizes.
_EXPANSION = 4.0
_SECRET_KEY = re.compile(r"secret|password|token|key|credential|session|uri", re.IGNORECASE)
_URL_USERINFO = re.compile(r"://[^/@\s]+@")
_WRITE_BUFFER_BYTES = 128 * 1024 * 1024
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def _pyiceberg(where: str) -> Any:
    try:
        import pyiceberg
    except ImportError as e:
        raise ImportError(
            f"{where} needs the pyiceberg package: pip install 'dataflow[iceberg]'"
        ) from e
    return pyiceberg


def _redact(text: str, catalog_kwargs: dict[str, Any]) -> str:
    """``text`` without the catalog's secrets (keys, tokens, passwords in URIs)."""
    for key, value in catalog_kwargs.items():
        if isinstance(value, str) and len(value) >= 4 and _SECRET_KEY.search(key):
            text = text.replace(value, "***")
    return _URL_USERINFO.sub("://***@", text)


def load_table(where: str, identifier: str, catalog_kwargs: dict[str, Any] | None) -> Any:
    """The pyiceberg ``Table`` named ``identifier`` in the catalog that
    ``catalog_kwargs`` describe (its ``name``, default "default", and the
    properties of ``load_catalog``); failures name the table, never a secret."""
    _pyiceberg(where)
    from pyiceberg.catalog import load_catalog
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    kwargs = dict(catalog_kwargs or {})
    name = kwargs.pop("name", "default")
    try:
        catalog = load_catalog(name, **kwargs)
        return catalog.load_table(identifier)
    except (NoSuchTableError, NoSuchNamespaceError) as e:
        raise SourceError(
            f"{where}: no Iceberg table {identifier!r} in catalog {name!r}; check the "
            "identifier (namespace.table) and catalog_kwargs",
            path=identifier,
        ) from e
    except Exception as e:
        message = _redact(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", kwargs)
        raise SourceError(
            f"{where}: cannot load Iceberg table {identifier!r} from catalog {name!r} "
            f"({message}); check catalog_kwargs",
            path=identifier,
        ) from None


# -- filters -----------------------------------------------------------------------------


def to_iceberg(expr: Expr, schema: Any) -> tuple[Any, bool] | None:
    """``expr`` as an Iceberg ``BooleanExpression`` and whether it is exact; a
    superset of the rows (inexact) where part of an ``&`` cannot be translated;
    None when nothing can be."""
    from pyiceberg import expressions as ice
    from pyiceberg.types import DoubleType, FloatType

    def column(e: Expr) -> str | None:
        if not isinstance(e, ColumnExpr):
            return None
        try:
            schema.find_field(e.name, case_sensitive=True)
        except ValueError:
            return None
        return e.name

    def floating(name: str) -> bool:
        return isinstance(schema.find_type(name), (FloatType, DoubleType))

    if isinstance(expr, BinaryExpr):
        if expr.op in ("&", "|"):
            left, right = to_iceberg(expr.left, schema), to_iceberg(expr.right, schema)
            if expr.op == "&":
                if left is None or right is None:
                    one = left or right
                    return None if one is None else (one[0], False)
                return ice.And(left[0], right[0]), left[1] and right[1]
            if left is None or right is None:
                return None
            return ice.Or(left[0], right[0]), left[1] and right[1]
        if expr.op in _FLIP:
            op, name, value = expr.op, column(expr.left), expr.right
            if name is None:
                op, name, value = _FLIP[expr.op], column(expr.right), expr.left
            if name is None or not isinstance(value, LiteralExpr) or value.value is None:
                return None
            cls = {
                "<": ice.LessThan,
                "<=": ice.LessThanOrEqual,
                ">": ice.GreaterThan,
                ">=": ice.GreaterThanOrEqual,
                "==": ice.EqualTo,
                "!=": ice.NotEqualTo,
            }[op]
            return cls(name, value.value), True
        return None
    if isinstance(expr, UnaryExpr):
        if expr.op == "is_null":
            name = column(expr.operand)
            if name is None:
                return None
            if floating(name):  # is_null() counts NaN as null
                return ice.Or(ice.IsNull(name), ice.IsNaN(name)), True
            return ice.IsNull(name), True
        if expr.op == "~":
            inner = to_iceberg(expr.operand, schema)
            if inner is None or not inner[1]:
                return None  # negating a superset is not a superset
            return ice.Not(inner[0]), True
        return None
    if isinstance(expr, IsInExpr):
        name = column(expr.operand)
        if name is None or any(v is None for v in expr.values):
            return None
        return ice.In(name, set(expr.values)), True
    return None


# -- reading -----------------------------------------------------------------------------


class IcebergDatasource(Datasource):
    """An Iceberg table at a snapshot, planned by pyiceberg and read in parallel."""

    supports_projection_pushdown = True
    supports_predicate_pushdown = True
    supports_limit_pushdown = True
    filter_as_expr = True
    reads_without_gil = True

    def __init__(
        self,
        table_identifier: str,
        *,
        row_filter: Any = None,
        selected_fields: Sequence[str] = ("*",),
        snapshot_id: int | None = None,
        scan_kwargs: dict[str, Any] | None = None,
        catalog_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(table_identifier, str):
            raise TypeError(
                f"{READ}: table_identifier must be a string like 'db.table', "
                f"got {type(table_identifier).__name__}"
            )
        if isinstance(selected_fields, str):
            selected_fields = (selected_fields,)
        self.identifier = table_identifier
        self.selected_fields = tuple(selected_fields)
        self.scan_kwargs = dict(scan_kwargs or {})
        table = load_table(READ, table_identifier, catalog_kwargs)
        if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is None:
            known = [s.snapshot_id for s in table.metadata.snapshots]
            raise SourceError(
                f"{READ}: {table_identifier!r} has no snapshot {snapshot_id}; its snapshots: "
                f"{known}",
                path=table_identifier,
            )
        self.snapshot_id = snapshot_id
        self._table = table
        self._row_filter = self._user_filter(row_filter)
        self._plans: dict[tuple, list] = {}

    def __getstate__(self) -> dict:
        # The catalog (a database connection) stays in the driver; tasks carry
        # the table's metadata and file IO.
        return {**self.__dict__, "_table": None, "_plans": {}}

    def get_name(self) -> str:
        return "iceberg"

    def _user_filter(self, row_filter: Any) -> Any:
        from pyiceberg.expressions import AlwaysTrue, BooleanExpression
        from pyiceberg.expressions.parser import parse

        if row_filter is None:
            return AlwaysTrue()
        if isinstance(row_filter, BooleanExpression):
            return row_filter
        if isinstance(row_filter, str):
            try:
                return parse(row_filter)
            except Exception as e:
                raise SourceError(
                    f"{READ}: cannot parse row_filter {row_filter!r} ({e}); use Iceberg's "
                    "syntax, e.g. \"id < 10 and day = '2024-01-01'\", or a dataflow "
                    "expression",
                    path=self.identifier,
                ) from e
        if isinstance(row_filter, Expr):
            translated = to_iceberg(row_filter, self._table.schema())
            if translated is None or not translated[1]:
                raise SourceError(
                    f"{READ}: row_filter {row_filter} has no Iceberg form; pass the part "
                    "Iceberg can evaluate as row_filter and apply the rest with "
                    ".filter(expr=...)",
                    path=self.identifier,
                )
            return translated[0]
        raise TypeError(
            f"{READ}: row_filter must be a string, a pyiceberg expression or a dataflow "
            f"expression, got {type(row_filter).__name__}"
        )

    def _scan(self, columns: Sequence[str] | None, filter: Expr | None) -> tuple[Any, Any, bool]:
        """The pyiceberg scan for these pushdowns, and the filter's Iceberg form
        and whether that form is exact (else the rows are filtered again)."""
        from pyiceberg.expressions import And

        row_filter = self._row_filter
        exact = True
        if filter is not None:
            translated = to_iceberg(filter, self._table.schema())
            if translated is None:
                exact = False
            else:
                row_filter = And(row_filter, translated[0])
                exact = translated[1]
        selected = self.selected_fields
        if columns is not None:
            needed = list(columns)
            if not exact:
                needed += sorted(filter.columns() - set(needed))
            selected = tuple(needed)
        try:
            scan = self._table.scan(
                row_filter=row_filter,
                selected_fields=selected,
                snapshot_id=self.snapshot_id,
                **self.scan_kwargs,
            )
            scan.projection()
        except ValueError as e:
            raise SourceError(f"{READ}: {self.identifier!r}: {e}", path=self.identifier) from e
        return scan, row_filter, exact

    def _plan(self, scan: Any) -> list:
        key = (str(scan.row_filter), scan.selected_fields, scan.snapshot_id)
        if key not in self._plans:
            try:
                self._plans[key] = list(scan.plan_files())
            except Exception as e:
                raise SourceError(
                    f"{READ}: cannot plan the scan of {self.identifier!r}: {type(e).__name__}: {e}",
                    path=self.identifier,
                ) from e
        return self._plans[key]

    def schema(self) -> pa.Schema:
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        scan, _, _ = self._scan(None, None)
        return schema_to_pyarrow(scan.projection(), include_field_ids=False)

    def num_rows(self) -> int | None:
        from pyiceberg.expressions import AlwaysTrue

        if not isinstance(self._row_filter, AlwaysTrue):
            return None
        tasks = self._plan(self._scan(None, None)[0])
        if any(t.delete_files for t in tasks):
            return None
        return sum(t.file.record_count for t in tasks)

    def iter_read_tasks(
        self,
        parallelism: int,
        *,
        columns: Sequence[str] | None = None,
        filter: Expr | None = None,
        limit: int | None = None,
    ) -> Iterator[ReadTask]:
        from pyiceberg.expressions import AlwaysTrue

        ctx = DataContext.get_current()
        scan, row_filter, exact = self._scan(columns, filter)
        tasks = self._plan(scan)
        if not tasks:
            return
        post = None if exact or filter is None else filter.to_arrow()
        output = tuple(columns) if columns is not None and post is not None else None
        read = _IcebergRead(
            self.identifier,
            self._table.metadata,
            self._table.io,
            scan.projection(),
            row_filter,
            scan.case_sensitive,
            limit,
            post,
            output,
            ctx.target_max_block_size,
        )
        total = sum(t.file.file_size_in_bytes for t in tasks) * _EXPANSION
        target = task_target_bytes(int(total), parallelism, ctx)
        size = lambda t: t.file.file_size_in_bytes * _EXPANSION  # noqa: E731
        for group in group_by_size(tasks, size, target):
            counts_exact = (
                limit is None
                and post is None
                and all(not t.delete_files and isinstance(t.residual, AlwaysTrue) for t in group)
            )
            rows = sum(t.file.record_count for t in group)
            meta = BlockMetadata(
                num_rows=rows if counts_exact else None,
                size_bytes=int(sum(size(t) for t in group)),
                input_files=tuple(t.file.file_path for t in group),
            )
            yield ReadTask(functools.partial(read, tuple(group)), meta)

    def get_read_tasks(self, parallelism: int, **pushdown: Any) -> list[ReadTask]:
        return list(self.iter_read_tasks(parallelism, **pushdown))

    def explain_read(self, **pushdown: Any) -> str:
        from pyiceberg.expressions import AlwaysTrue

        filter = pushdown.get("filter")
        scan, row_filter, exact = self._scan(pushdown.get("columns"), filter)
        kept = len(self._plan(scan))
        total = len(self._plan(self._scan(None, None)[0].update(row_filter=AlwaysTrue())))
        snapshot = scan.snapshot()
        text = (
            f"snapshot {snapshot.snapshot_id if snapshot else None}, files {kept} of {total} "
            f"({total - kept} pruned by partitions and metrics)"
        )
        if "columns" in pushdown:
            text += f", columns [{', '.join(pushdown['columns'])}]"
        if str(row_filter) != "AlwaysTrue()":
            text += f", row_filter {row_filter}"
        if filter is not None and not exact:
            text += f", then filter {filter} on the rows"
        return text


class _IcebergRead:
    """What every read task of one scan shares (picklable): reads a group of
    planned files with pyiceberg's ArrowScan into blocks of bounded size."""

    def __init__(
        self,
        identifier: str,
        metadata: Any,
        io: Any,
        projection: Any,
        row_filter: Any,
        case_sensitive: bool,
        limit: int | None,
        post_filter: pc.Expression | None,
        output: tuple[str, ...] | None,
        max_block_bytes: int,
    ) -> None:
        self.identifier = identifier
        self.metadata = metadata
        self.io = io
        self.projection = projection
        self.row_filter = row_filter
        self.case_sensitive = case_sensitive
        self.limit = limit
        self.post_filter = post_filter
        self.output = output
        self.max_block_bytes = max_block_bytes

    def __call__(self, tasks: tuple) -> Iterator[pa.Table]:
        from pyiceberg.io.pyarrow import ArrowScan

        scan = ArrowScan(
            self.metadata,
            self.io,
            self.projection,
            self.row_filter,
            self.case_sensitive,
            # Rows the filter left to us may still drop: then the limit comes after it.
            self.limit if self.post_filter is None else None,
        )
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        # Files written at different times may differ in types (string or large_string):
        # every batch takes the projection's types.
        schema = schema_to_pyarrow(self.projection, include_field_ids=False)
        batches = (
            b if b.schema.equals(schema) else b.cast(schema) for b in scan.to_record_batches(tasks)
        )
        try:
            yield from batches_to_blocks(
                batches, self.post_filter, self.output, self.limit, self.max_block_bytes
            )
        except Exception as e:
            paths = ", ".join(repr(t.file.file_path) for t in tasks[:3])
            raise SourceError(
                f"{READ}: cannot read {self.identifier!r} (files {paths}"
                f"{', ...' if len(tasks) > 3 else ''}): {type(e).__name__}: {e}",
                path=tasks[0].file.file_path,
            ) from e


# -- writing -----------------------------------------------------------------------------


class IcebergDatasink(Datasink):
    """Data files written by pyiceberg's writer in the workers; one commit.

    ``mode``: "append" (default) adds the rows; "overwrite" replaces the
    table's rows in the same commit. The table must exist (its schema and
    partition spec decide the files' layout).
    """

    modes = ("append", "overwrite")

    def __init__(
        self,
        table_identifier: str,
        *,
        catalog_kwargs: dict[str, Any] | None = None,
        snapshot_properties: dict[str, str] | None = None,
        mode: str = "append",
    ) -> None:
        mode = getattr(mode, "value", mode)  # Ray Data's SaveMode enum works too
        if mode not in self.modes:
            raise ValueError(f"{WRITE}: mode must be one of {self.modes}, got {mode!r}")
        self.identifier = table_identifier
        self.catalog_kwargs = dict(catalog_kwargs or {})
        self.snapshot_properties = dict(snapshot_properties or {})
        self.mode = mode
        self.write_uuid: uuid.UUID | None = None
        self._table: Any = None
        self._metadata: Any = None
        self._io: Any = None
        self._arrow_schema: pa.Schema | None = None

    def __repr__(self) -> str:  # catalog_kwargs may hold credentials: never shown
        return f"IcebergDatasink({self.identifier!r}, mode={self.mode!r})"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_table": None, "catalog_kwargs": {}}

    def get_name(self) -> str:
        return "iceberg"

    def on_write_start(self) -> None:
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        self._table = load_table(WRITE, self.identifier, self.catalog_kwargs)
        self._metadata = self._table.metadata
        self._io = self._table.io
        self._arrow_schema = schema_to_pyarrow(self._table.schema(), include_field_ids=False)
        self.write_uuid = uuid.uuid4()

    def write(self, blocks: Iterable[pa.Table], task_index: int) -> WriteResult:
        from pyiceberg.io.pyarrow import _dataframe_to_data_files

        if self.write_uuid is None:
            raise RuntimeError(f"{WRITE}: write() called before on_write_start()")
        # pyiceberg's writer (private, as Ray Data uses it): field ids, metrics, partitions.
        counter = itertools.count(task_index << 20)
        files: list[Any] = []

        def flush(tables: list[pa.Table]) -> None:
            whole = pa.concat_tables(tables)
            files.extend(
                _dataframe_to_data_files(
                    self._metadata, whole, self._io, write_uuid=self.write_uuid, counter=counter
                )
            )

        pending: list[pa.Table] = []
        nbytes = rows = 0
        for block in blocks:
            block = self._prepare(block)
            if not block.num_rows:
                continue
            pending.append(block)
            nbytes += block.nbytes
            rows += block.num_rows
            if nbytes >= _WRITE_BUFFER_BYTES:
                flush(pending)
                pending, nbytes = [], 0
        if pending:
            flush(pending)
        return WriteResult(
            files=tuple(f.file_path for f in files),
            num_rows=rows,
            num_bytes=sum(f.file_size_in_bytes for f in files),
            extra={"data_files": files},
        )

    def _prepare(self, block: pa.Table) -> pa.Table:
        """``block`` in the table's schema (types cast, missing columns null)."""
        schema = self._arrow_schema
        extra = [c for c in block.column_names if c not in schema.names]
        if extra:
            raise ValueError(
                f"{WRITE}: columns {extra} are not in the Iceberg table {self.identifier!r} "
                f"({schema.names}); drop them or add them to the table first "
                "(table.update_schema().add_column(...))"
            )
        return conform(block, schema)

    def on_write_complete(self, results: list[WriteResult]) -> int | None:
        """Add every data file in one commit; the new snapshot's id."""
        from pyiceberg.expressions import AlwaysTrue

        files = [f for r in results for f in r.extra.get("data_files", ())]
        try:
            txn = self._table.transaction()
            if self.mode == "overwrite":
                txn.delete(AlwaysTrue(), snapshot_properties=self.snapshot_properties)
            if files:
                with txn.update_snapshot(
                    snapshot_properties=self.snapshot_properties
                ).fast_append() as append:
                    for f in files:
                        append.append_data_file(f)
            txn.commit_transaction()
        except BaseException as e:
            self.on_write_failed(e)
            raise
        snapshot = self._table.refresh().current_snapshot()
        return snapshot.snapshot_id if snapshot else None

    def on_write_failed(self, error: BaseException) -> None:
        """Delete the data files this write left (named after its write id)."""
        if self.write_uuid is None or self._table is None:
            return
        import pyarrow.fs as pafs
        from pyiceberg.io.pyarrow import PyArrowFileIO

        location = self._table.location_provider().data_path
        if isinstance(self._io, PyArrowFileIO):
            scheme, netloc, path = PyArrowFileIO.parse_location(location)
            fs = self._io.fs_by_scheme(scheme, netloc)
        else:
            fs, path = pafs.FileSystem.from_uri(location)
        try:
            found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        except FileNotFoundError:
            return
        marker = str(self.write_uuid)
        for info in found:
            if info.type == pafs.FileType.File and marker in info.base_name:
                fs.delete_file(info.path)
