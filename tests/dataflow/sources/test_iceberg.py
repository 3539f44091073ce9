"""read_iceberg / write_iceberg against real Iceberg tables in a local SQL
(sqlite) catalog and warehouse, written by dataflow and by pyiceberg itself."""

from __future__ import annotations

import datetime
import os

import pyarrow as pa
import pytest

import dataflow as df
from dataflow.errors import SourceError, UserCodeError
from dataflow.expressions import col, parse
from dataflow.sources.iceberg import IcebergDatasource, to_iceberg

pytest.importorskip("pyiceberg")

from pyiceberg.catalog import load_catalog  # noqa: E402
from pyiceberg.partitioning import PartitionField, PartitionSpec  # noqa: E402
from pyiceberg.schema import Schema  # noqa: E402
from pyiceberg.transforms import IdentityTransform  # noqa: E402
from pyiceberg.types import (  # noqa: E402
    BooleanType,
    DateType,
    DoubleType,
    ListType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

UTC = datetime.timezone.utc

SCHEMA = Schema(
    NestedField(1, "id", LongType()),
    NestedField(2, "cat", StringType()),
    NestedField(3, "x", DoubleType()),
    NestedField(4, "day", DateType()),
    NestedField(5, "ts", TimestamptzType()),
    NestedField(6, "flag", BooleanType()),
    NestedField(7, "tags", ListType(8, LongType(), element_required=False)),
)


@pytest.fixture(autouse=True)
def inline_backend():
    df.init(backend="inline")
    yield
    df.shutdown()


@pytest.fixture
def catalog(tmp_path):
    """``(pyiceberg catalog, its catalog_kwargs)``: sqlite + a local warehouse."""
    kwargs = {
        "name": "test",
        "type": "sql",
        "uri": f"sqlite:///{tmp_path}/catalog.db",
        "warehouse": f"file://{tmp_path}/warehouse",
    }
    props = {k: v for k, v in kwargs.items() if k != "name"}
    cat = load_catalog("test", **props)
    cat.create_namespace("db")
    return cat, kwargs


def sample(n: int = 30, start: int = 0) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "cat": pa.array([["a", "b", "c"][i % 3] for i in ids], pa.large_string()),
            "x": pa.array([i * 0.5 for i in ids]),
            "day": pa.array([datetime.date(2024, 1, 1 + i % 2) for i in ids]),
            "ts": pa.array(
                [datetime.datetime(2024, 1, 1, 0, 0, i % 60, 123456, tzinfo=UTC) for i in ids],
                pa.timestamp("us", tz="UTC"),
            ),
            "flag": pa.array([i % 2 == 0 for i in ids]),
            "tags": pa.array([[i, i + 1] for i in ids], pa.large_list(pa.int64())),
        }
    )


def by_id(table: pa.Table) -> pa.Table:
    return table.sort_by("id")


def read(kwargs, **options) -> df.Dataset:
    return df.read_iceberg(table_identifier="db.t", catalog_kwargs=kwargs, **options)


def warehouse_files(tmp_path) -> dict[str, bytes]:
    out = {}
    for root, _, names in os.walk(tmp_path / "warehouse"):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, tmp_path)] = f.read()
    return out


def test_roundtrip_is_exact_and_pyiceberg_reads_it(catalog):
    cat, kwargs = catalog
    cat.create_table("db.t", schema=SCHEMA)
    table = sample()
    df.from_arrow(table).repartition(3).write_iceberg("db.t", kwargs)
    back = read(kwargs).to_arrow()
    assert by_id(back).cast(table.schema).equals(table)
    # One commit: one snapshot, and pyiceberg reads the same rows.
    t = cat.load_table("db.t")
    assert len(t.metadata.snapshots) == 1
    assert by_id(t.scan().to_arrow()).cast(table.schema).equals(table)
    assert read(kwargs).count() == 30  # from the manifests


def test_reads_a_table_written_by_pyiceberg(catalog):
    cat, kwargs = catalog
    t = cat.create_table("db.t", schema=sample().schema)
    t.append(sample(20))
    t.append(sample(10, start=20))
    assert by_id(read(kwargs).to_arrow()).equals(sample(30))
    rows = read(kwargs, row_filter="id >= 25", selected_fields=("id",)).take_all()
    assert sorted(r["id"] for r in rows) == list(range(25, 30))


def test_schema_evolution_reads_by_field_id(catalog):
    cat, kwargs = catalog
    t = cat.create_table("db.t", schema=pa.schema([("id", pa.int64()), ("x", pa.float64())]))
    t.append(pa.table({"id": [1, 2], "x": [0.5, 1.5]}))
    with t.update_schema() as update:
        update.rename_column("x", "y")
        update.add_column("z", StringType())
    t = cat.load_table("db.t")
    t.append(pa.table({"id": [3], "y": [2.5], "z": ["new"]}))
    rows = sorted(read(kwargs).take_all(), key=lambda r: r["id"])
    assert rows == [
        {"id": 1, "y": 0.5, "z": None},
        {"id": 2, "y": 1.5, "z": None},
        {"id": 3, "y": 2.5, "z": "new"},
    ]
    ds = read(kwargs).filter(expr=(col("y") > 1) & col("z").is_null()).select_columns(["id"])
    assert ds.take_all() == [{"id": 2}]


def test_snapshots_time_travel(catalog):
    cat, kwargs = catalog
    cat.create_table("db.t", schema=SCHEMA)
    df.from_arrow(sample(10)).write_iceberg("db.t", kwargs)
    df.from_arrow(sample(5, start=10)).write_iceberg("db.t", kwargs)
    df.from_arrow(sample(3, start=100)).write_iceberg("db.t", kwargs, mode="overwrite")
    snapshots = [s.snapshot_id for s in cat.load_table("db.t").metadata.snapshots]
    # The overwrite is one commit too: its delete and its append share the transaction.
    ids = [sorted(r["id"] for r in read(kwargs, snapshot_id=s).take_all()) for s in snapshots]
    assert ids[0] == list(range(10))
    assert ids[1] == list(range(15))
    assert ids[-1] == [100, 101, 102]
    assert sorted(r["id"] for r in read(kwargs).take_all()) == [100, 101, 102]


def test_row_filter_and_pushed_filter_prune_files(catalog):
    cat, kwargs = catalog
    spec = PartitionSpec(PartitionField(2, 1000, IdentityTransform(), "cat"))
    cat.create_table("db.t", schema=SCHEMA, partition_spec=spec)
    # 4 tasks of sorted ids x 3 partitions: 12 data files.
    df.from_arrow(sample(120)).repartition(4).write_iceberg("db.t", kwargs)
    source = IcebergDatasource("db.t", catalog_kwargs=kwargs)
    files = lambda **p: {f for t in source.iter_read_tasks(4, **p) for f in t.metadata.input_files}  # noqa: E731
    assert len(files()) == 12
    # Column metrics: ids < 30 live in the first task's 3 files only.
    assert len(files(filter=col("id") < 30)) == 3
    # Partitions: one category, 4 files; both: 1 file.
    assert len(files(filter=col("cat") == "b")) == 4
    assert len(files(filter=(col("cat") == "b") & (col("id") < 30))) == 1
    text = source.explain_read(filter=(col("cat") == "b") & (col("id") < 30))
    assert "files 1 of 12 (11 pruned by partitions and metrics)" in text
    # row_filter at read time prunes the same way.
    pruned = IcebergDatasource("db.t", catalog_kwargs=kwargs, row_filter="cat = 'b'")
    assert len({f for t in pruned.iter_read_tasks(4) for f in t.metadata.input_files}) == 4
    # Exact rows, with an arithmetic part Iceberg cannot evaluate applied to the rows.
    ds = read(kwargs).filter(expr="id % 10 == 0 and cat == 'a'").select_columns(["id"])
    assert sorted(r["id"] for r in ds.take_all()) == [i for i in range(0, 120, 30)]
    # A limit pushed down with such a filter counts the rows after it.
    assert read(kwargs).filter(expr="id % 10 == 0").limit(5).count() == 5
    assert read(kwargs).filter(expr="id >= 100").limit(5).count() == 5


def test_explain_shows_the_pushdown(catalog, capsys):
    cat, kwargs = catalog
    cat.create_table("db.t", schema=SCHEMA)
    df.from_arrow(sample(40)).repartition(4).write_iceberg("db.t", kwargs)
    read(kwargs).filter(expr="id < 10 and id % 2 == 0").select_columns(["x"]).explain()
    text = capsys.readouterr().out
    scans = text.split("-- Scans --\n")[1].split("\n")[0]
    assert scans.startswith("read_iceberg: snapshot ")
    assert "files 1 of 4 (3 pruned by partitions and metrics), columns [x]" in scans
    assert "row_filter LessThan(term=Reference(name='id'), literal=LongLiteral(10))" in scans
    assert scans.endswith("then filter (id < 10) & (id % 2 == 0) on the rows")


def test_filter_translation_keeps_only_what_iceberg_can_evaluate():
    from pyiceberg.expressions import And, EqualTo, GreaterThan, In, IsNaN, IsNull, Not, Or

    schema = Schema(NestedField(1, "a", LongType()), NestedField(2, "f", DoubleType()))
    assert to_iceberg(parse("a > 3"), schema) == (GreaterThan("a", 3), True)
    assert to_iceberg(parse("3 < a"), schema) == (GreaterThan("a", 3), True)
    assert to_iceberg(col("a").is_in([1, 2]), schema) == (In("a", {1, 2}), True)
    assert to_iceberg(col("f").is_null(), schema) == (Or(IsNull("f"), IsNaN("f")), True)
    assert to_iceberg(~(col("a") == 1), schema) == (Not(EqualTo("a", 1)), True)
    # An & keeps the part it can translate, marked inexact; | and ~ need all of it.
    assert to_iceberg(parse("a > 3 and a % 2 == 0"), schema) == (GreaterThan("a", 3), False)
    assert to_iceberg(parse("a > 3 or a % 2 == 0"), schema) is None
    assert to_iceberg(~parse("a > 3 and a % 2 == 0"), schema) is None
    assert to_iceberg(col("zz") == 1, schema) is None
    both = to_iceberg(parse("a > 3 and f == 1.5"), schema)
    assert both == (And(GreaterThan("a", 3), EqualTo("f", 1.5)), True)


def test_failed_write_commits_nothing_and_leaves_no_file(catalog, tmp_path):
    cat, kwargs = catalog
    cat.create_table("db.t", schema=SCHEMA)
    df.from_arrow(sample(10)).write_iceberg("db.t", kwargs)
    before = warehouse_files(tmp_path)
    snapshot = cat.load_table("db.t").current_snapshot().snapshot_id

    def fail_on_7th(batch):
        if batch["id"][0].as_py() == 6:
            raise ValueError("bad block 7")
        return batch

    for mode in ("append", "overwrite"):
        with pytest.raises(UserCodeError, match="bad block 7"):
            df.from_arrow(sample(10)).repartition(10).map_batches(
                fail_on_7th, batch_format="pyarrow"
            ).write_iceberg("db.t", kwargs, mode=mode)
        assert cat.load_table("db.t").current_snapshot().snapshot_id == snapshot
        assert warehouse_files(tmp_path) == before


def test_write_errors(catalog):
    cat, kwargs = catalog
    with pytest.raises(SourceError, match="no Iceberg table 'db.t' in catalog 'test'"):
        df.from_arrow(sample(3)).write_iceberg("db.t", kwargs)
    cat.create_table("db.t", schema=SCHEMA)
    with pytest.raises(UserCodeError, match=r"columns \['zz'\] are not in the Iceberg table"):
        df.from_arrow(sample(3).append_column("zz", pa.array([1, 2, 3]))).write_iceberg(
            "db.t", kwargs
        )
    with pytest.raises(ValueError, match="mode must be one of"):
        df.from_arrow(sample(3)).write_iceberg("db.t", kwargs, mode="upsert")
    # A missing nullable column is written as nulls; int32 data widens to long.
    small = pa.table({"id": pa.array([7], pa.int32()), "cat": ["q"]})
    df.from_arrow(small).write_iceberg("db.t", kwargs)
    assert read(kwargs, selected_fields=("id", "cat", "x")).take_all() == [
        {"id": 7, "cat": "q", "x": None}
    ]


def test_read_errors_name_the_table_not_the_secrets(catalog):
    cat, kwargs = catalog
    with pytest.raises(SourceError, match="no Iceberg table 'db.t' in catalog 'test'") as info:
        read(kwargs)
    assert info.value.path == "db.t"
    secret = {"name": "r", "type": "rest", "uri": "http://127.0.0.1:9", "token": "sekrit-tok"}
    with pytest.raises(SourceError, match="cannot load Iceberg table 'db.t'") as info:
        df.read_iceberg(table_identifier="db.t", catalog_kwargs=secret)
    assert "sekrit-tok" not in str(info.value)
    cat.create_table("db.t", schema=SCHEMA)
    df.from_arrow(sample(3)).write_iceberg("db.t", kwargs)
    with pytest.raises(SourceError, match="has no snapshot 42; its snapshots: "):
        read(kwargs, snapshot_id=42)
    with pytest.raises(SourceError, match="cannot parse row_filter"):
        read(kwargs, row_filter="id <<< 3")
    with pytest.raises(SourceError, match="zz"):
        read(kwargs, selected_fields=("zz",)).take_all()
    with pytest.raises(SourceError, match="has no Iceberg form"):
        read(kwargs, row_filter=col("id") % 2 == 0)
    # A dataflow expression Iceberg can evaluate is a valid row_filter.
    assert read(kwargs, row_filter=col("id") >= 1).count() == 2


def test_read_and_write_on_worker_processes(catalog):
    df.shutdown()
    df.init(backend="local", num_cpus=2)
    cat, kwargs = catalog
    cat.create_table("db.t", schema=SCHEMA)
    df.from_arrow(sample(100)).repartition(4).write_iceberg("db.t", kwargs)
    ds = read(kwargs).filter(expr="id % 25 == 0").select_columns(["id", "cat"])
    assert sorted(r["id"] for r in ds.take_all()) == [0, 25, 50, 75]
