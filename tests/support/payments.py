"""Producing generated payments into a topic, running a pipeline over them to the end, and
reading its window results back: for end-to-end tests."""

from confluent_kafka import Producer
from helpers import OUT_SCHEMA, payment_pipeline

from stream.app.generator import PaymentGenerator, partition_of
from stream.app.run import run_pipeline
from stream.codecs.avro import AvroCodec
from stream.sources.kafka import read_all


def produce_into(kafka, topic, n, seed=11, skip=0, partitions=4):
    """Produce payments `skip .. skip+n` of a fixed generator, keyed and partitioned by user."""
    codec = payment_pipeline("x", topic, "o").source_spec.codec
    records = list(PaymentGenerator(users=300, step_ms=4, disorder_ms=2_000, seed=seed).records(skip + n))[skip:]
    p = Producer(kafka.producer())
    for r in records:
        p.produce(topic, codec.encode(r), r["user_id"].encode(), partition=partition_of(r["user_id"], partitions))
    assert p.flush(30) == 0
    return records


def run_to_end(pipeline, config, executor, records, **kw):
    """Run until every record is merged, then close every window; returns the driver's counts."""
    return run_pipeline(pipeline, config, executor=executor, drain=True,
                        until=lambda d: d.stats.records_in >= len(records) and d.caught_up(), **kw)


def read_windows(kafka, topic, partitions=2):
    """Every window result in `topic`, decoded."""
    codec = AvroCodec(OUT_SCHEMA)
    return [codec.decode(m.value) for p in range(partitions)
            for m in read_all(kafka.consumer({"group.id": "verify"}), topic, p)]
