"""The changelog's typed state format: every accumulator round-trips, nothing decodes into code,
and entries in another format are rejected by name (a pickle, another version, garbage)."""

from __future__ import annotations

import os
import pickle

import msgpack
import pytest
from hypothesis import given, strategies as st

from operators import Aggregation, ApproxDistinct, ApproxQuantile, Collect, Count, Last, Mean, Sum, TopK
from stream.codecs.state import StateFormatError, decode, encode
from stream.driver.checkpoint import Meta, deltas, encode_meta, epoch_headers, meta_key, restore
from stream.errors import PipelineError
from stream.pipeline import Pipeline
from stream.records import RawMessage
from stream.windows.specs import Tumbling

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary()
keys = st.recursive(scalars, lambda inner: st.tuples(inner, inner), max_leaves=4)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
                      | st.dictionaries(keys, inner, max_size=3), max_leaves=12)


rows = st.lists(values, max_size=4)


@given(st.dictionaries(keys, rows | rows.map(tuple), max_size=5))
def test_any_plain_state_round_trips_with_its_types(state):
    back = decode(encode(state))
    assert back == state
    assert [type(v) for v in _walk(back)] == [type(v) for v in _walk(state)]


@given(st.dictionaries(keys, values, max_size=5))
def test_any_dict_of_plain_values_round_trips_with_its_types(state):
    back = decode(encode(state))  # e.g. a session store's {key: None} marks
    assert back == state
    assert [type(v) for v in _walk(back)] == [type(v) for v in _walk(state)]


def test_a_pane_held_as_tuples_is_stored_by_column_and_read_back_as_tuples():
    pane = {"u1": (2, 1.5), "u2": (1, 0.5)}
    assert msgpack.unpackb(encode(pane)) == {"tblt": [["u1", "u2"], [[2, 1], [1.5, 0.5]]]}
    assert decode(encode(pane)) == pane and type(decode(encode(pane))["u1"]) is tuple


def _walk(v):
    yield v
    if isinstance(v, (list, tuple)):
        for x in v:
            yield from _walk(x)
    elif isinstance(v, dict):
        for k, x in v.items():
            yield from _walk(k)
            yield from _walk(x)


@pytest.mark.parametrize("agg, values", [
    (Count(), [1, 2]), (Sum("x"), [1.5, 2]), (Mean("x"), [1.0, 4.0]), (Last("x"), [(5, "m1"), (3, "m2")]),
    (Collect("x"), ["a", "b"]), (TopK("x", 2), ["a", "b", "a"]),
    (ApproxDistinct("x"), ["u1", "u2", "u1"]), (ApproxQuantile("x", 0.5), [1.0, 2.0, 3.0])])
def test_every_built_in_accumulator_is_restored_to_the_same_result(agg, values):
    acc = agg.add(agg.create(), values)
    assert agg.result(decode(encode([acc]))[0]) == agg.result(acc)


def test_numpy_numbers_are_stored_as_python_numbers():
    import numpy as np

    assert decode(encode([np.float64(1.5), np.int64(3), np.bool_(True)])) == [1.5, 3, True]


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/stream-state-format-pwned",))


def _entry(key, value, epoch=7):
    return RawMessage(3, key, value, 0, epoch_headers(epoch))


def test_a_malicious_pickle_in_a_value_is_rejected_and_never_loaded():
    log = [_entry(deltas("in", 0, 7, {"u1": [1]})[0].key, pickle.dumps(Evil())),
           encode_meta(Meta("in", 7, ()))]
    with pytest.raises(StateFormatError, match="offset 3 cannot be read: it is a pickle"):
        restore(log, "in", last_committed=7)
    assert not os.path.exists("/tmp/stream-state-format-pwned")


def test_a_pickled_key_as_written_before_format_1_is_rejected_by_name():
    with pytest.raises(StateFormatError, match="has a key in no known format: it is a pickle"):
        restore([_entry(pickle.dumps(("in", "\x00meta")), b"{}")], "in", last_committed=7)


def test_an_entry_of_another_format_version_is_rejected_by_name():
    newer = meta_key("in").replace(b"[1,", b"[2,")
    with pytest.raises(StateFormatError, match="is in state format 2; this version reads format 1 only"):
        restore([_entry(newer, b'{"committed": []}')], "in", last_committed=7)


@pytest.mark.parametrize("value", [
    b"not msgpack at all", msgpack.packb({"u1": [1]}), msgpack.packb({"x": ["os.system", b""]}),
    msgpack.packb({"x": ["datasketches.hll", b"junk"]}), msgpack.packb(msgpack.ExtType(5, b"x")),
    msgpack.packb({"tbl": [["u1", "u2"], [[1]]]})])
def test_garbage_and_unknown_tags_are_errors_not_guesses(value):
    key = deltas("in", 0, 7, {"u1": [1]})[0].key
    with pytest.raises(StateFormatError, match="offset 3 cannot be read"):
        restore([_entry(key, value), encode_meta(Meta("in", 7, ()))], "in", last_committed=7)


def test_an_aggregation_whose_accumulator_the_format_cannot_hold_is_refused_at_definition():
    class Distinct(Aggregation):
        field = "x"

        def create(self):
            return set()

    p = Pipeline("a").source("in", schema={"type": "record", "name": "R", "fields": [
        {"name": "k", "type": "string"}, {"name": "x", "type": "string"}]}).key_by("k")
    with pytest.raises(PipelineError, match=r"aggregation 'd' \(distinct\(x\)\): a value of type set cannot be "
                                            r"stored in the changelog.*register"):
        p.window(Tumbling(1000), aggregate={"d": Distinct()})
