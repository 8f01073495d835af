"""The run-time check that the input is partitioned by the window's key."""

import pytest
from helpers import payment_pipeline
from hypothesis import given, settings, strategies as st

from stream.errors import NotKeyedError
from stream.testing import TestDriver
from stream.windows.keying import KeyHomes


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.integers(0, 40), max_size=300), parts=st.integers(1, 5),
       cuts=st.lists(st.integers(0, 300), max_size=8), sample=st.integers(1, 50), limit=st.integers(1, 60))
def test_an_input_keyed_right_never_fails_however_ranges_split(keys, parts, cuts, sample, limit):
    homes = KeyHomes("'k'", sample=sample, limit=limit)
    bounds = sorted({0, len(keys), *[c for c in cuts if c < len(keys)]})
    for a, b in zip(bounds, bounds[1:]):
        for p in range(parts):
            homes.check(("in", p), [k for k in keys[a:b] if k % parts == p])
    assert len(homes.homes) <= limit


@settings(max_examples=200, deadline=None)
@given(before=st.lists(st.integers(0, 40), max_size=50), key=st.integers(0, 40),
       first=st.integers(0, 3), second=st.integers(0, 3))
def test_a_key_met_on_a_second_partition_fails_naming_both(before, key, first, second):
    homes = KeyHomes("'k'", sample=100, limit=100)
    homes.check(("in", first), [*before, key])
    if first == second:
        homes.check(("in", second), [key])
        return
    with pytest.raises(NotKeyedError, match=rf"key {key} of key_by\('k'\) came from in\[{first}\] and from in\[{second}\]"):
        homes.check(("in", second), [key])


def test_only_the_first_keys_of_a_range_are_looked_at_and_memory_is_bounded():
    homes = KeyHomes("'k'", sample=2, limit=3)
    homes.check(("in", 0), ["a", "b", "c"])       # c is not looked at
    homes.check(("in", 1), ["c", "d", "e"])       # c, d noted on 1; the limit stops at 3 keys
    assert homes.homes == {"a": ("in", 0), "b": ("in", 0), "c": ("in", 1)}
    with pytest.raises(NotKeyedError):
        homes.check(("in", 1), ["a"])


def test_the_test_driver_fails_a_key_fed_on_two_partitions():
    td = TestDriver(payment_pipeline("t", "pays", "out"))
    pay = {"payment_id": "p", "user_id": "u1", "merchant_id": "m", "amount": 1.0, "currency": "EUR",
           "country": "DE", "ts": 1_000}
    td.feed([pay], partition=0)
    td.feed([dict(pay, user_id="u2")], partition=1)
    with pytest.raises(NotKeyedError, match=r"key 'u1' of key_by\('user_id'\) came from pays\[0\] and from pays\[1\]"):
        td.feed([pay], partition=1)
