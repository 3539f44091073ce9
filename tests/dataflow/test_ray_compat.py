"""Ray Data API parity (issue 20): every Ray Data 2.60 function and method in
scope exists here with Ray's parameter names, order, kinds and defaults, or the
difference has a reason in dataflow/compat_reasons.py; docs/ray_compat.md is
what ``python -m dataflow.compat_report`` generates. Only imports ``ray.data``
and inspects signatures: no Ray cluster starts."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("ray.data", reason="the parity test compares with Ray Data (bench extra)")

from dataflow import compat_report  # noqa: E402


@pytest.fixture(scope="module")
def entries():
    return compat_report.compare()


def test_every_difference_has_a_reason(entries):
    missing = compat_report.unexplained(entries)
    assert missing == [], "differences from Ray Data with no reason in compat_reasons.py:\n" + (
        "\n".join(f"{d.key}: {d.what}" for d in missing)
    )


def test_no_reason_is_stale(entries):
    assert compat_report.stale_reasons(entries) == []


def test_generated_doc_is_current(entries):
    text = compat_report.render(entries)
    assert compat_report.DOC_PATH.read_text() == text, (
        "docs/ray_compat.md is stale: run python -m dataflow.compat_report"
    )


def test_the_everyday_apis_match_exactly(entries):
    by_api = {e.api: e for e in entries}
    exact = [
        "Dataset.map",
        "Dataset.flat_map",
        "Dataset.filter",
        "Dataset.with_column",
        "Dataset.with_columns",
        "Dataset.take",
        "Dataset.limit",
        "Dataset.show",
        "Dataset.to_pandas",
        "Dataset.repartition",
        "Dataset.groupby",
        "Dataset.sort",
        "Dataset.train_test_split",
        "Dataset.random_sample",
        "Dataset.schema",
        "Dataset.columns",
        "read_text",
        "read_images",
        "read_numpy",
        "read_binary_files",
        "read_orc",
    ]
    assert [a for a in exact if by_api[a].diffs] == []
    # map_batches differs only by a documented default; join only by two optional args.
    assert [d.key for d in by_api["Dataset.map_batches"].diffs] == [
        "Dataset.map_batches(zero_copy_batch)"
    ]
    assert {d.key for d in by_api["Dataset.join"].diffs} == {
        "Dataset.join(join_type)",
        "Dataset.join(num_partitions)",
    }


def test_compare_finds_each_kind_of_difference():
    def ray(a, b=1, *, c=None, **kw): ...

    def ours(a, c=None, *, b=2, d=0): ...

    entry = compat_report.compare_one("f", ray, ours)
    assert sorted((d.key, d.what) for d in entry.diffs) == [
        ("f(**kw)", "Ray Data takes **kw; dataflow does not"),
        ("f(b)", "default 1 in Ray Data, 2 here"),
        ("f(b)", "position 1 in Ray Data, not here"),
        ("f(b)", "positional in Ray Data, keyword-only here"),
    ]
    assert entry.extras == ("d",)
    assert compat_report.compare_one("g", ray, None).diffs[0].what == "missing in dataflow"
    assert inspect.isfunction(compat_report.ray_apis()["read_parquet"])
