"""Session windows: semantics through the test driver, merging of partials from different
ranges and workers, restart from the changelog, against an obvious recomputation."""


from helpers import OUT_SCHEMA, diff_windows, session_pipeline, sessions
from hypothesis import given, settings, strategies as st
from test_executors import make_topic, run_with_restart

from stream.codecs.avro import AvroCodec
from stream.testing import TestDriver


def pay(user, ts, amount=1.0):
    return {"payment_id": f"{user}-{ts}", "user_id": user, "merchant_id": "m", "amount": amount,
            "currency": "EUR", "country": "DE", "ts": ts}


def test_a_session_closes_gap_plus_grace_after_its_last_record():
    td = TestDriver(session_pipeline("s", "in", "out", gap_ms=10_000, grace_ms=1_000))
    closed = td.feed([pay("b", 5_000), pay("a", 1_000), pay("a", 8_000), pay("a", 17_999)])
    assert [(r["user_id"], r["window_start"], r["window_end"], r["n"]) for r in closed] == \
        [("b", 5_000, 15_000, 1)]                    # closed at 16 s, by a's 17.999 s
    assert td.advance_watermark(28_998) == []
    assert [(r["window_start"], r["window_end"], r["n"]) for r in td.advance_watermark(28_999)] == \
        [(1_000, 27_999, 3)]


def test_records_exactly_gap_apart_start_a_new_session():
    td = TestDriver(session_pipeline("s", "in", "out", gap_ms=10_000, grace_ms=0))
    assert [(r["window_start"], r["n"]) for r in td.feed([pay("a", 0), pay("a", 10_000)])] == [(0, 1)]
    assert [(r["window_start"], r["n"]) for r in td.advance_watermark(100_000)] == [(10_000, 1)]


def test_a_record_bridging_two_sessions_merges_them():
    td = TestDriver(session_pipeline("s", "in", "out", gap_ms=10_000, grace_ms=30_000))
    td.feed([pay("a", 1_000, 1.0), pay("a", 25_000, 2.0)], partition=0)
    assert {(r["window_start"], r["n"]) for r in td.early_results()} == {(1_000, 1), (25_000, 1)}
    td.feed([pay("a", 10_500, 4.0)], partition=0)  # joins the first; 14.5 s before the second
    assert td.advance_watermark(35_000) == []      # [1 s, 20.5 s) closes at 50.5 s
    td.feed([pay("a", 17_000, 8.0)], partition=0)  # 6.5 s and 8 s: bridges the two sessions
    [merged] = td.advance_watermark(100_000)
    assert (merged["window_start"], merged["window_end"], merged["n"], merged["total"]) == (1_000, 35_000, 4, 15.0)


def test_a_record_is_late_only_when_the_session_it_joins_or_starts_has_closed():
    td = TestDriver(session_pipeline("s", "in", "out", gap_ms=10_000, grace_ms=0))
    td.feed([pay("a", 1_000), pay("a", 5_000)])
    assert [r["n"] for r in td.feed([pay("a", 16_000)])] == [2]  # [1 s, 15 s) closed at 15 s
    td.feed([pay("a", 14_000)])        # its own session would be open, but it joins the emitted one
    td.feed([pay("a", 15_500)])        # 10.5 s after 5 s: joins 16 s, on time
    td.feed([pay("a", 2_000)])         # its own session [2 s, 12 s) closed at 12 s
    assert [(r["ts"], w) for r, w in td.late] == [(14_000, ((1_000, 15_000),)), (2_000, ((1_000, 15_000),))]
    assert [(r["window_start"], r["n"]) for r in td.advance_watermark(40_000)] == [(15_500, 2)]


def test_forty_in_order_records_one_per_batch_make_one_session():
    td = TestDriver(session_pipeline("s", "in", "out", gap_ms=5_000, grace_ms=0))
    for i in range(40):
        assert td.feed([pay("a", 1_000 * i)]) == []
    assert td.late == []
    assert [(r["window_start"], r["n"]) for r in td.advance_watermark(10**6)] == [(0, 40)]


@settings(max_examples=60, deadline=None)
@given(records=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 120_000), st.integers(0, 3)),
                        max_size=80),
       cuts=st.lists(st.integers(0, 80), max_size=6))
def test_sessions_equal_recomputation_however_batches_and_partitions_split(records, cuts):
    """Records fed in random batches and partitions (a key stays on its partition)."""
    pays = [pay(u, ts, float(i + 1)) for i, (u, ts, _) in enumerate(records)]
    td = TestDriver(session_pipeline("s", "in", "out", gap_ms=5_000, grace_ms=10**9))
    bounds = sorted({0, len(pays), *[c for c in cuts if c < len(pays)]})
    for a, b in zip(bounds, bounds[1:]):
        for part in range(3):
            batch = [p for p in pays[a:b] if "abc".index(p["user_id"]) == part]
            td.feed(batch, partition=part)
    rows = td.advance_watermark(2 * 10**9)
    assert diff_windows(sessions(pays, 5_000), rows) == []
    for store in td.stores.values():
        assert store.panes == {}


def test_sessions_through_both_executors_and_a_restart_equal_recomputation(executor):
    topic, records = make_topic(n=6_000)
    pipeline = session_pipeline("mem", "payments", "out", gap_ms=300, grace_ms=3_000)
    at_stop: dict = {}

    def look(d, sink):
        for st_ in d.parts.values():
            st_.store.check_invariants()
        at_stop["emitted"] = len(sink.records["out"])

    d, d2, sink = run_with_restart(pipeline, topic, executor, 3_000, look)
    assert 0 < at_stop["emitted"] and d2.stats.restored > 0 and d.stats.late + d2.stats.late == 0
    codec = AvroCodec(OUT_SCHEMA)
    rows = [codec.decode(v) for _, v, _ in sink.records["out"]]
    assert diff_windows(sessions(records, 300), rows) == []
