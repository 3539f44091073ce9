"""SQL databases through any DB-API 2 driver: ``read_sql`` and ``write_sql``.

A read wraps the user's query as a subquery, so the database does the pushed
work: ``SELECT <columns> FROM (<sql>) AS T WHERE <filter> [AND <shard>]``.

* Projection: the selected columns replace ``*``.
* Predicate: the conjuncts of the filter that translate to SQL with a result
  that contains the Arrow filter's (comparisons of a column with a number,
  ``==`` and ``is_in`` with strings, ``is_not_null``, ``&``, ``|``) go into the
  ``WHERE``; the whole filter is then applied again to the fetched rows, so
  collations, NaN and NULL rules of the database cannot change the result.
* Limit: each task stops fetching once it has its rows.
* Parallel reads (``shard_keys``): one numeric key is split into ranges from
  ``MIN``/``MAX`` (portable, uses an index); otherwise rows are hashed as Ray
  Data does, ``MOD(ABS(<shard_hash_fn>(<keys>)), n) = i``; a database without
  those functions is read by one task.

Rows are fetched with ``fetchmany`` and converted a chunk of columns at a time.
Every error names the query; credentials in a driver's message are masked.

>>> import sqlite3
>>> src = SQLDatasource("SELECT * FROM t", lambda: sqlite3.connect("db.sqlite"))
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dataflow.errors import SourceError, redact
from dataflow.sources.datasource import BlockMetadata, Datasink, Datasource, ReadTask, WriteResult

_FETCH_ROWS = 8192
_WRITE_ROWS = 1024
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NUMBER_OPS = ("==", "!=", "<", "<=", ">", ">=")
_SQL_OPS = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


def ident(name: str) -> str:
    """A column name as SQL: bare when it is a plain identifier (MySQL reads a
    double-quoted name as a string), else double-quoted."""
    return name if _IDENT.match(name) else '"' + name.replace('"', '""') + '"'


def _short(sql: str, n: int = 200) -> str:
    sql = " ".join(sql.split())
    return sql if len(sql) <= n else sql[: n - 3] + "..."


def _error(where: str, what: str, sql: str, e: BaseException) -> SourceError:
    text = f"{type(e).__name__}: {e}"
    err = SourceError(f"{where}: {what} ({text})\n  query: {_short(sql)}", path=_short(sql))
    # The driver's own exception may print a connection string: keep it only when clean.
    err.__cause__ = e if redact(text) == text else None
    err.__suppress_context__ = True
    return err


@contextlib.contextmanager
def connect(factory: Callable[[], Any], where: str, sql: str) -> Iterator[Any]:
    """A cursor on a fresh connection; commit on success, rollback on error, close."""
    try:
        conn = factory()
    except Exception as e:
        raise _error(where, "cannot connect", sql, e) from None
    for attr in ("cursor", "commit", "close"):
        if not hasattr(conn, attr):
            conn_type = type(conn).__name__
            raise TypeError(
                f"{where}: connection_factory returned a {conn_type!r} object without {attr}(); "
                "it must return a DB-API 2 connection (PEP 249)"
            )
    try:
        cursor = conn.cursor()
        yield cursor
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def execute(cursor: Any, sql: str, params: Any, where: str) -> None:
    """Run ``sql`` (with the user's ``params`` when given); a failure names the query."""
    try:
        if params is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, params)
    except Exception as e:
        raise _error(where, "the query failed", sql, e) from None


# -- filter translation ------------------------------------------------------------------


def _literal(value: Any, string_ok: bool, has_params: bool) -> str | None:
    if isinstance(value, bool) or value is None:
        return None  # TRUE vs 1 differs between databases
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, str) and string_ok:
        # No backslash (MySQL escapes with it), no NUL, no % next to driver params.
        if "\\" in value or "\x00" in value or (has_params and "%" in value):
            return None
        return "'" + value.replace("'", "''") + "'"
    return None


def filter_to_sql(expr: Any, has_params: bool = False) -> str | None:
    """The part of a dataflow ``Expr`` that SQL can pre-filter with, or None.

    The SQL keeps at least every row the expression keeps (a dropped conjunct
    only widens it); the caller applies the expression itself afterwards.

    >>> from dataflow.expressions import col
    >>> filter_to_sql((col("a") > 1) & (col("s") == "x") & (col("b") * 2 > 3))
    "((a > 1) AND (s = 'x'))"
    """
    from dataflow.expressions import BinaryExpr, ColumnExpr, IsInExpr, LiteralExpr, UnaryExpr

    if isinstance(expr, BinaryExpr):
        if expr.op == "&":
            sides = (filter_to_sql(expr.left, has_params), filter_to_sql(expr.right, has_params))
            parts = [p for p in sides if p]
            return f"({parts[0]} AND {parts[1]})" if len(parts) == 2 else (parts or [None])[0]
        if expr.op == "|":
            left = filter_to_sql(expr.left, has_params)
            right = filter_to_sql(expr.right, has_params)
            return f"({left} OR {right})" if left and right else None
        if expr.op in _NUMBER_OPS:
            column, literal, op = expr.left, expr.right, expr.op
            if isinstance(column, LiteralExpr) and isinstance(literal, ColumnExpr):
                flipped = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
                column, literal, op = literal, column, flipped.get(op, op)
            if isinstance(column, ColumnExpr) and isinstance(literal, LiteralExpr):
                value = _literal(literal.value, op == "==", has_params)
                if value is not None:
                    return f"({ident(column.name)} {_SQL_OPS[op]} {value})"
        return None
    if isinstance(expr, IsInExpr) and isinstance(expr.operand, ColumnExpr) and expr.values:
        values = [_literal(v, True, has_params) for v in expr.values]
        if all(v is not None for v in values):
            return f"({ident(expr.operand.name)} IN ({', '.join(values)}))"  # type: ignore[arg-type]
        return None
    if (
        isinstance(expr, UnaryExpr)
        and expr.op == "~"
        and isinstance(expr.operand, UnaryExpr)
        and expr.operand.op == "is_null"
        and isinstance(expr.operand.operand, ColumnExpr)
    ):
        return f"({ident(expr.operand.operand.name)} IS NOT NULL)"
    return None


# -- reading ----------------------------------------------------------------------------


def rows_to_block(names: list[str], rows: list[tuple], schema: pa.Schema | None) -> pa.Table:
    """Fetched rows as a block; a column that is all NULL in this chunk takes its
    type from ``schema`` (an earlier chunk's), so a task's blocks agree."""
    columns = list(zip(*rows)) if rows else [() for _ in names]
    arrays = []
    for i, values in enumerate(columns):
        arr = pa.array(list(values))
        if schema is not None and arr.type != schema.field(i).type:
            with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
                arr = arr.cast(schema.field(i).type)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, names=names)


def _read_query(
    factory: Callable[[], Any],
    query: str,
    params: Any,
    arrow_filter: pc.Expression | None,
    limit: int | None,
    columns: list[str] | None = None,
) -> Iterator[pa.Table]:
    left = limit
    with connect(factory, "read_sql", query) as cursor:
        execute(cursor, query, params, "read_sql")
        names = [d[0] for d in cursor.description or ()]
        schema: pa.Schema | None = None
        while left is None or left > 0:
            try:
                rows = cursor.fetchmany(_FETCH_ROWS)
            except Exception as e:
                raise _error("read_sql", "fetching rows failed", query, e) from None
            if not rows:
                break
            block = rows_to_block(names, rows, schema)
            if schema is None or any(f.type == pa.null() for f in schema):
                schema = block.schema
            if arrow_filter is not None:
                block = block.filter(arrow_filter)
                if columns is not None:
                    block = block.select(columns)
            if left is not None:
                block = block.slice(0, left)
                left -= block.num_rows
            if block.num_rows:
                yield block


class SQLDatasource(Datasource):
    """The rows of ``sql`` from a DB-API 2 connection made by ``connection_factory``
    (called once per task, in the worker)."""

    supports_projection_pushdown = True
    supports_predicate_pushdown = True
    supports_limit_pushdown = True
    filter_as_expr = True

    def __init__(
        self,
        sql: str,
        connection_factory: Callable[[], Any],
        *,
        sql_params: Any = None,
        shard_keys: list[str] | None = None,
        shard_hash_fn: str = "MD5",
    ) -> None:
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError(f"read_sql: sql must be a non-empty query string, got {sql!r}")
        if not callable(connection_factory):
            raise TypeError(
                "read_sql: connection_factory must be a callable returning a DB-API connection "
                f"(e.g. lambda: sqlite3.connect(path)), got {type(connection_factory).__name__}"
            )
        if isinstance(shard_keys, str):
            shard_keys = [shard_keys]
        self.sql = sql.strip().rstrip(";").strip()
        self.factory = connection_factory
        self.params = sql_params
        self.shard_keys = list(shard_keys or [])
        self.shard_hash_fn = shard_hash_fn

    def get_name(self) -> str:
        return "sql"

    def _split_filter(self, filter: Any) -> tuple[str | None, pc.Expression | None]:
        """(the SQL pre-filter, the Arrow filter applied to fetched rows)."""
        if filter is None:
            return None, None
        if isinstance(filter, pc.Expression):  # a planner that passes Arrow expressions
            return None, filter
        return filter_to_sql(filter, self.params is not None), filter.to_arrow()

    def query(self, columns: list[str] | None = None, where: str | None = None) -> str:
        """The SQL a task runs (before its shard condition)."""
        select = ", ".join(ident(c) for c in columns) if columns is not None else "*"
        text = f"SELECT {select} FROM ({self.sql}) AS T"
        return f"{text} WHERE {where}" if where else text

    def _fetch(self, columns: list[str] | None, filter: Any) -> list[str] | None:
        """The columns to fetch: the selected ones plus those the Arrow filter,
        applied to fetched rows, reads (all when they are unknown)."""
        if columns is None or filter is None:
            return columns
        needs = sorted(filter.columns()) if hasattr(filter, "columns") else None
        return None if needs is None else list(dict.fromkeys([*columns, *needs]))

    def explain_read(self, **pushdown: Any) -> str:
        where, _ = self._split_filter(pushdown.get("filter"))
        text = self.query(self._fetch(pushdown.get("columns"), pushdown.get("filter")), where)
        if pushdown.get("filter") is not None:
            text += " (then the whole filter on the fetched rows)"
        if pushdown.get("limit") is not None:
            text += f"; each task stops after {pushdown['limit']} rows"
        if self.shard_keys:
            text += f"; sharded on {', '.join(self.shard_keys)}"
        return text

    def _shards(self, parallelism: int, where: str | None) -> list[str | None]:
        """Shard conditions (None: the whole result)."""
        if parallelism <= 1 or not self.shard_keys:
            return [None]
        keys = [ident(k) for k in self.shard_keys]
        base = self.query(None, where)
        if len(keys) == 1:
            probe = f"SELECT MIN({keys[0]}), MAX({keys[0]}) FROM ({base}) AS S"
            with connect(self.factory, "read_sql", probe) as cursor:
                execute(cursor, probe, self.params, "read_sql")
                lo, hi = cursor.fetchone()
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi))
            if lo is None and hi is None:
                return [None]
            if numeric:
                return _range_shards(keys[0], lo, hi, parallelism)
        keys_sql = keys[0] if len(keys) == 1 else f"CONCAT({', '.join(keys)})"
        hashed = f"MOD(ABS({self.shard_hash_fn}({keys_sql})), {parallelism})"
        probe = f"SELECT COUNT(*) FROM ({base}) AS S WHERE {hashed} = 0"
        try:
            with connect(self.factory, "read_sql", probe) as cursor:
                execute(cursor, probe, self.params, "read_sql")
                cursor.fetchone()
        except SourceError as e:
            if "cannot connect" in str(e):
                raise
            return [None]  # no MOD/ABS/hash function here: one task reads everything
        return [f"{hashed} = {i}" for i in range(parallelism)]

    def get_read_tasks(
        self,
        parallelism: int,
        *,
        columns: list[str] | None = None,
        filter: Any = None,
        limit: int | None = None,
    ) -> list[ReadTask]:
        where, arrow_filter = self._split_filter(filter)
        fetch = self._fetch(columns, filter)
        base = self.query(fetch, where)
        tasks = []
        for shard in self._shards(parallelism, where):
            query = base if shard is None else f"{base} {'AND' if where else 'WHERE'} {shard}"
            if shard is not None and fetch is not None:
                # The shard key may not be among the selected columns: filter a level below.
                inner = self.query(None, where)
                inner = f"{inner} {'AND' if where else 'WHERE'} {shard}"
                query = f"SELECT {', '.join(ident(c) for c in fetch)} FROM ({inner}) AS U"
            fn = _ReadFn(self.factory, query, self.params, arrow_filter, limit, columns)
            tasks.append(ReadTask(fn, BlockMetadata(input_files=(_short(query, 120),))))
        return tasks


def _range_shards(key: str, lo: float, hi: float, n: int) -> list[str | None]:
    if lo == hi:
        return [None]
    if isinstance(lo, int) and isinstance(hi, int):
        n = min(n, hi - lo + 1)
        bounds = [lo + (hi - lo + 1) * i // n for i in range(n + 1)]
    else:
        bounds = [lo + (hi - lo) * i / n for i in range(n + 1)]
    out = []
    for i in range(n):
        parts = []
        if i > 0:
            parts.append(f"{key} >= {bounds[i]!r}")
        if i < n - 1:
            parts.append(f"{key} < {bounds[i + 1]!r}")
        cond = " AND ".join(parts)
        out.append(f"({cond} OR {key} IS NULL)" if i == 0 else f"({cond})")
    return out


class _ReadFn:
    """A picklable read task body (the factory travels with it to the worker)."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __call__(self) -> Iterator[pa.Table]:
        return _read_query(*self.args)


# -- writing ----------------------------------------------------------------------------


class SQLDatasink(Datasink):
    """Rows of each task inserted with ``cursor.executemany(sql, rows)`` (values in
    column order, ``_WRITE_ROWS`` at a time) on one connection per task, committed
    when the task's blocks are all written and rolled back if one fails. Tasks
    commit independently: a failed write keeps what other tasks committed."""

    def __init__(self, sql: str, connection_factory: Callable[[], Any]) -> None:
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError(f"write_sql: sql must be an INSERT statement, got {sql!r}")
        if not callable(connection_factory):
            raise TypeError(
                "write_sql: connection_factory must be a callable returning a DB-API "
                f"connection, got {type(connection_factory).__name__}"
            )
        self.sql = sql
        self.factory = connection_factory

    def get_name(self) -> str:
        return "sql"

    def write(self, blocks: Any, task_index: int) -> WriteResult:
        rows_written = 0
        with connect(self.factory, "write_sql", self.sql) as cursor:
            for block in blocks:
                columns = [block.column(i).to_pylist() for i in range(block.num_columns)]
                rows = list(zip(*columns))
                for start in range(0, len(rows), _WRITE_ROWS):
                    chunk = rows[start : start + _WRITE_ROWS]
                    try:
                        cursor.executemany(self.sql, chunk)
                    except Exception as e:
                        what = f"inserting rows {rows_written + start}..{rows_written + start + len(chunk) - 1} of task {task_index} failed"
                        raise _error("write_sql", what, self.sql, e) from None
                rows_written += len(rows)
        return WriteResult(num_rows=rows_written)
