"""Producing generated payments into a topic, for end-to-end tests."""

from confluent_kafka import Producer

from stream.generator import PaymentGenerator, partition_of
from helpers import payment_pipeline


def produce_into(kafka, topic, n, seed=11, skip=0, partitions=4):
    """Produce payments `skip .. skip+n` of a fixed generator, keyed and partitioned by user."""
    codec = payment_pipeline("x", topic, "o").source_spec.codec
    records = list(PaymentGenerator(users=300, step_ms=4, disorder_ms=2_000, seed=seed).records(skip + n))[skip:]
    p = Producer(kafka.producer())
    for r in records:
        p.produce(topic, codec.encode(r), r["user_id"].encode(), partition=partition_of(r["user_id"], partitions))
    assert p.flush(30) == 0
    return records
