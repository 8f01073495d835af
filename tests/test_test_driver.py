"""Pure pipeline logic through the in-memory test driver: no broker."""

import random

from stream.generator import partition_of
from stream.testing import TestDriver

from helpers import diff_windows, payment_pipeline, recompute


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
    from stream.pipeline import Pipeline
    from operators import Count
    from stream.windows.specs import Tumbling

    p = (Pipeline("t").source("in", schema="schemas/payment.avsc", timestamp="ts")
         .map(lambda r: {**r, "ratio": 10 / r["amount"]}).key_by("user_id")
         .window(Tumbling(seconds=10), aggregate={"n": Count()}))
    td = TestDriver(p)
    td.feed([pay("a", 1, 1.0), pay("a", 2, 0.0), pay("a", 3, 2.0)])
    assert [(f.offset, f.reason, f.error_type) for f in td.failures] == [(1, "operator_error", "ZeroDivisionError")]
    assert td.advance_watermark(10_000)[0]["n"] == 2


def test_stateless_pipeline_passes_records_through_encoded():
    from stream.pipeline import Pipeline
    from stream.codecs.avro import AvroCodec
    from stream.codecs.schemas import load_schema

    p = (Pipeline("t").source("in", schema="schemas/payment.avsc", timestamp="ts")
         .filter(lambda r: r["amount"] > 1).key_by("user_id").sink("out", schema="schemas/payment.avsc"))
    td = TestDriver(p)
    td.feed([pay("a", 1, 1.0), pay("b", 2, 5.0)])
    codec = AvroCodec(load_schema("schemas/payment.avsc"))
    assert [(k, codec.decode(v)["user_id"]) for k, v in td.outputs] == [(b"b", "b")]
