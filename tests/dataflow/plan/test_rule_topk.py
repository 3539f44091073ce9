"""The topk rule: Limit[n] over Sort -> Sort[limit=n]."""

from __future__ import annotations

from dataflow.plan.logical import InputData, Limit, Sort
from dataflow.plan.rules import topk


def _sort(limit: int | None = None) -> Sort:
    return Sort(keys=("a",), descending=(True,), limit=limit, inputs=(InputData(blocks=()),))


def test_limit_over_sort_sets_the_sort_limit_and_stays_on_top():
    out = topk.apply(Limit(n=5, inputs=(_sort(),)))
    assert out == Limit(n=5, inputs=(_sort(5),))
    assert out.input.name == "sort(a, top 5)"


def test_topk_only_lowers_an_existing_limit_and_is_idempotent():
    plan = Limit(n=5, inputs=(_sort(3),))
    assert topk.apply(plan) is plan
    assert topk.apply(Limit(n=5, inputs=(_sort(9),))).input.limit == 5
    done = topk.apply(Limit(n=5, inputs=(_sort(),)))
    assert topk.apply(done) is done


def test_sort_without_a_limit_above_is_untouched():
    plan = _sort()
    assert topk.apply(plan) is plan
    assert topk.apply(plan).name == "sort(a)"
