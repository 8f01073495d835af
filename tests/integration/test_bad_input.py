"""Bad input on the real broker: every injected record lands in the dead-letter topic with
the right reason and its original bytes, a late record lands in the late topic with its
window, and every good record around them is processed."""

import json
import struct

import pytest
from confluent_kafka import Producer
from test_registry_codec import apicurio, registry  # noqa: F401  (the registry fixtures)

from operators import Count, Sum
from stream.app.admin import ensure_topic
from stream.app.run import run_pipeline
from stream.codecs.avro import AvroCodec
from stream.codecs.registry import RegistryAvroCodec
from stream.codecs.schemas import load_schema
from stream.config import RunConfig
from stream.pipeline import Pipeline
from stream.sources.kafka import read_all
from stream.windows.specs import Tumbling

pytestmark = pytest.mark.kafka

PAYMENT = load_schema("schemas/payment.avsc")
EVOLVED = {**PAYMENT, "fields": PAYMENT["fields"] + [{"name": "device", "type": "string", "default": "web"}]}
INCOMPATIBLE = {**PAYMENT, "fields": [dict(f, type="string") if f["name"] == "amount" else f
                                      for f in PAYMENT["fields"]]}
OUT = {"type": "record", "name": "Spend", "fields": [
    {"name": "user_id", "type": "string"}, {"name": "window_start", "type": "long"},
    {"name": "window_end", "type": "long"}, {"name": "n", "type": "long"},
    {"name": "total", "type": "double"}]}
BASE = 1_767_225_600_000
TEN_YEARS_MS = 10 * 365 * 86_400_000


def pay(i, user=None, at=None, **kw):
    """Payment number `i`, at event time slot `at` (default `i`: 50 ms apart)."""
    return {"payment_id": f"p{i}", "user_id": user or f"u{i % 7}", "merchant_id": "m1",
            "amount": 1.0 + i % 5, "currency": "EUR", "country": "DE",
            "ts": BASE + (i if at is None else at) * 50, **kw}


def pipeline(name, src, out, url):
    def explode(r):
        if r["payment_id"] == "boom":
            raise ValueError("this record makes the operator raise")
        return r
    return (Pipeline(name).source(src, codec=RegistryAvroCodec(url, PAYMENT), timestamp="ts")
            .map(explode).key_by("user_id")
            .window(Tumbling(seconds=10), aggregate={"n": Count(), "total": Sum("amount")})
            .sink(out, schema=OUT))


def test_bad_records_go_to_the_dead_letter_topic_and_good_ones_are_all_processed(
        kafka, topic_name, registry, executor):  # noqa: F811 - the registry fixture, imported above
    url, _ = registry
    src, out, app = topic_name("in"), topic_name("out"), topic_name("app")
    # Apache Kafka refuses records above the topic's max.message.bytes (1 MiB by default)
    ensure_topic(kafka.client(), src, 1, {"max.message.bytes": str(32 * 1024 * 1024)})
    ensure_topic(kafka.client(), out, 1)
    v1, v2 = RegistryAvroCodec(url, PAYMENT), RegistryAvroCodec(url, EVOLVED, subject="evolved")
    wrong = RegistryAvroCodec(url, INCOMPATIBLE, subject="incompatible")
    p = Producer(kafka.producer({"message.max.bytes": 32 * 1024 * 1024}))
    good, bad = [], []   # bad: (reason, value)

    def send(value, key=b"k", record=None, reason=None):
        p.produce(src, value, key, partition=0)
        if record is not None:
            good.append(record)
        if reason is not None:
            bad.append((reason, value))

    framed = v1.encode(pay(0))
    for i in range(1, 400):
        send(v1.encode(pay(i)), record=pay(i))
        if i == 50:
            send(framed[:12], reason="decode_failed")                           # truncated Avro
            send(struct.pack(">bI", 0, 9999) + framed[5:], reason="unknown_schema_id")
            send(b"\x07" + framed[1:], reason="bad_magic_byte")
            send(None)                                                          # tombstone: skipped
            send(b"", reason="bad_magic_byte")                                  # empty value
        if i == 100:
            for size in (2, 20):
                send(v1.encode(pay(i, merchant_id="x" * size * 1024 * 1024)), reason="too_large")
            send(v1.encode(pay(1000 + i, at=i)), key=b"\xff\xfe\x00", record=pay(1000 + i, at=i))  # non-UTF-8 key
            r = dict(pay(2000 + i, at=i), device="ios")
            send(v2.encode(r), record=pay(2000 + i, at=i))                            # evolved: decodes
            send(wrong.encode(dict(pay(3000 + i, at=i), amount="1.0")), reason="decode_failed")
            send(v1.encode(pay(4000 + i, at=i, payment_id="boom")), reason="operator_error")
            send(v1.encode(pay(5000 + i, at=i, ts=BASE + TEN_YEARS_MS)), reason="future_event_time")
    assert p.flush(30) == 0
    config = RunConfig(app_id=app, kafka=kafka, commit_interval_s=0.2, range_records=100)
    pl = pipeline(app, src, out, url)
    s1 = run_pipeline(pl, config, executor=executor, until=lambda d: d.caught_up())
    # a record for the first window, which has closed by now; then the rest of the input
    late = pay(9000, ts=BASE + 10)
    send(v1.encode(late))
    send(v1.encode(pay(9001, ts=BASE + 400 * 50)), record=pay(9001, ts=BASE + 400 * 50))
    assert p.flush(30) == 0
    s2 = run_pipeline(pl, config, executor=executor, until=lambda d: d.caught_up(), drain=True)

    dead = read_all(kafka.consumer({"group.id": "check"}), config.dead_letter_topic, 0)
    got = sorted((dict(m.headers)["dlq.reason"].decode(), m.value) for m in dead)
    assert [r for r, _ in got] == sorted(r for r, _ in bad)
    assert got == sorted(bad, key=lambda b: (b[0], b[1]))
    unknown = next(m for m in dead if dict(m.headers)["dlq.reason"] == b"unknown_schema_id")
    h = dict(unknown.headers)
    assert h["dlq.schema.id"] == b"9999" and h["dlq.source.topic"] == src.encode()
    assert int(h["dlq.source.partition"]) == 0 and int(h["dlq.source.offset"]) >= 0
    assert h["dlq.error.type"] == b"DecodeError" and h["dlq.error.message"]

    lates = read_all(kafka.consumer({"group.id": "check"}), config.late_topic, 0)
    assert [m.value for m in lates] == [v1.encode(late)]
    lh = dict(lates[0].headers)
    assert (int(lh["late.window.start"]), int(lh["late.window.end"])) == (BASE, BASE + 10_000)
    assert json.loads(lh["late.windows"]) == [[BASE, BASE + 10_000]]

    assert s1.skipped + s2.skipped == 1 and s1.late + s2.late == 1
    assert s1.failed + s2.failed == len(bad)
    rows = [AvroCodec(OUT).decode(m.value) for m in read_all(kafka.consumer({"group.id": "check"}), out, 0)]
    want: dict = {}
    for r in good:
        k = (r["user_id"], r["ts"] - r["ts"] % 10_000)
        n, total = want.get(k, (0, 0.0))
        want[k] = (n + 1, total + r["amount"])
    assert {(r["user_id"], r["window_start"]): (r["n"], r["total"]) for r in rows} == want
    assert len(rows) == len(want)
