"""The JSON codec alone, and a JSON-in, JSON-out windowed pipeline on the broker."""

import json
import pickle

import pytest
from confluent_kafka import Producer
from helpers import PAYMENT, diff_windows, recompute

from operators import Count, Sum
from stream.app.admin import ensure_topic
from stream.app.generator import PaymentGenerator
from stream.codecs.json import JsonCodec
from stream.codecs.schemas import load_schema
from stream.config import RunConfig
from stream.errors import DecodeError, EncodeError, PipelineError
from stream.pipeline import Pipeline
from stream.sources.kafka import read_all
from stream.windows.specs import Tumbling

SCHEMA = load_schema(PAYMENT)
GOOD = {"payment_id": "p1", "user_id": "u1", "merchant_id": "m1", "amount": 2.5, "currency": "EUR",
        "country": "DE", "ts": 1_767_225_600_000}


def test_round_trip_with_and_without_a_schema():
    for codec in (JsonCodec(SCHEMA), JsonCodec()):
        assert codec.decode(codec.encode(GOOD)) == GOOD
        assert pickle.loads(pickle.dumps(codec)).decode(codec.encode(GOOD)) == GOOD
    assert JsonCodec().fields is None and JsonCodec(SCHEMA).fields == [f["name"] for f in SCHEMA["fields"]]


@pytest.mark.parametrize("value, reason", [
    (b"{not json", "decode_failed"), (b"\xff\xfe", "decode_failed"), (b"[1, 2]", "decode_failed"),
    (json.dumps({**GOOD, "amount": "2.5"}).encode(), "schema_mismatch"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "user_id"}).encode(), "schema_mismatch"),
])
def test_bad_values_are_decode_errors_with_a_reason(value, reason):
    with pytest.raises(DecodeError) as info:
        JsonCodec(SCHEMA).decode(value)
    assert info.value.reason == reason and info.value.raw == value


def test_encoding_refuses_what_is_not_json_or_does_not_fit():
    with pytest.raises(EncodeError, match="not JSON|Out of range"):
        JsonCodec().encode({"x": float("nan")})
    with pytest.raises(EncodeError, match="'amount' does not fit"):
        JsonCodec(SCHEMA).encode({**GOOD, "amount": "lots"})


def test_the_format_is_chosen_per_topic_and_checked():
    p = Pipeline("j").source("in", format="json").sink("out", schema=PAYMENT, format="json")
    assert isinstance(p.source_spec.codec, JsonCodec) and p.sink_spec.codec.schema == SCHEMA
    with pytest.raises(PipelineError, match="format must be one of avro, json"):
        Pipeline("j").source("in", schema=PAYMENT, format="xml")
    with pytest.raises(PipelineError, match="registry_url goes with Avro"):
        Pipeline("j").source("in", format="json", registry_url="http://r:8081")


OUT = {"type": "record", "name": "Out", "fields": [
    {"name": "user_id", "type": "string"}, {"name": "window_start", "type": "long"},
    {"name": "window_end", "type": "long"}, {"name": "n", "type": "long"}, {"name": "total", "type": "double"}]}


@pytest.mark.kafka
def test_json_in_json_out_windows_equal_the_recomputation_and_bad_json_is_dead_lettered(kafka, topic_name):
    src, out, app = topic_name("in"), topic_name("out"), topic_name("app")
    ensure_topic(kafka.client(), src, 1)
    ensure_topic(kafka.client(), out, 1)
    records = list(PaymentGenerator(users=20, step_ms=20, disorder_ms=0, seed=3).records(2_000))
    producer = Producer(kafka.producer())
    for i, r in enumerate(records):
        producer.produce(src, json.dumps(r).encode(), r["user_id"].encode(), partition=0)
        if i == 500:
            producer.produce(src, b'{"payment_id": "broken"', b"bad", partition=0)
    assert producer.flush(30) == 0
    pipeline = (Pipeline(app).source(src, schema=PAYMENT, format="json", timestamp="ts")
                .filter(lambda r: r["amount"] > 0).key_by("user_id")
                .window(Tumbling(seconds=10), aggregate={"n": Count(), "total": Sum("amount")})
                .sink(out, schema=OUT, format="json"))
    from stream.app.run import run_pipeline
    from stream.execution.local import LocalExecutor

    stats = run_pipeline(pipeline, RunConfig(app_id=app, kafka=kafka, commit_interval_s=0.2), executor=LocalExecutor(),
                         drain=True, until=lambda d: d.stats.records_in >= len(records) + 1 and d.caught_up())
    rows = [json.loads(m.value) for m in read_all(kafka.consumer({"group.id": "verify"}), out, 0)]
    expected = {k: {f: v[f] for f in ("n", "total")} for k, v in recompute(records, last=False).items()}
    assert diff_windows(expected, rows) == [] and stats.failed == 1
    dead = read_all(kafka.consumer({"group.id": "verify"}), f"{app}.dlq", 0)
    assert [(m.key, dict(m.headers)["dlq.reason"]) for m in dead] == [(b"bad", b"decode_failed")]
