"""The same mistake raises the same error, worded the same, in every method
(dataflow/validate.py). Before, an unknown column was a PlanError in
select_columns and filter but a KeyError in sort, groupby, join and unique; a
bad seed a ValueError in random_shuffle and a PlanError in random_sample; a
non-Dataset argument a TypeError in join and a PlanError in union."""

from __future__ import annotations

import pyarrow as pa
import pytest

import dataflow as df
from dataflow.aggregate import Sum

DS = df.from_arrow(pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]}))

UNKNOWN = "{}: unknown column 'zz'; available columns: a, b"
SEED = "{}: seed must be None or an int >= 0, got -1"
NOT_POSITIVE = "{}: {} must be an int >= 1, got 0"
NOT_A_DATASET = "{}: expected Dataset arguments, got list"
NOT_CALLABLE = "{}: fn must be a function or a callable class, got 5"
NOT_COLUMNS = "{}: expected a column name or a list of them, got [1]"

CASES = [
    (UNKNOWN.format("select_columns"), lambda: DS.select_columns(["a", "zz"])),
    (UNKNOWN.format("drop_columns"), lambda: DS.drop_columns("zz")),
    (UNKNOWN.format("rename_columns"), lambda: DS.rename_columns({"zz": "c"})),
    (UNKNOWN.format("sort"), lambda: DS.sort("zz")),
    (UNKNOWN.format("groupby"), lambda: DS.groupby("zz")),
    (UNKNOWN.format("groupby(a).aggregate"), lambda: DS.groupby("a").aggregate(Sum("zz"))),
    (UNKNOWN.format("aggregate"), lambda: DS.aggregate(Sum("zz"))),
    (UNKNOWN.format("sum"), lambda: DS.sum("zz")),
    (UNKNOWN.format("unique"), lambda: DS.unique("zz")),
    (UNKNOWN.format("join (left side)"), lambda: DS.join(DS, on="zz", right_on="a")),
    (UNKNOWN.format("repartition"), lambda: DS.repartition(2, keys=["zz"])),
    (UNKNOWN.format("summary"), lambda: DS.summary(columns=["zz"])),
    (SEED.format("random_shuffle"), lambda: DS.random_shuffle(seed=-1)),
    (SEED.format("randomize_block_order"), lambda: DS.randomize_block_order(seed=-1)),
    (SEED.format("random_sample"), lambda: DS.random_sample(0.5, seed=-1)),
    (
        SEED.format("streaming_train_test_split"),
        lambda: DS.streaming_train_test_split(0.5, seed=-1),
    ),
    (NOT_POSITIVE.format("repartition", "num_blocks"), lambda: DS.repartition(0)),
    (NOT_POSITIVE.format("random_shuffle", "num_blocks"), lambda: DS.random_shuffle(num_blocks=0)),
    (NOT_POSITIVE.format("groupby", "num_partitions"), lambda: DS.groupby("a", num_partitions=0)),
    (NOT_POSITIVE.format("join", "num_partitions"), lambda: DS.join(DS, on="a", num_partitions=0)),
    (NOT_POSITIVE.format("split", "n"), lambda: DS.split(0)),
    (NOT_POSITIVE.format("shard", "num_shards"), lambda: DS.shard(0, 0)),
    (
        NOT_POSITIVE.format("map_batches(<lambda>)", "batch_size"),
        lambda: DS.map_batches(lambda b: b, batch_size=0),
    ),
    (NOT_A_DATASET.format("union"), lambda: DS.union([1])),
    (NOT_A_DATASET.format("zip"), lambda: DS.zip([1])),
    (NOT_A_DATASET.format("join"), lambda: DS.join([1], on="a")),
    (NOT_CALLABLE.format("map"), lambda: DS.map(5)),
    (NOT_CALLABLE.format("add_column(c)"), lambda: DS.add_column("c", 5)),
    (NOT_CALLABLE.format("map_groups"), lambda: DS.groupby("a").map_groups(5)),
    (NOT_COLUMNS.format("select_columns"), lambda: DS.select_columns([1])),
    (NOT_COLUMNS.format("sort"), lambda: DS.sort([1])),
    (NOT_COLUMNS.format("groupby"), lambda: DS.groupby([1])),
    (NOT_COLUMNS.format("sum"), lambda: DS.sum([1])),
]


@pytest.mark.parametrize("message, call", CASES, ids=[m for m, _ in CASES])
def test_the_same_mistake_raises_the_same_error(message, call):
    with pytest.raises(df.PlanError) as info:
        call()
    assert str(info.value) == message


def test_unknown_column_in_an_expression_names_the_expression():
    with pytest.raises(df.PlanError, match=r"filter: unknown column 'zz' in expression .*; avail"):
        DS.filter(expr="zz > 1")


def test_an_unknown_column_found_at_run_time_is_the_same_error(backend):
    # The schema is not known before running (a UDF decides the columns): the
    # exchange finds the missing column in its tasks, and says it the same way.
    ds = DS.map_batches(lambda b: {"a": b["a"]})
    with pytest.raises(df.PlanError, match=r"sum\(zz\): unknown column 'zz'; available columns: a"):
        ds.aggregate(Sum("zz"))
