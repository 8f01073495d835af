"""Pure pipeline logic through the in-memory test driver: no broker."""

import random

from helpers import diff_windows, payment_pipeline, recompute

from stream.app.generator import partition_of
from stream.testing import TestDriver


def pay(user, ts, amount=1.0, merchant="m"):
    return {"payment_id": f"{user}-{ts}", "user_id": user, "merchant_id": merchant,
            "amount": amount, "currency": "EUR", "country": "DE", "ts": ts}


def test_tumbling_windows_emit_once_when_watermark_passes_end_plus_grace():
    td = TestDriver(payment_pipeline("t", "in", "out", size_ms=10_000, grace_ms=2_000))
    td.feed([pay("a", 1_000, 2.0), pay("a", 9_999, 3.0), pay("a", 10_000, 5.0), pay("b", 500, 1.0)])
    assert td.advance_watermark(11_999) == []
    first = td.advance_watermark(12_000)
    assert {(r["user_id"], r["window_start"], r["n"], r["total"]) for r in first} == {
        ("a", 0, 2, 5.0), ("b", 0, 1, 1.0)}
    assert td.advance_watermark(12_500) == []
    assert [(r["window_start"], r["n"]) for r in td.advance_watermark(22_000)] == [(10_000, 1)]


def test_late_records_are_counted_not_emitted():
    td = TestDriver(payment_pipeline("t", "in", "out", grace_ms=0))
    td.feed([pay("a", 1_000)])
    td.advance_watermark(10_000)
    td.feed([pay("a", 2_000), pay("a", 3_000)])
    assert len(td.late) == 2
    assert td.advance_watermark(100_000) == []


def test_hopping_windows_match_recomputation_for_disordered_input():
    rng = random.Random(3)
    records = [pay(f"u{rng.randrange(5)}", 50_000 + i * 37 - rng.randrange(2_000), rng.uniform(1, 9),
                   f"m{rng.randrange(3)}") for i in range(3_000)]
    td = TestDriver(payment_pipeline("t", "in", "out", size_ms=10_000, slide_ms=2_000, grace_ms=2_000))
    for start in range(0, len(records), 250):  # several batches, input partitioned by key
        batch = records[start:start + 250]
        for p in range(3):
            td.feed([r for r in batch if partition_of(r["user_id"], 3) == p], partition=p)
    td.advance_watermark(10**12)
    assert td.late == []
    assert diff_windows(recompute(records, 10_000, 2_000), td.emitted) == []


def test_operator_error_is_a_failure_and_the_batch_goes_on():
    from operators import Count
    from stream.pipeline import Pipeline
    from stream.windows.specs import Tumbling

    p = (Pipeline("t").source("in", schema="schemas/payment.avsc", timestamp="ts")
         .map(lambda r: {**r, "ratio": 10 / r["amount"]}).key_by("user_id")
         .window(Tumbling(seconds=10), aggregate={"n": Count()}))
    td = TestDriver(p)
    td.feed([pay("a", 1, 1.0), pay("a", 2, 0.0), pay("a", 3, 2.0)])
    assert [(f.offset, f.reason, f.error_type) for f in td.failures] == [(1, "operator_error", "ZeroDivisionError")]
    assert td.advance_watermark(10_000)[0]["n"] == 2


def test_stateless_pipeline_passes_records_through_encoded():
    from stream.codecs.avro import AvroCodec
    from stream.codecs.schemas import load_schema
    from stream.pipeline import Pipeline

    p = (Pipeline("t").source("in", schema="schemas/payment.avsc", timestamp="ts")
         .filter(lambda r: r["amount"] > 1).key_by("user_id").sink("out", schema="schemas/payment.avsc"))
    td = TestDriver(p)
    td.feed([pay("a", 1, 1.0), pay("b", 2, 5.0)])
    codec = AvroCodec(load_schema("schemas/payment.avsc"))
    assert [(k, codec.decode(v)["user_id"]) for k, v in td.outputs] == [(b"b", "b")]


def test_wall_clock_advance_closes_the_last_window_of_a_quiet_stream():
    """Without it the last window waits for a later record; with it, for the quiet delay."""
    pipeline = payment_pipeline("t", "in", "out", size_ms=10_000, grace_ms=2_000)
    plain = TestDriver(pipeline)
    plain.feed([pay("a", 3_000), pay("a", 9_000)])
    assert plain.advance_wall_clock(3_600_000) == []  # an hour of silence: still open
    td = TestDriver(pipeline, advance_after_ms=30_000)
    td.feed([pay("a", 3_000), pay("a", 9_000)])
    assert td.advance_wall_clock(30_000) == []         # quiet for the delay: event time 9 s
    assert td.advance_wall_clock(2_999) == []          # 9 s + 2.999 s < end 10 s + grace 2 s
    assert [(r["window_start"], r["n"]) for r in td.advance_wall_clock(1)] == [(0, 2)]
    td.feed([pay("a", 12_500)])                        # data returns: event time leads again
    assert td.advance_wall_clock(1_000) == []


def test_each_partition_closes_its_own_windows_on_its_own_event_time():
    td = TestDriver(payment_pipeline("t", "in", "out", size_ms=10_000, grace_ms=0))
    assert td.feed([pay("a", 1_000)], partition=0) == []
    closed = td.feed([pay("b", 5_000), pay("b", 25_000)], partition=1)  # 0 is not waited for
    assert [(r["user_id"], r["window_start"]) for r in closed] == [("b", 0)]
    assert td.advance_wall_clock(3_600_000) == []      # partition 0 stays open: no time passes
    closed = td.feed([pay("a", 31_000)], partition=0)  # its own record closes its window
    assert [(r["user_id"], r["window_start"]) for r in closed] == [("a", 0)]
    td.feed([pay("b", 9_000)], partition=1)            # late on partition 1 (at 25 s), not on 0
    td.feed([pay("a", 30_500)], partition=0)
    assert [(r["user_id"], r["ts"]) for r, _ in td.late] == [("b", 9_000)]


def test_lateness_is_decided_record_by_record_whatever_the_batches():
    ts = [9_000, 12_500, 9_500, 16_000, 9_900, 12_000, 30_000]
    drivers = [TestDriver(payment_pipeline("t", "in", "out", size_ms=10_000, grace_ms=3_000))
               for _ in range(3)]
    drivers[0].feed([pay("a", t) for t in ts])
    for t in ts:
        drivers[1].feed([pay("a", t)])
    drivers[2].feed([pay("a", t) for t in ts[:4]])
    drivers[2].feed([pay("a", t) for t in ts[4:]])
    for td in drivers:  # 9.5 s after 12.5 s is within the grace; 9.9 s after 16 s is not
        assert [(w["window_start"], w["n"]) for w in td.emitted] == [(0, 2), (10_000, 3)]
        assert [r["ts"] for r, _ in td.late] == [9_900]


def test_early_results_are_partial_updates_before_the_final_one():
    td = TestDriver(payment_pipeline("t", "in", "out", size_ms=10_000, grace_ms=0))
    td.feed([pay("a", 1_000, 2.0), pay("b", 2_000, 1.0)])
    assert {(r["user_id"], r["n"]) for r in td.early_results()} == {("a", 1), ("b", 1)}
    assert td.early_results() == []                    # nothing changed since
    td.feed([pay("a", 3_000, 4.0)])
    assert [(r["user_id"], r["n"], r["total"]) for r in td.early_results()] == [("a", 2, 6.0)]
    final = td.advance_watermark(10_000)
    assert {(r["user_id"], r["n"]) for r in final} == {("a", 2), ("b", 1)}
    assert td.early_results() == []                    # closed windows get no partial results


def test_one_record_from_a_bad_clock_is_dead_lettered_and_moves_no_time():
    td = TestDriver(payment_pipeline("t", "in", "out", size_ms=10_000, grace_ms=0))
    now = 1_767_225_600_000
    td.feed([pay("a", now + 23 * 3_600_000)], kafka_timestamps=[now])      # 23 h ahead of its write
    td.feed([pay("a", now + 60_000 * i) for i in range(1, 6)],
            kafka_timestamps=[now + 60_000 * i for i in range(1, 6)])
    td.feed([pay("a", now + 400_100)], kafka_timestamps=[now + 100_000])    # 5 min + 0.1 s ahead
    assert [f.reason for f in td.failures] == ["future_event_time", "future_event_time"]
    assert td.late == [] and [w["n"] for w in td.emitted] == [1] * 4       # all on time
