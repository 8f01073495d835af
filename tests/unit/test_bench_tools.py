"""The benchmark's own measuring tools: the feeder's records and the latency clock."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.feeder import payment_pool, zigzag_long
from bench.measure import closing_times
from stream.codecs.avro import AvroCodec
from stream.codecs.schemas import load_schema


def test_the_feeder_writes_payments_with_the_event_time_it_appends():
    codec = AvroCodec(load_schema(Path(__file__).resolve().parents[2] / "schemas" / "payment.avsc"))
    pool, span = payment_pool(users=50, seed=3, step_ms=0.1, partitions=4, size=1_000)
    value, key, partition, offset = pool[123]
    record = codec.decode(value + zigzag_long(1_767_225_600_000 + offset))
    assert record["ts"] == 1_767_225_600_000 + offset and record["user_id"].encode() == key
    assert 0 <= partition < 4 and span == 100
    assert all(codec.decode(v + zigzag_long(t))["ts"] == t for v, *_ in pool[:50] for t in (0, -3, 2**40))


def test_a_window_closes_when_the_last_partition_reaches_its_end():
    at = closing_times({"0": [[1000, 5.0], [2000, 6.0]], "1": [[1000, 5.5]]})
    assert at(1000) == 5.5   # the later of the two partitions
    assert at(2000) is None  # partition 1 never got there: not counted
