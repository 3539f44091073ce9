"""Ray Data's calling conventions (dataflow/compat.py) and the parameters matched
for issue 20: each asserts the meaning the parameter has here, or the refusal."""

from __future__ import annotations

import pytest

import dataflow as df
from dataflow.compat import ActorPoolStrategy, TaskPoolStrategy, merge_remote_args, ray
from dataflow.errors import PlanError
from dataflow.plan.logical import MapBatches
from dataflow.plan.optimizer import optimize


@pytest.fixture(autouse=True)
def _inline():
    df.init("inline", num_cpus=2)
    yield
    df.shutdown()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"runtime_env": {"pip": ["x"]}}, "runtime_env=.*inherit this process's environment"),
        ({"label_selector": {"zone": "a"}}, "label_selector=.*selects Ray nodes by label"),
        ({"max_calls": 3}, "max_calls=3 restarts a Ray task worker"),
        ({"accelerator_type": "A100"}, "accelerator_type='A100' asks Ray for a GPU model"),
        ({"ray_remote_args_fn": dict}, "ray_remote_args_fn=.*computes Ray remote"),
        ({"scheduling_strategy": "SPREAD"}, "scheduling_strategy='SPREAD' places Ray tasks"),
        ({"max_retries": 2}, "ray_remote_args max_retries=2: dataflow retries every task"),
        (
            {"placement_group": 1},
            "ray_remote_args placement_group=1 is a Ray remote.. option with no meaning",
        ),
    ],
)
def test_ray_only_parameters_are_refused_by_name(kwargs, match):
    with pytest.raises(PlanError, match=r"^map\(<lambda>\): " + match):
        df.range(3).map(lambda r: r, **kwargs)


def test_ray_remote_args_reserve_resources():
    ds = df.range(3).map_batches(lambda b: b, num_gpus=0, ray_remote_args={"num_cpus": 2})
    assert ds._plan.resources.cpu == 2
    ds = df.range(3).map_batches(lambda b: b, memory=10, **{"num_cpus": 0.5})
    assert (ds._plan.resources.cpu, ds._plan.resources.memory) == (0.5, 10)
    with pytest.raises(PlanError, match="num_cpus is given twice"):
        merge_remote_args("m", {"num_cpus": 2}, num_cpus=1)


def test_compute_strategies_are_concurrency():
    fn = df.range(3).map_batches(lambda b: b, compute=TaskPoolStrategy(size=3))
    assert (fn._plan.compute.kind, fn._plan.compute.max_size) == ("tasks", 3)

    class Ident:
        def __call__(self, b):
            return b

    pool = df.range(3).map(Ident, compute=ActorPoolStrategy(size=2))
    assert (pool._plan.compute.kind, pool._plan.compute.min_size) == ("actors", 2)
    assert sorted(r["id"] for r in pool.take_all()) == [0, 1, 2]
    flight = df.range(3).map(Ident, compute=ActorPoolStrategy(max_tasks_in_flight_per_actor=1))
    assert flight._plan.compute.max_tasks_in_flight == 1
    with pytest.raises(PlanError, match="max_concurrent_calls_per_actor"):
        ActorPoolStrategy(max_concurrent_calls_per_actor=4)
    with pytest.raises(PlanError, match="a callable class runs on an actor pool"):
        df.range(3).map(Ident, compute=TaskPoolStrategy(2))


def test_renamed_keywords_warn_and_still_work():
    ds = df.range(10)
    with pytest.warns(FutureWarning, match=r"take\(n=...\) is deprecated: the keyword is now"):
        assert ds.take(n=2) == [{"id": 0}, {"id": 1}]
    with pytest.warns(FutureWarning):
        assert ds.limit(n=3).count() == 3
    with pytest.warns(FutureWarning):
        assert ds.with_column(name="y", expr=df.col("id") + 1).take(limit=1) == [{"id": 0, "y": 1}]
    with pytest.raises(TypeError, match="n is the old name of limit"):
        ds.take(n=1, limit=2)


def test_ray_keywords_take_limit_show(capsys):
    ds = df.range(100)
    assert ds.take(limit=3) == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert ds.limit(limit=4).count() == 4
    ds.show(limit=2)
    assert capsys.readouterr().out == "{'id': 0}\n{'id': 1}\n"
    assert ds.to_pandas(limit=100)["id"].sum() == 4950
    with pytest.raises(ValueError, match="more than the given limit of 99 rows"):
        ds.to_pandas(limit=99)


def test_with_column_and_with_columns():
    ds = df.range(4).with_column(column_name="y", expr=df.col("id") * 10)
    assert [r["y"] for r in ds.take_all()] == [0, 10, 20, 30]
    both = df.range(3).with_columns({"a": df.col("id") + 1}, {"b": "id * 2"})
    assert both.take_all() == [
        {"id": 0, "a": 1, "b": 0},
        {"id": 1, "a": 2, "b": 2},
        {"id": 2, "a": 3, "b": 4},
    ]
    with pytest.raises(PlanError, match="column 'a' is given twice"):
        df.range(3).with_columns({"a": "id"}, {"a": "id"})
    with pytest.raises(PlanError, match="num_cpus=2 has nothing to apply to"):
        df.range(3).with_column("a", "id", num_cpus=2)


def test_random_sample_is_deterministic_with_a_seed():
    ds = df.range(2000, override_num_blocks=4)
    a = [r["id"] for r in ds.random_sample(0.1, seed=0).take_all()]
    b = [r["id"] for r in ds.random_sample(0.1, seed=0).take_all()]
    c = [r["id"] for r in ds.random_sample(0.1, seed=1).take_all()]
    assert a == b and a != c
    assert 150 < len(a) < 250 and a == sorted(a)
    unseeded = ds.random_sample(0.5)
    assert unseeded.take_all() == unseeded.take_all()
    assert ds.random_sample(0.0, seed=3).count() == 0
    assert ds.random_sample(1.0, seed=3).count() == 2000
    with pytest.raises(PlanError, match=r"fraction must be in \[0, 1\], got 1.5"):
        ds.random_sample(1.5)


def test_udf_modifying_row_count_false_lets_a_limit_run_first():
    seen = []

    def tag(batch):
        seen.append(len(batch["id"]))
        return batch

    ds = df.range(1000, override_num_blocks=1)
    plan = optimize(ds.map_batches(tag, udf_modifying_row_count=False).limit(5)._plan)
    assert isinstance(plan, MapBatches)  # the limit moved below the map
    df.shutdown()
    df.init("inline", num_cpus=1)
    assert ds.map_batches(tag, udf_modifying_row_count=False).limit(5).count() == 5
    assert sum(seen) == 5
    kept = optimize(ds.map_batches(tag).limit(5)._plan)
    assert not isinstance(kept, MapBatches)


def test_schema_fetch_if_missing():
    ds = df.range(3).map(lambda r: {"x": r["id"]})
    assert ds.schema(fetch_if_missing=False) is None
    assert ds.columns(fetch_if_missing=False) is None
    assert ds.columns() == ["x"]
    assert df.range(3).columns(fetch_if_missing=False) == ["id"]


def test_ray_namespace_runs_a_ray_script():
    ds = ray.data.range(4).map(lambda r: {"id": r["id"] + 1})
    assert ray.is_initialized()
    assert ds.sum("id") == 10
