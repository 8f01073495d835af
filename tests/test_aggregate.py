"""Merging partials must equal aggregating everything at once, however the input is split."""

import random

import pytest

from operators import Count, Last, Max, Mean, Min, Sum


def _run(agg, values):
    return agg.add(agg.create(), values)


@pytest.mark.parametrize("agg", [Count(), Sum("x"), Min("x"), Max("x"), Mean("x"), Last("x")],
                         ids=lambda a: a.name)
def test_merge_of_random_splits_equals_sequential(agg):
    rng = random.Random(42)
    for _ in range(200):
        recs = [{"x": rng.choice([None, rng.randint(-50, 50)])} for _ in range(rng.randint(0, 30))]
        values = [agg.extract(r, ts) for ts, r in enumerate(recs)]
        whole = agg.result(_run(agg, values))
        cuts = sorted(rng.sample(range(len(values) + 1), k=min(3, len(values) + 1)))
        parts = [values[a:b] for a, b in zip([0] + cuts, cuts + [len(values)])]
        acc = agg.create()
        for part in parts:
            acc = agg.merge(acc, _run(agg, part))
        assert agg.result(acc) == pytest.approx(whole) if whole is not None else agg.result(acc) is None


def test_results_and_nulls():
    vals = [3, None, 1, 2]
    assert Count().result(_run(Count(), vals)) == 4
    assert Sum("x").result(_run(Sum("x"), vals)) == 6
    assert Min("x").result(_run(Min("x"), vals)) == 1
    assert Max("x").result(_run(Max("x"), [None])) is None
    assert Mean("x").result(_run(Mean("x"), vals)) == 2
    assert Mean("x").result(Mean("x").create()) is None


def test_last_takes_latest_event_time_not_arrival():
    last = Last("m")
    acc = _run(last, [last.extract({"m": "late-arriving-old"}, 50), last.extract({"m": "newest"}, 100)])
    acc = last.merge(acc, _run(last, [last.extract({"m": "older"}, 70)]))
    assert last.result(acc) == "newest"


def test_names_are_stable():
    assert Sum("amount").name == "sum(amount)" and Count().name == "count()"
