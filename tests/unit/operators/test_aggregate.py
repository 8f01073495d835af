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


# -- the user-defined aggregation protocol, checked on random inputs (property-based) ---------
import pickle

from hypothesis import given, settings, strategies as st

from examples.custom_aggregation import Spread
from operators import ApproxDistinct, ApproxQuantile, Collect, TopK

PROTOCOL = [Count(), Sum("x"), Min("x"), Max("x"), Mean("x"), Last("x"), Collect("x", limit=7),
            TopK("x", k=3), ApproxDistinct("x"), ApproxQuantile("x", 0.5), ApproxQuantile("x", 0.9),
            Spread("x")]
values = st.lists(st.one_of(st.none(), st.integers(-1000, 1000)), max_size=60)


def _same(a, b):
    return a == pytest.approx(b) if isinstance(a, float) and isinstance(b, float) else a == b


@pytest.mark.parametrize("agg", PROTOCOL, ids=lambda a: a.name)
@settings(max_examples=150, deadline=None)
@given(xs=values, ys=values)
def test_merge_of_adds_equals_add_of_concatenation(agg, xs, ys):
    """merge(add(a), add(b)) == add(a + b), and merge leaves its arguments unchanged."""
    ex = [agg.extract({"x": v}, ts) for ts, v in enumerate(xs)]
    ey = [agg.extract({"x": v}, len(xs) + ts) for ts, v in enumerate(ys)]
    a, b = _run(agg, ex), _run(agg, ey)
    before = (agg.result(a), agg.result(b))
    merged = agg.merge(a, b)
    assert _same(agg.result(merged), agg.result(_run(agg, ex + ey)))
    assert _same(agg.result(a), before[0]) and _same(agg.result(b), before[1])
    restored = pickle.loads(pickle.dumps(merged))  # accumulators travel by pickle
    assert _same(agg.result(restored), agg.result(merged))


@settings(max_examples=50, deadline=None)
@given(parts=st.lists(st.lists(st.integers(0, 5000), max_size=400), min_size=1, max_size=5))
def test_sketches_stay_within_their_error_bounds_when_merged(parts):
    d, q = ApproxDistinct("x"), ApproxQuantile("x", 0.5)
    accs = [(_run(d, p), _run(q, [float(v) for v in p])) for p in parts]
    dist, quant = accs[0]
    for a, b in accs[1:]:
        dist, quant = d.merge(dist, a), q.merge(quant, b)
    everything = sorted(v for p in parts for v in p)
    assert abs(d.result(dist) - len(set(everything))) <= max(2, 0.05 * len(set(everything)))
    if len(everything) >= 40:  # the median's rank range (ties span one) must come within 5% of 0.5
        median = q.result(quant)
        below = sum(v < median for v in everything) / len(everything)
        up_to = sum(v <= median for v in everything) / len(everything)
        assert below - 0.05 <= 0.5 <= up_to + 0.05, (below, up_to)


def test_collect_and_top_k_results():
    c, t = Collect("x", limit=3), TopK("x", k=2)
    assert c.result(c.merge(_run(c, [1, 2]), _run(c, [3, 4]))) == [1, 2, 3]
    assert t.result(_run(t, ["a", "b", "b", "c", "c", None])) == ["b", "c"]
