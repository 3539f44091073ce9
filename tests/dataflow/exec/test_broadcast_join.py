"""The broadcast join: a small right side joined to each left block. Its rows
must be exactly the hash join's (the same multiset, columns, names and types),
in left order, on every backend; the planner picks it only where it applies."""

from __future__ import annotations

import datetime

import numpy as np
import pyarrow as pa
import pytest

import dataflow as df
from dataflow.context import DataContext
from dataflow.exec.operators import broadcast_join


@pytest.fixture
def ctx():
    """The live context, restored after the test."""
    ctx = DataContext.get_current()
    saved = ctx.broadcast_join_max_bytes
    yield ctx
    ctx.broadcast_join_max_bytes = saved


def _rows(ds: df.Dataset) -> list[tuple]:
    return [tuple(r.values()) for r in ds.take_all()]


def _physical(ds: df.Dataset, capsys) -> str:
    ds.explain()
    return capsys.readouterr().out.split("-- Physical plan --")[1]


def _sides(kind: str, rng: np.random.Generator) -> tuple[pa.Table, pa.Table]:
    """A left side of 600 rows in 3 blocks' worth and a right side of 80 rows,
    duplicate and null keys on both sides, a clashing column name."""
    lk = rng.integers(0, 40, 600)
    rk = rng.integers(0, 50, 80)
    lnull = rng.random(600) < 0.05
    rnull = rng.random(80) < 0.05
    if kind == "int32-int64":
        lkeys = pa.array(lk, pa.int32(), mask=lnull)
        rkeys = pa.array(rk, pa.int64(), mask=rnull)
    elif kind == "string":
        lkeys = pa.array([f"k{v}" for v in lk], mask=lnull)
        rkeys = pa.array([f"k{v}" for v in rk], mask=rnull)
    elif kind == "dictionary":
        lkeys = pa.array([f"k{v}" for v in lk], mask=lnull).dictionary_encode()
        rkeys = pa.array([f"k{v}" for v in rk], mask=rnull)
    else:  # timestamp
        base = datetime.datetime(2026, 1, 1)
        lkeys = pa.array(
            [base + datetime.timedelta(hours=int(v)) for v in lk], pa.timestamp("us"), mask=lnull
        )
        rkeys = pa.array(
            [base + datetime.timedelta(hours=int(v)) for v in rk], pa.timestamp("us"), mask=rnull
        )
    left = pa.table({"id": np.arange(600), "k": lkeys, "x": rng.random(600)})
    right = pa.table(
        {"k": rkeys, "x": rng.integers(0, 1000, 80), "tag": [f"t{i}" for i in range(80)]}
    )
    return left, right


@pytest.mark.parametrize("kind", ["int32-int64", "string", "dictionary", "timestamp"])
@pytest.mark.parametrize("how", ["inner", "left_outer"])
def test_broadcast_rows_are_the_hash_joins_in_left_order(backend, ctx, capsys, kind, how):
    left, right = _sides(kind, np.random.default_rng(7))
    lds = df.from_arrow([left.slice(0, 200), left.slice(200, 250), left.slice(450)])
    rds = df.from_arrow([right.slice(0, 30), right.slice(30)])
    broadcast = lds.join(rds, how, on=("k",))
    assert "broadcast_join(" in _physical(broadcast, capsys)
    got = broadcast.to_arrow()
    ctx.broadcast_join_max_bytes = 0
    if kind == "dictionary":  # the hash join cannot unify the blocks' dictionaries
        decoded = left.set_column(1, "k", left.column("k").cast(pa.string()))
        lds = df.from_arrow([decoded.slice(0, 200), decoded.slice(200, 250), decoded.slice(450)])
    hashed = lds.join(rds, how, on=("k",))
    assert "broadcast_join(" not in _physical(hashed, capsys)
    want = hashed.to_arrow()
    if kind == "dictionary":
        assert got.schema.field("k").type == pa.dictionary(pa.int32(), pa.string())
        got = got.set_column(1, "k", got.column("k").cast(pa.string()))
    assert got.schema == want.schema  # left columns, then the right's (x -> x_right)
    assert got.column_names == ["id", "k", "x", "x_right", "tag"]
    assert sorted(map(str, got.to_pylist())) == sorted(map(str, want.to_pylist()))
    ids = got.column("id").to_pylist()
    assert ids == sorted(ids)  # left order; a left row's matches together
    # Each left row's matches in right order; null keys never match.
    tags: dict[int, list[int]] = {}
    for i, tag in zip(ids, got.column("tag").to_pylist()):
        tags.setdefault(i, []).append(-1 if tag is None else int(tag[1:]))
    assert all(t == sorted(t) for t in tags.values())
    expected_left_rows = 600 if how == "left_outer" else len(set(ids))
    assert len(set(ids)) == expected_left_rows


def test_planner_broadcasts_only_where_it_applies(ctx, capsys):
    left = df.from_arrow(pa.table({"k": [1, 2, 3], "j": [1, 1, 2], "a": [1, 2, 3]}))
    right = df.from_arrow(pa.table({"k": [1, 2], "j": [1, 1], "b": [5, 6]}))
    assert "broadcast_join(inner, on=k)" in _physical(left.join(right, on="k"), capsys)
    assert "broadcast_join(left" in _physical(left.join(right, "left_outer", on="k"), capsys)
    # Ray Data's calls always pass num_partitions: the width of an exchange, when one runs.
    assert "broadcast_join(" in _physical(left.join(right, "inner", 4, on="k"), capsys)
    for hashed in (
        left.join(right, "right_outer", on="k"),  # unmatched right rows: needs all left blocks
        left.join(right, "full_outer", on="k"),
        left.join(right, on=("k", "j")),  # several keys
        left.join(right.map_batches(lambda b: b), on="k"),  # right side's size unknown
    ):
        assert "broadcast_join(" not in _physical(hashed, capsys)
    ctx.broadcast_join_max_bytes = 2 * 17  # two int64 columns and validity: 2 rows x 25 B
    assert "broadcast_join(" not in _physical(left.join(right, on="k"), capsys)
    ctx.broadcast_join_max_bytes = 2 * 26
    assert "broadcast_join(" in _physical(left.join(right, on="k"), capsys)


def test_a_broadcast_join_frees_its_blocks_and_its_probe(backend, capsys):
    before = backend.store_stats().num_objects
    left = df.range(10_000, override_num_blocks=8).with_column("k", df.col("id") % 100)
    right = df.range(100).with_column("k", df.col("id")).with_column("w", df.col("id") * 2)
    out = left.join(right.select_columns(["k", "w"]), on="k")
    assert "broadcast_join(inner, on=k)" in _physical(out, capsys)
    rows = out.take_all()
    assert [r["id"] for r in rows] == list(range(10_000))
    assert all(r["w"] == 2 * (r["id"] % 100) for r in rows)
    assert backend.store_stats().num_objects == before
    assert not broadcast_join._PROBES  # in-process tasks: the probe went with the run


def test_a_key_that_cannot_be_compared_names_the_operator(backend):
    left = df.from_arrow(pa.table({"k": [1, 2]}))
    right = df.from_arrow(pa.table({"k": ["one", "two"], "v": [1, 2]}))
    with pytest.raises(df.DataflowError, match=r"broadcast_join\(inner, on=k\)") as info:
        left.join(right, on="k").take_all()
    assert "as a scalar of type int64" in str(info.value)  # Arrow's cast error, kept


def test_probe_joins_many_to_many_and_keeps_left_rows():
    right = pa.table({"k": [3, 1, 3, None], "v": ["a", "b", "c", "d"]})
    left = pa.table({"k": pa.array([3, None, 2, 1]), "i": [0, 1, 2, 3]})
    probe = broadcast_join.Probe(right, ["k"], "left", "_r", left.schema)
    assert probe.join(left).to_pydict() == {
        "k": [3, 3, None, 2, 1],
        "i": [0, 0, 1, 2, 3],
        "v": ["a", "c", None, None, "b"],
    }
    probe = broadcast_join.Probe(right, ["k"], "inner", "_r", left.schema)
    assert probe.join(left).to_pydict() == {"k": [3, 3, 1], "i": [0, 0, 3], "v": ["a", "c", "b"]}
    assert probe.join(left.slice(1, 2)).num_rows == 0


def test_probe_of_an_empty_or_all_null_right_side():
    left = pa.table({"k": [1, 2], "i": [0, 1]})
    for right in (
        pa.table({"k": pa.array([], pa.int64()), "v": pa.array([], pa.string())}),
        pa.table({"k": pa.array([None, None], pa.int64()), "v": ["a", "b"]}),
    ):
        probe = broadcast_join.Probe(right, ["k"], "left", "_r", left.schema)
        assert probe.join(left).to_pydict() == {"k": [1, 2], "i": [0, 1], "v": [None, None]}
        probe = broadcast_join.Probe(right, ["k"], "inner", "_r", left.schema)
        out = probe.join(left)
        assert out.num_rows == 0 and out.column_names == ["k", "i", "v"]


def test_driver_tasks_share_one_probe_and_only_the_first_carries_the_right_side(
    backend, monkeypatch
):
    launched: list[tuple[int, bool]] = []
    real = broadcast_join.BroadcastJoinOperator._launch

    def spy(self, bundle, refs, args):
        launched.append((len(refs) - args[0], args[2]))  # right refs carried, carries_right
        return real(self, bundle, refs, args)

    monkeypatch.setattr(broadcast_join.BroadcastJoinOperator, "_launch", spy)
    left = df.range(4_000, override_num_blocks=8).with_column("k", df.col("id") % 10)
    right = df.from_arrow([pa.table({"k": [i], "w": [i * i]}) for i in range(10)])
    rows = left.join(right, on="k").take_all()
    assert [(r["id"], r["w"]) for r in rows] == [(i, (i % 10) ** 2) for i in range(4_000)]
    if backend.driver_threads:  # one process: the first task builds, the others reuse
        assert launched[0] == (10, True) and launched[1:] == [(0, False)] * 7
    else:  # every task may land in another process
        assert launched == [(10, True)] * 8


def test_a_write_after_a_broadcast_join_runs_in_its_tasks(backend, ctx, capsys, tmp_path):
    import json

    import pyarrow.parquet as pq

    left, right = _sides("string", np.random.default_rng(3))
    lds = df.from_arrow([left.slice(0, 200), left.slice(200, 250), left.slice(450)])
    joined = lds.join(df.from_arrow([right]), "left_outer", on=("k",))
    assert "broadcast_join(" in _physical(joined, capsys)
    joined.write_parquet(str(tmp_path))
    stats = joined._last_stream.stats()
    (op,) = [o for o in stats.operators if "write" in o.name]
    with open(tmp_path / "_SUCCESS") as f:
        files = [e["path"] for e in json.load(f)["files"]]
    written = pa.concat_tables(pq.read_table(tmp_path / name) for name in files)
    assert written.to_pylist() == joined.to_arrow().to_pylist()  # left order, every row
    (write,) = op.steps
    assert write.rows_written == written.num_rows
    if backend.driver_threads:
        assert op.name.startswith("broadcast_join(") and op.name.endswith("->write_parquet")
        assert len(files) == write.files == 3  # one per left block: a task each
    else:  # on Ray every task builds its own probe: the write keeps its own tasks
        assert op.name == "write_parquet"
