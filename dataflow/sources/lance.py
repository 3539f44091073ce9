"""Lance datasets (optional extra ``dataflow[lance]``, pylance): ``read_lance``
and ``write_lance``.

Reading: the dataset is opened at a version; its fragments are the read tasks
(grouped to about an even share of the data each). Columns and the filter are
pushed into Lance's scanner: a filter the optimizer pushes down is translated
into Lance's SQL (comparisons, arithmetic, ``is_in``, ``is_null``, ``&``,
``|``, ``~``), what cannot be is applied to the rows after reading, so results
are exact. A string ``filter=`` that is not a dataflow expression is taken as
Lance SQL, as Ray Data does.

Writing: workers write fragments (``lance.fragment.write_fragments``) and
journal their data files under ``<uri>/_dataflow_write-<id>/``; the driver
commits every fragment in one new version (``Append``, or ``Overwrite`` for
``mode="overwrite"`` and new datasets). A failed write commits nothing and
deletes the journaled files.

>>> ds = read_lance("/data/vectors.lance", version=3, columns=["id"], filter="id < 10")  # doctest: +SKIP
>>> ds.write_lance("/tmp/out.lance", mode="append")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataflow.context import DataContext
from dataflow.errors import SourceError
from dataflow.expressions import BinaryExpr, ColumnExpr, Expr, IsInExpr, LiteralExpr, UnaryExpr
from dataflow.sources.datasource import BlockMetadata, Datasink, Datasource, ReadTask, WriteResult
from dataflow.sources.file_based import batches_to_blocks, group_by_size, task_target_bytes
from dataflow.sources.parquet import conform
from dataflow.sources.paths import resolve_filesystem
from dataflow.sources.sinks import DEFAULT_TARGET_FILE_SIZE

READ = "read_lance"
WRITE = "write_lance"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMPARE = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
# Arithmetic whose SQL meaning is Python's: not /, //, % (integer SQL division differs).
_ARITH = ("+", "-", "*")
# In-memory bytes per byte of a Lance data file, to size read tasks.
_EXPANSION = 1.5


def _lance(where: str) -> Any:
    try:
        import lance
    except ImportError as e:
        raise ImportError(
            f"{where} needs the pylance package: pip install 'dataflow[lance]'"
        ) from e
    return lance


def _first_line(error: BaseException) -> str:
    return str(error).split(", /")[0].splitlines()[0] if str(error) else type(error).__name__


def open_dataset(
    where: str, uri: str, version: int | str | None, storage_options: dict[str, str] | None
) -> Any:
    """The Lance dataset at ``uri`` (and ``version``: a number or a tag); a
    missing one is a ``SourceError`` naming the URI, never the storage options."""
    lance = _lance(where)
    try:
        dataset = lance.dataset(uri, storage_options=storage_options)
    except Exception as e:
        raise SourceError(
            f"{where}: no readable Lance dataset at {uri!r} ({_first_line(e)}); check the "
            "URI and storage_options",
            path=uri,
        ) from None
    if version is None:
        return dataset
    try:
        return dataset.checkout_version(version)
    except Exception:
        raise SourceError(
            f"{where}: {uri!r} has no version {version!r} (the latest is {dataset.latest_version})",
            path=uri,
        ) from None


# -- filters -----------------------------------------------------------------------------


def to_lance_sql(expr: Expr, schema: pa.Schema) -> tuple[str, bool] | None:
    """``expr`` as a Lance SQL predicate and whether it is exact; a superset of
    the rows (inexact) where part of an ``&`` has no SQL form; None when
    nothing has."""

    def value(e: Expr) -> str | None:
        if isinstance(e, ColumnExpr):
            if e.name not in schema.names:
                return None
            if _IDENTIFIER.fullmatch(e.name):
                return e.name
            return "`" + e.name.replace("`", "``") + "`"
        if isinstance(e, LiteralExpr):
            return _literal(e.value)
        if isinstance(e, BinaryExpr) and e.op in _ARITH:
            left, right = value(e.left), value(e.right)
            return None if left is None or right is None else f"({left} {e.op} {right})"
        if isinstance(e, UnaryExpr) and e.op == "-":
            inner = value(e.operand)
            return None if inner is None else f"(-{inner})"
        return None

    if isinstance(expr, BinaryExpr) and expr.op in ("&", "|"):
        left, right = to_lance_sql(expr.left, schema), to_lance_sql(expr.right, schema)
        if expr.op == "&":
            if left is None or right is None:
                one = left or right
                return None if one is None else (one[0], False)
            return f"({left[0]} AND {right[0]})", left[1] and right[1]
        if left is None or right is None:
            return None
        return f"({left[0]} OR {right[0]})", left[1] and right[1]
    if isinstance(expr, BinaryExpr) and expr.op in _COMPARE:
        left, right = value(expr.left), value(expr.right)
        if left is None or right is None:
            return None
        return f"({left} {_COMPARE[expr.op]} {right})", True
    if isinstance(expr, UnaryExpr) and expr.op == "~":
        inner = to_lance_sql(expr.operand, schema)
        if inner is None or not inner[1]:
            return None  # negating a superset is not a superset
        return f"(NOT {inner[0]})", True
    if isinstance(expr, UnaryExpr) and expr.op == "is_null":
        operand = expr.operand
        if isinstance(operand, ColumnExpr) and operand.name in schema.names:
            if pa.types.is_floating(schema.field(operand.name).type):
                return None  # is_null() counts NaN as null; SQL's IS NULL does not
        inner = value(operand)
        return None if inner is None else (f"({inner} IS NULL)", True)
    if isinstance(expr, IsInExpr):
        inner = value(expr.operand)
        items = [_literal(v) for v in expr.values]
        if inner is None or not items or any(i is None for i in items):
            return None
        return f"({inner} IN ({', '.join(items)}))", True
    if isinstance(expr, ColumnExpr):
        inner = value(expr)
        return None if inner is None else (inner, True)
    return None


def _literal(v: Any) -> str | None:
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else None
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, datetime.datetime):
        return None if v.tzinfo is not None else f"TIMESTAMP '{v.isoformat(sep=' ')}'"
    if isinstance(v, datetime.date):
        return f"DATE '{v.isoformat()}'"
    return None


# -- reading -----------------------------------------------------------------------------


class LanceDatasource(Datasource):
    """A Lance dataset at one version; fragments become read tasks."""

    supports_projection_pushdown = True
    supports_predicate_pushdown = True
    supports_limit_pushdown = True
    filter_as_expr = True
    reads_without_gil = True

    def __init__(
        self,
        uri: str | os.PathLike,
        *,
        version: int | str | None = None,
        sql_filter: str | None = None,
        storage_options: dict[str, str] | None = None,
        scanner_options: dict[str, Any] | None = None,
    ) -> None:
        uri = os.fspath(uri)
        if not isinstance(uri, str):
            raise TypeError(f"{READ}: uri must be one dataset's path or URI, got {type(uri)}")
        self.uri = uri
        self.scanner_options = dict(scanner_options or {})
        self._dataset = open_dataset(READ, uri, version, storage_options)
        self.version: int = self._dataset.version
        self.sql_filter = sql_filter
        if sql_filter is not None:
            self._check_sql(sql_filter)

    def get_name(self) -> str:
        return "lance"

    def _check_sql(self, sql: str) -> bool:
        """Lance can plan ``sql`` on this dataset (raises a ``SourceError`` if not)."""
        try:
            self._dataset.scanner(filter=sql, columns=[]).explain_plan()
        except Exception as e:
            raise SourceError(
                f"{READ}: Lance cannot evaluate the filter {sql!r} on {self.uri!r}: "
                f"{_first_line(e)}",
                path=self.uri,
            ) from None
        return True

    def schema(self) -> pa.Schema:
        return self._dataset.schema

    def num_rows(self) -> int | None:
        return None if self.sql_filter is not None else self._dataset.count_rows()

    def _pushdown(
        self, columns: Sequence[str] | None, filter: Expr | None
    ) -> tuple[str | None, pc.Expression | None, list[str] | None, tuple[str, ...] | None]:
        """The SQL filter for Lance, the filter left to apply to the rows, the
        columns to read and the columns to output after that filter."""
        schema = self._dataset.schema
        if columns is not None:
            unknown = [c for c in columns if c not in schema.names]
            if unknown:
                raise SourceError(
                    f"{READ}: columns {unknown} are not in {self.uri!r}; available: {schema.names}",
                    path=self.uri,
                )
        sql, post = self.sql_filter, None
        if filter is not None:
            translated = to_lance_sql(filter, schema)
            if translated is not None:
                try:
                    combined = translated[0] if sql is None else f"({sql}) AND {translated[0]}"
                    self._check_sql(combined)
                    sql = combined
                except SourceError:
                    translated = None
            if translated is None or not translated[1]:
                post = filter.to_arrow()
        read = list(columns) if columns is not None else None
        output = None
        if post is not None and read is not None:
            missing = sorted(c for c in filter.columns() if c not in read)
            output, read = tuple(read), read + missing
        return sql, post, read, output

    def iter_read_tasks(
        self,
        parallelism: int,
        *,
        columns: Sequence[str] | None = None,
        filter: Expr | None = None,
        limit: int | None = None,
    ) -> Iterator[ReadTask]:
        ctx = DataContext.get_current()
        sql, post, read_columns, output = self._pushdown(columns, filter)
        fragments = self._dataset.get_fragments()
        if not fragments:
            return
        sizes = {f.fragment_id: _fragment_bytes(f) * _EXPANSION for f in fragments}
        target = task_target_bytes(int(sum(sizes.values())), parallelism, ctx)
        read = _LanceRead(
            self.uri,
            self._dataset,
            read_columns,
            sql,
            post,
            output,
            limit,
            ctx.target_max_block_size,
            self.scanner_options,
        )
        exact = sql is None and post is None and limit is None
        for group in group_by_size(fragments, lambda f: sizes[f.fragment_id], target):
            rows = sum(f.metadata.physical_rows - f.metadata.num_deletions for f in group)
            meta = BlockMetadata(
                num_rows=rows if exact else None,
                size_bytes=int(sum(sizes[f.fragment_id] for f in group)),
                input_files=tuple(f"{self.uri}#fragment={f.fragment_id}" for f in group),
            )
            yield ReadTask(
                functools.partial(read, tuple(f.fragment_id for f in group)),
                meta,
            )

    def get_read_tasks(self, parallelism: int, **pushdown: Any) -> list[ReadTask]:
        return list(self.iter_read_tasks(parallelism, **pushdown))

    def explain_read(self, **pushdown: Any) -> str:
        filter = pushdown.get("filter")
        sql, post, _, _ = self._pushdown(pushdown.get("columns"), filter)
        text = f"version {self.version}, fragments {len(self._dataset.get_fragments())}"
        if "columns" in pushdown:
            text += f", columns [{', '.join(pushdown['columns'])}]"
        if sql is not None:
            text += f", filter {sql} (in Lance's scan)"
        if post is not None:
            text += f", then filter {filter} on the rows"
        return text


def _fragment_bytes(fragment: Any) -> int:
    return sum(f.file_size_bytes or 0 for f in fragment.metadata.files) or 1


class _LanceRead:
    """What every read task of one scan shares (picklable): scans a group of
    fragments with Lance and cuts the batches into blocks of bounded size."""

    def __init__(
        self,
        uri: str,
        dataset: Any,
        columns: list[str] | None,
        sql: str | None,
        post: pc.Expression | None,
        output: tuple[str, ...] | None,
        limit: int | None,
        max_block_bytes: int,
        scanner_options: dict[str, Any],
    ) -> None:
        self.uri = uri
        self.dataset = dataset
        self.columns = columns
        self.sql = sql
        self.post = post
        self.output = output
        self.limit = limit
        self.max_block_bytes = max_block_bytes
        self.scanner_options = scanner_options

    def __call__(self, fragment_ids: tuple[int, ...]) -> Iterator[pa.Table]:
        try:
            fragments = [self.dataset.get_fragment(i) for i in fragment_ids]
            scanner = self.dataset.scanner(
                columns=self.columns,
                filter=self.sql,
                limit=self.limit if self.post is None else None,
                fragments=fragments,
                scan_in_order=True,
                **self.scanner_options,
            )
            yield from batches_to_blocks(
                scanner.to_batches(), self.post, self.output, self.limit, self.max_block_bytes
            )
        except Exception as e:
            raise SourceError(
                f"{READ}: cannot read fragments {list(fragment_ids)} of {self.uri!r}: "
                f"{type(e).__name__}: {_first_line(e)}",
                path=self.uri,
            ) from e


# -- writing -----------------------------------------------------------------------------


class LanceDatasink(Datasink):
    """Fragments written by the workers, committed in one new version.

    ``mode``: "create" (default; fails if the dataset exists), "append" (adds
    rows, creating the dataset if needed), "overwrite" (a new version with only
    these rows; older versions stay readable).
    """

    modes = ("create", "append", "overwrite")

    def __init__(
        self,
        uri: str | os.PathLike,
        *,
        mode: str = "create",
        schema: pa.Schema | None = None,
        min_rows_per_file: int = 1024 * 1024,
        max_rows_per_file: int = 64 * 1024 * 1024,
        data_storage_version: str | None = None,
        storage_options: dict[str, str] | None = None,
    ) -> None:
        mode = getattr(mode, "value", mode)  # Ray Data's SaveMode enum works too
        if mode not in self.modes:
            raise ValueError(f"{WRITE}: mode must be one of {self.modes}, got {mode!r}")
        if min_rows_per_file < 1 or max_rows_per_file < min_rows_per_file:
            raise ValueError(
                f"{WRITE}: need 1 <= min_rows_per_file <= max_rows_per_file, got "
                f"{min_rows_per_file} and {max_rows_per_file}"
            )
        self.uri = os.fspath(uri).rstrip("/")
        self.mode = mode
        self.schema = schema
        self.min_rows_per_file = min_rows_per_file
        self.max_rows_per_file = max_rows_per_file
        self.data_storage_version = data_storage_version
        self.storage_options = storage_options
        self.fs, (self.path,) = resolve_filesystem([self.uri], None, WRITE)
        self.write_id = ""
        self._exists = False
        self._dest_existed = False
        self._read_version: int | None = None
        self._target: pa.Schema | None = None  # appends: the dataset's schema

    def __repr__(self) -> str:  # storage_options may hold credentials: never shown
        return f"LanceDatasink({self.uri!r}, mode={self.mode!r})"

    def get_name(self) -> str:
        return "lance"

    @property
    def journal(self) -> str:
        return f"{self.path}/_dataflow_write-{self.write_id}"

    def on_write_start(self) -> None:
        lance = _lance(WRITE)
        self._dest_existed = self.fs.fsspec.exists(self.path)
        try:
            dataset = lance.dataset(self.uri, storage_options=self.storage_options)
        except ValueError:
            dataset = None  # no dataset there yet
        self._exists = dataset is not None
        if dataset is not None:
            if self.mode == "create":
                raise FileExistsError(
                    f"{WRITE}: a Lance dataset exists at {self.uri!r}; pass mode='append' to "
                    "add rows or mode='overwrite' to replace them"
                )
            self._read_version = dataset.version
            if self.mode == "append":
                self._target = dataset.schema
        if self._target is None and self.schema is not None:
            self._target = self.schema
        self.write_id = uuid.uuid4().hex[:12]
        self.fs.fsspec.makedirs(self.journal, exist_ok=True)

    def write(self, blocks: Iterable[pa.Table], task_index: int) -> WriteResult:
        from lance.fragment import write_fragments

        if not self.write_id:
            raise RuntimeError(f"{WRITE}: write() called before on_write_start()")
        fragments: list[Any] = []
        schema: pa.Schema | None = self._target
        seq = 0

        def flush(tables: list[pa.Table]) -> None:
            nonlocal seq
            new = write_fragments(
                pa.concat_tables(tables),
                self.uri,
                schema=schema,
                mode=self._fragment_mode(),
                max_rows_per_file=self.max_rows_per_file,
                data_storage_version=self.data_storage_version,
                storage_options=self.storage_options,
            )
            fragments.extend(new)
            # The journal lets a failed write find these files (they are in no version).
            with self.fs.fsspec.open(
                f"{self.journal}/task-{task_index:05d}-{seq:04d}.json", "w"
            ) as f:
                json.dump([d.path for frag in new for d in frag.files], f)
            seq += 1

        pending: list[pa.Table] = []
        rows = nbytes = total = 0
        for block in blocks:
            if schema is None:
                schema = block.schema
            block = self._conform(block, schema)
            if not block.num_rows:
                continue
            pending.append(block)
            rows += block.num_rows
            total += block.num_rows
            nbytes += block.nbytes
            if rows >= self.min_rows_per_file or nbytes >= DEFAULT_TARGET_FILE_SIZE:
                flush(pending)
                pending, rows, nbytes = [], 0, 0
        if pending:
            flush(pending)
        return WriteResult(
            num_rows=total,
            extra={"fragments": fragments, "schema": schema if total else None},
        )

    def _fragment_mode(self) -> str:
        """How fragments are written: appends take the dataset's field ids."""
        if not self._exists:
            return "create"
        return "append" if self.mode == "append" else "overwrite"

    def _conform(self, block: pa.Table, schema: pa.Schema) -> pa.Table:
        extra = [c for c in block.column_names if c not in schema.names]
        if extra:
            raise ValueError(
                f"{WRITE}: columns {extra} are not in the Lance dataset {self.uri!r} "
                f"({schema.names}); drop them, or write with mode='overwrite'"
            )
        return conform(block, schema)

    def on_write_complete(self, results: list[WriteResult]) -> int:
        """Commit every fragment in one new version; its number."""
        lance = _lance(WRITE)
        fragments = [f for r in results for f in r.extra.get("fragments", ())]
        schemas = [r.extra["schema"] for r in results if r.extra.get("schema") is not None]
        try:
            if self.mode == "append" and self._exists:
                operation = lance.LanceOperation.Append(fragments)
            else:
                schema = schemas[0] if schemas else self._target
                differ = [s for s in schemas if not s.equals(schema)]
                if differ:
                    raise ValueError(
                        f"{WRITE}: write tasks produced different schemas ({schema} and "
                        f"{differ[0]}); pass schema= so every fragment of {self.uri!r} shares one"
                    )
                if schema is None:
                    raise ValueError(
                        f"{WRITE}: the dataset has no rows and no schema: pass schema= to "
                        f"create {self.uri!r}"
                    )
                operation = lance.LanceOperation.Overwrite(schema, fragments)
            dataset = lance.LanceDataset.commit(
                self.uri,
                operation,
                read_version=self._read_version,
                storage_options=self.storage_options,
            )
        except BaseException as e:
            self.on_write_failed(e)
            raise
        self.fs.fsspec.rm(self.journal, recursive=True)
        return dataset.version

    def on_write_failed(self, error: BaseException) -> None:
        """Delete the data files the journal lists (no version references them)."""
        if not self.write_id:
            return
        fs = self.fs.fsspec
        if fs.exists(self.journal):
            for entry in fs.ls(self.journal, detail=False):
                with fs.open(entry, "r") as f:
                    for name in json.load(f):
                        if fs.exists(f"{self.path}/data/{name}"):
                            fs.rm(f"{self.path}/data/{name}")
            fs.rm(self.journal, recursive=True)
        if not self._dest_existed and fs.exists(self.path):
            leftover = [p for p in fs.find(self.path) if not p.endswith("/")]
            if not leftover:
                fs.rm(self.path, recursive=True)
