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


def test_the_targets_are_judged_from_a_committed_result():
    import json

    from bench.targets import judge, lines
    result = json.loads((Path(__file__).resolve().parents[2] / "docs" / "bench-results.json").read_text())
    rows = {r["target"]: r for r in judge(result)}
    windowed = rows["windowed throughput, exactly-once (x hand-written)"]
    assert windowed["value"] == result["throughput"]["ratio"] and windowed["met"] is (windowed["value"] >= 1.0)
    slope = result["memory"]["soak"]["driver_slope_mib_per_min"]
    assert rows["driver RSS slope in the soak"]["value"] == slope
    assert rows["driver RSS slope in the soak"]["met"] is (slope < 1.0)
    eighth = [p["p99_s"] for p in result["latency"]["curve"] if p["share_of_max"] == "1/8"]
    assert rows["latency p99 at 1/8 of the maximum rate, exactly-once"]["value"] == eighth[0]
    if "metrics" not in result:  # a figure the run did not measure is never met
        assert rows["metrics update interval while processing"]["met"] is None
    assert all(line.split()[0] in ("MET", "MISSED", "not") for line in lines(list(rows.values())))


def test_the_recovery_step_reads_the_first_value_of_each_metric():
    from bench.recovery import parse
    text = ('# HELP stream_commits_total Epochs\nstream_commits_total{pipeline="bench"} 3.0\n'
            'stream_driver_restarts_total{pipeline="bench"} 1.0\nstream_commits_total{pipeline="x"} 9.0\n')
    assert parse(text) == {"stream_commits_total": 3.0, "stream_driver_restarts_total": 1.0}
