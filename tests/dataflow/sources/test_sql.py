"""read_sql / write_sql on sqlite3: sharded reads, pushdown into the query (checked
in the SQL the database ran), exact results, writes, and errors that name the
query but never a password."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

import dataflow as df
from dataflow.context import DataContext
from dataflow.errors import SourceError
from dataflow.expressions import col
from dataflow.sources.sql import SQLDatasource, filter_to_sql

ROWS = [(i, f"name{i % 3}", i * 0.5, bytes([i % 256])) for i in range(200)] + [
    (None, None, None, None)
]


@pytest.fixture(autouse=True)
def inline_backend():
    df.init(backend="inline")
    yield
    df.shutdown()


@pytest.fixture
def db(tmp_path):
    path = str(tmp_path / "app.db")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, raw BLOB)")
    conn.execute("CREATE TABLE n (id INTEGER, name TEXT, score REAL, raw BLOB)")
    conn.executemany("INSERT INTO n VALUES (?, ?, ?, ?)", ROWS)
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", ROWS[:-1])
    conn.commit()
    conn.close()
    return path


def _rows(ds) -> list[tuple]:
    key = lambda r: (r[0] is None, r[0] or 0)  # noqa: E731
    return sorted((tuple(r.values()) for r in ds.take_all()), key=key)


def test_reads_every_row_and_type_with_range_shards(db):
    factory = lambda: sqlite3.connect(db)  # noqa: E731
    assert _rows(df.read_sql("SELECT * FROM n;", factory)) == sorted(
        ROWS, key=lambda r: (r[0] is None, r[0] or 0)
    )
    src = SQLDatasource("SELECT * FROM n", factory, shard_keys=["id"])
    tasks = src.get_read_tasks(4)
    assert len(tasks) == 4
    per_task = [sum(b.num_rows for b in t()) for t in tasks]
    assert per_task == [51, 50, 50, 50]  # the NULL key goes to the first shard
    ds = df.read_sql("SELECT * FROM n", factory, shard_keys=["id"], override_num_blocks=4)
    assert _rows(ds) == sorted(ROWS, key=lambda r: (r[0] is None, r[0] or 0))
    assert ds.count() == 201


def _hashing_connection(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.create_function("MD5", 1, lambda v: int(hashlib.md5(str(v).encode()).hexdigest()[:12], 16))
    return conn


def test_hash_shards_on_a_text_key_and_fallback_without_the_hash_function(db):
    factory = lambda: _hashing_connection(db)  # noqa: E731
    src = SQLDatasource("SELECT * FROM t", factory, shard_keys=["name"])
    tasks = src.get_read_tasks(3)
    assert len(tasks) == 3
    names = [sorted({r["name"] for b in t() for r in b.to_pylist()}) for t in tasks]
    assert sorted(n for ns in names for n in ns) == ["name0", "name1", "name2"]
    ds = df.read_sql("SELECT * FROM t", factory, shard_keys="name", override_num_blocks=3)
    assert _rows(ds) == ROWS[:-1]
    # Plain sqlite has no MD5(): one task reads everything.
    plain = SQLDatasource("SELECT * FROM t", lambda: sqlite3.connect(db), shard_keys=["name"])
    (task,) = plain.get_read_tasks(3)
    assert sum(b.num_rows for b in task()) == 200


def test_pushdown_reaches_the_database_and_results_stay_exact(db, capsys):
    ran: list[str] = []

    def traced():
        conn = sqlite3.connect(db)
        conn.set_trace_callback(ran.append)
        return conn

    ds = (
        df.read_sql("SELECT * FROM t", traced)
        .filter(expr="(id >= 150 and name == 'name0') or id < 2")
        .filter(expr="score * 2 >= 2")  # arithmetic: applied to the fetched rows only
        .select_columns(["id"])
    )
    want = [(i,) for i in range(150, 200) if i % 3 == 0]  # id < 2 fails score * 2 >= 2
    assert _rows(ds) == want
    (query,) = [q for q in ran if q.startswith("SELECT id")]
    assert query == (
        "SELECT id, name, score FROM (SELECT * FROM t) AS T WHERE "
        "(((id >= 150) AND (name = 'name0')) OR (id < 2))"
    )
    ds.explain()
    scans = capsys.readouterr().out.split("-- Scans --")[1]
    assert "read_sql: SELECT id, name, score FROM (SELECT * FROM t) AS T WHERE" in scans
    ctx = DataContext.get_current()
    old, ctx.optimizer_flags = ctx.optimizer_flags, df.OptimizerFlags.none()
    try:
        assert _rows(ds) == want
    finally:
        ctx.optimizer_flags = old
    assert len(df.read_sql("SELECT * FROM t", traced).limit(3).take_all()) == 3


def test_filter_translation_keeps_a_superset():
    assert filter_to_sql(col("a") > 1) == "(a > 1)"
    assert filter_to_sql(3 < col("a")) == "(a > 3)"
    assert filter_to_sql(col("s").is_in(["x", "it's"])) == "(s IN ('x', 'it''s'))"
    assert filter_to_sql(col("s").is_not_null()) == "(s IS NOT NULL)"
    # Unsafe across databases: string ranges (collations), != on strings, NOT, is_null (NaN).
    assert filter_to_sql(col("s") < "m") is None
    assert filter_to_sql(col("s") != "m") is None
    assert filter_to_sql(~(col("a") > 1)) is None
    assert filter_to_sql(col("a").is_null()) is None
    assert filter_to_sql((col("a") > 1) | (col("s") < "m")) is None
    assert filter_to_sql((col("a") > 1) & (col("s") < "m")) == "(a > 1)"
    assert filter_to_sql(col("s") == "back\\slash") is None
    assert filter_to_sql(col("s") == "5%", has_params=True) is None
    assert filter_to_sql(col("my col") == 1) == '("my col" = 1)'


def test_write_sql_round_trip_and_failed_task_rolls_back(db):
    factory = lambda: sqlite3.connect(db)  # noqa: E731
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE out (id INTEGER PRIMARY KEY, name TEXT, w REAL)")
    conn.commit()
    conn.close()
    rows = [{"id": i, "name": f"r{i}", "w": i / 4} for i in range(2500)]
    df.from_items(rows, override_num_blocks=3).write_sql(
        "INSERT INTO out VALUES (?, ?, ?)", factory
    )
    back = df.read_sql("SELECT * FROM out", factory).take_all()
    assert sorted(back, key=lambda r: r["id"]) == rows

    dup = [{"id": 10_000 + i, "name": "new", "w": 0.0} for i in range(5)] + [rows[0]]
    with pytest.raises(
        SourceError, match="write_sql: inserting rows 0..5 of task 0 failed"
    ) as info:
        df.from_items(dup, override_num_blocks=1).write_sql(
            "INSERT INTO out VALUES (?, ?, ?)", factory
        )
    assert "UNIQUE constraint failed" in str(info.value)
    assert df.read_sql("SELECT COUNT(*) AS n FROM out", factory).take_all() == [{"n": 2500}]


def test_errors_name_the_query_and_hide_passwords(db, tmp_path):
    factory = lambda: sqlite3.connect(db)  # noqa: E731
    with pytest.raises(SourceError, match="no such table: missing") as info:
        df.read_sql("SELECT * FROM missing", factory).take_all()
    assert "query: SELECT * FROM (SELECT * FROM missing) AS T" in str(info.value)

    dsn = "postgresql://etl:hunter2@db.internal:5432/app"

    def refuses():
        raise sqlite3.OperationalError(f"could not connect to {dsn}: connection refused")

    for run in (
        lambda: df.read_sql("SELECT * FROM t", refuses).take_all(),
        lambda: df.from_items([{"a": 1}]).write_sql("INSERT INTO t VALUES (?)", refuses),
        lambda: df.read_sql(
            "SELECT * FROM t",
            lambda: sqlite3.connect(f"{tmp_path}/no/such/dir/x.db?password=hunter2"),
        ).take_all(),
    ):
        with pytest.raises(SourceError) as info:
            run()
        text = str(info.value)
        assert "hunter2" not in text and "hunter2" not in info.value.path
        assert info.value.__cause__ is None or "hunter2" not in str(info.value.__cause__)
    assert "could not connect to postgresql://etl:***@db.internal:5432/app" in str(
        pytest.raises(SourceError, lambda: df.read_sql("SELECT 1", refuses).take_all()).value
    )

    with pytest.raises(TypeError, match="connection_factory must be a callable"):
        df.read_sql("SELECT 1", "sqlite:///x.db")
    with pytest.raises(df.UserCodeError, match="returned a 'object' object without cursor") as err:
        df.read_sql("SELECT 1", lambda: object()).take_all()
    assert isinstance(err.value.__cause__, TypeError)
    with pytest.raises(ValueError, match="non-empty query"):
        df.read_sql("  ", factory)
