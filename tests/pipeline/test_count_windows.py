"""Count windows: N records per key, tumbling or sliding, in partition order."""

import math

import pytest
from helpers import OUT_SCHEMA, count_pipeline, count_windows
from test_executors import make_topic, run_with_restart

from stream.codecs.avro import AvroCodec
from stream.errors import PipelineError
from stream.testing import TestDriver
from stream.windows.specs import CountWindow


def pay(user, ts, amount):
    return {"payment_id": f"{user}-{ts}", "user_id": user, "merchant_id": "m", "amount": amount,
            "currency": "EUR", "country": "DE", "ts": ts}


def test_tumbling_count_windows_emit_when_full_regardless_of_event_time():
    td = TestDriver(count_pipeline("c", "in", "out", size=3))
    assert td.feed([pay("a", 5_000, 1.0), pay("a", 1_000, 2.0), pay("b", 0, 9.0)]) == []
    [w] = td.feed([pay("a", 9_000, 4.0), pay("a", 2_000, 8.0)])  # event time plays no part
    assert td.advance_watermark(10**9) == []
    assert (w["window_start"], w["window_end"], w["n"], w["total"]) == (1_000, 9_001, 3, 7.0)
    assert {(r["user_id"], r["n"]) for r in td.early_results()} == {("a", 1), ("b", 1)}  # being filled


def test_sliding_count_windows_overlap():
    td = TestDriver(count_pipeline("c", "in", "out", size=4, slide=2))
    closed = td.feed([pay("a", i, float(i)) for i in range(1, 9)])
    assert [w["total"] for w in closed] == [1 + 2 + 3 + 4, 3 + 4 + 5 + 6, 5 + 6 + 7 + 8]


def test_bad_count_windows_fail_at_definition():
    with pytest.raises(PipelineError, match="multiple of the slide"):
        CountWindow(5, slide=2)
    with pytest.raises(PipelineError, match=">= 1"):
        CountWindow(0)


@pytest.mark.parametrize("size,slide", [(7, 7), (6, 2)])
def test_count_windows_through_both_executors_and_a_restart(executor, size, slide):
    topic, records = make_topic(n=5_000)
    order = {r["payment_id"]: i for i, r in enumerate(records)}  # one user's records: one partition
    pipeline = count_pipeline("mem", "payments", "out", size=size, slide=slide)
    _, d2, sink = run_with_restart(pipeline, topic, executor, 2_500)
    assert d2.stats.restored > 0
    codec = AvroCodec(OUT_SCHEMA)
    got = sorted(([codec.decode(v) for _, v, _ in sink.records["out"]]),
                 key=lambda r: (r["user_id"], r["window_start"], r["window_end"], r["total"]))
    want = sorted(count_windows(records, size, slide, lambda p: order[p["payment_id"]]),
                  key=lambda r: (r["user_id"], r["window_start"], r["window_end"], r["total"]))
    assert len(got) == len(want) > 100
    for g, w in zip(got, want):
        assert {k: g[k] for k in ("user_id", "window_start", "window_end", "n", "low", "high")} == \
            {k: w[k] for k in ("user_id", "window_start", "window_end", "n", "low", "high")}
        assert math.isclose(g["total"], w["total"], rel_tol=1e-9)
