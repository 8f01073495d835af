"""The columnar fast path gives the same partials as the record-by-record path, or declines."""

import io
import math
import random

import fastavro
import pytest

from operators import Count, Max, Mean, Min, Sum, col
from stream.codecs.avro_block import BlockDecoder
from stream.pipeline import Hopping, Pipeline, Tumbling
from stream.records import Limits, Partial, RawMessage
from stream.worker.columnar import aggregate_batch, plan_for
from stream.worker.rows import _finder, aggregate_records, decode_messages, process_messages

SCHEMA = {"type": "record", "name": "E", "fields": [
    {"name": "user", "type": "string"}, {"name": "amount", "type": "double"},
    {"name": "qty", "type": ["null", "long"]}, {"name": "ts", "type": "long"},
    {"name": "flag", "type": "boolean"}, {"name": "blob", "type": "bytes"},
    {"name": "small", "type": "int"}, {"name": "ratio", "type": "float"}]}


def record(rng, i):
    return {"user": f"u{rng.randrange(30)}" + "é" * rng.randrange(3),
            "amount": round(rng.uniform(-5, 100), 2), "qty": None if rng.random() < 0.3 else rng.randrange(-2**40, 2**40),
            "ts": 1_000_000 + i * 7 - rng.randrange(500), "flag": rng.random() < 0.5,
            "blob": bytes(rng.randrange(40)), "small": rng.randrange(-2**31, 2**31), "ratio": 0.5}


def messages(pipeline, n, seed=1):
    rng = random.Random(seed)
    codec = pipeline.source_spec.codec
    return [RawMessage(i, None, codec.encode(record(rng, i)), 1_000_000 + i * 7) for i in range(n)]


def row_path(pipeline, msgs, limits=Limits()):
    out = Partial()
    rows = decode_messages(pipeline, msgs, out, limits)
    return aggregate_records(pipeline, rows, out, _finder(msgs), limits)


def same(a, b):
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


AGGS = {"n": Count(), "total": Sum("amount"), "lo": Min("amount"), "hi": Max("qty"),
        "avg": Mean("qty"), "q": Sum("small")}
PIPELINES = {
    "tumbling, col filter": lambda: Pipeline("t").source("in", SCHEMA, timestamp="ts", out_of_order=600)
    .filter(col("amount") > 0).key_by("user").window(Tumbling(1_000), aggregate=AGGS),
    "hopping, lambda filter": lambda: Pipeline("t").source("in", SCHEMA, timestamp="ts", out_of_order=600)
    .filter(lambda r: r["flag"] or r["amount"] > 50).key_by("user")
    .window(Hopping(3_000, slide=500), aggregate=AGGS),
    "kafka timestamp, project, combined col": lambda: Pipeline("t").source("in", SCHEMA, out_of_order=600)
    .filter((col("amount") > 10) & ~col("flag")).project(["user", "amount", "qty", "small", "ts"])
    .key_by("user").window(Tumbling(2_000), aggregate=AGGS),
}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_fast_path_equals_row_path(name):
    pipeline = PIPELINES[name]()
    assert plan_for(pipeline) is not None
    for seed in range(5):
        msgs = messages(pipeline, 3_000, seed)
        fast, slow = aggregate_batch(pipeline, msgs), row_path(pipeline, msgs)
        assert fast is not None
        assert fast.partials.keys() == slow.partials.keys()
        assert all(same(fast.partials[k], slow.partials[k]) for k in slow.partials)
        assert (fast.max_ts, fast.records_in, fast.bytes_in, fast.valid_below) == \
               (slow.max_ts, slow.records_in, slow.bytes_in, slow.valid_below)
        assert fast.late == slow.late == [] and fast.staged == slow.staged == []


def test_unusual_batches_go_to_the_row_path_with_the_same_dead_letters():
    pipeline = PIPELINES["tumbling, col filter"]()
    msgs = messages(pipeline, 200)
    cases = {
        "decode_failed": msgs[:50] + [RawMessage(50, None, msgs[50].value[:-3], 0)] + msgs[51:],
        "trailing_bytes": msgs[:50] + [RawMessage(50, None, msgs[50].value + b"\x00", 0)] + msgs[51:],
        "too_large": msgs[:50] + [RawMessage(50, b"k" * 2_000, msgs[50].value, 0)] + msgs[51:],
    }
    limits = Limits(max_record_bytes=1_500)
    for reason, batch in cases.items():
        assert aggregate_batch(pipeline, batch, limits) is None, reason
        out = process_messages(pipeline, batch, limits)
        assert [(f.offset, f.reason) for f in out.failures] == [(50, reason)]
        assert out.records_in == 200


def test_a_predicate_that_raises_sends_the_batch_to_the_row_path():
    schema = {**SCHEMA, "fields": [{"name": "user", "type": "string"}, {"name": "ts", "type": "long"},
                                   {"name": "qty", "type": ["null", "long"]}]}
    p = (Pipeline("t").source("in", schema, timestamp="ts").filter(col("qty") > 0).key_by("user")
         .window(Tumbling(1_000), aggregate={"n": Count()}))
    codec = p.source_spec.codec
    msgs = [RawMessage(i, None, codec.encode({"user": "a", "ts": i, "qty": None if i == 3 else 1}), 0)
            for i in range(6)]
    assert aggregate_batch(p, msgs) is None  # a null compared: Python raises, so the row path decides
    out = process_messages(p, msgs)
    assert [(f.offset, f.reason) for f in out.failures] == [(3, "operator_error")]
    assert out.partials == {("a", 0): [5]}


def test_tombstones_are_counted_on_the_fast_path():
    pipeline = PIPELINES["tumbling, col filter"]()
    msgs = messages(pipeline, 10)
    msgs[4] = RawMessage(4, b"k", None, 0)
    out = aggregate_batch(pipeline, msgs)
    assert out is not None and out.skipped == 1 and out.records_in == 10


def test_pipelines_the_fast_path_does_not_cover_take_the_row_path():
    base = Pipeline("t").source("in", SCHEMA, timestamp="ts", out_of_order=600)
    assert plan_for(base.map(lambda r: r).key_by("user").window(Tumbling(1_000), aggregate={"n": Count()})) is None
    assert plan_for(base.key_by(lambda r: r["user"]).window(Tumbling(1_000), aggregate={"n": Count()})) is None
    timed = {"type": "record", "name": "T", "fields": [
        {"name": "user", "type": "string"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
    assert BlockDecoder.for_schema(timed) is None


def test_block_decoder_never_accepts_a_corrupted_batch_it_decodes_wrongly():
    parsed = fastavro.parse_schema(SCHEMA)
    rng = random.Random(7)
    values = []
    for i in range(40):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, record(rng, i))
        values.append(buf.getvalue())
    decoder = BlockDecoder.for_schema(SCHEMA)
    assert decoder.decode(values) is not None
    for _ in range(200):
        batch, j = list(values), rng.randrange(len(values))
        v = bytearray(batch[j])
        kind = rng.choice(["append", "cut", "flip"])
        if kind == "append":
            v += bytes([rng.randrange(256)])
        elif kind == "cut":
            del v[rng.randrange(len(v)):]
        else:
            v[rng.randrange(len(v))] ^= 1 << rng.randrange(8)
        batch[j] = bytes(v)
        df = decoder.decode(batch)
        if df is None:
            continue
        expected = []
        for value in batch:  # accepted: every value must be exactly one record, equal to the row
            buf = io.BytesIO(value)
            expected.append(fastavro.schemaless_reader(buf, parsed, None))
            assert buf.tell() == len(value)
        # A boolean byte other than 0 or 1 is invalid Avro that neither decoder detects:
        # fastavro reads it as True, polars as False. Everything else must be equal.
        strip = lambda rows: [{k: v for k, v in r.items() if k != "flag"} for r in rows]
        assert strip(df.to_dicts()) == strip(expected)


def test_column_expressions_mean_the_same_on_a_record_and_on_a_batch():
    import polars as pl

    rng = random.Random(3)
    rows = [{"a": rng.randrange(-5, 5), "b": rng.random(), "c": rng.choice("xyz")} for _ in range(200)]
    exprs = [col("a") > 0, (col("a") * 2 + 1 >= col("b")) | (col("c") == "x"),
             ~col("c").is_in(["x", "y"]) & (col("a") != 3), 10 - col("a") < col("b") * 5]
    frame = pl.DataFrame(rows)
    for e in exprs:
        assert frame.select(e.to_polars()).to_series().to_list() == [e(r) for r in rows], repr(e)
    with pytest.raises(TypeError):
        bool(col("a") > 0)


def test_nan_late_and_future_records_are_decided_alike_on_both_paths():
    """NaN compares differently in polars; lateness and the future bound are per record: the
    fast path declines such batches, and the row path decides as the TestDriver does."""
    pipeline = PIPELINES["tumbling, col filter"]()
    codec = pipeline.source_spec.codec
    rng = random.Random(3)
    base = messages(pipeline, 300)

    def with_record(i, **fields):
        r = {**record(rng, i), **fields}
        return base[:i] + [RawMessage(i, None, codec.encode(r), base[i].timestamp_ms)] + base[i + 1:]

    nan = with_record(100, amount=float("nan"))
    late = with_record(200, ts=999_000)  # about 2.4 s behind the event time before it
    future = with_record(150, ts=base[150].timestamp_ms + 300_001)
    for batch in (nan, late, future):
        assert aggregate_batch(pipeline, batch) is None
    out = process_messages(pipeline, nan)
    assert sum(acc[0] for acc in out.partials.values()) == sum(acc[0] for acc in row_path(pipeline, base).partials.values()) - (
        1 if codec.decode(base[100].value)["amount"] > 0 else 0)   # NaN > 0 is false: filtered out
    out = process_messages(pipeline, late)
    assert [(x.offset, x.windows, x.counted) for x in out.late] == [(200, ((999_000, 1_000_000),), False)]
    out = process_messages(pipeline, future)
    assert [(f.offset, f.reason) for f in out.failures] == [(150, "future_event_time")]
