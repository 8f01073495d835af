"""The README's timeline, and the rule behind it: results and late records are the same
however a partition's records are cut into ranges."""

from itertools import combinations

import pytest
from helpers import payment_pipeline

from stream.testing import TestDriver

TIMELINE = [1_000, 4_000, 11_000, 3_000, 13_000, 9_000, 12_500, 25_000]


def pay(i, ts):
    return {"payment_id": str(i), "user_id": "u", "merchant_id": "m", "amount": 1.0,
            "currency": "EUR", "country": "DE", "ts": ts}


def cuts(n):
    """Every way to cut n records into consecutive ranges (as bounds)."""
    for k in range(n):
        for inner in combinations(range(1, n), k):
            yield (0, *inner, n)


@pytest.mark.parametrize("bounds", list(cuts(len(TIMELINE))))
def test_the_readme_timeline_holds_however_the_partition_is_cut(bounds):
    td = TestDriver(payment_pipeline("t", "in", "out", size_ms=10_000, grace_ms=2_000))
    records = [pay(i, ts) for i, ts in enumerate(TIMELINE)]
    closed = []
    for a, b in zip(bounds, bounds[1:]):
        closed += [(w["window_start"], w["n"]) for w in td.feed(records[a:b])]
    assert closed == [(0, 3), (10_000, 3)]  # [0, 10 s) with the 3 s record; [10 s, 20 s) at 25 s
    assert [(r["ts"], w) for r, w in td.late] == [(9_000, ((0, 10_000),))]
