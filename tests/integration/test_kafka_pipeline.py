"""End to end on the real embedded broker: produce, run, read the output, check every window."""

import time

import pytest
from helpers import diff_windows, payment_pipeline, recompute
from payments import produce_into as produce, read_windows

from stream.app.admin import ensure_topic
from stream.app.run import PipelineRun, run_pipeline
from stream.codecs.avro import AvroCodec
from stream.config import KafkaConfig, RunConfig
from stream.errors import BrokerUnavailable, TopicMissing
from stream.sources.kafka import read_all

pytestmark = pytest.mark.kafka


def setup_topics(kafka, topic_name, partitions=4):
    src, out = topic_name("in"), topic_name("out")
    ensure_topic(kafka.client(), src, partitions)
    ensure_topic(kafka.client(), out, 2)
    return src, out


def config(kafka, app, **kw):
    return RunConfig(app_id=app, kafka=kafka, commit_interval_s=0.2, range_records=2_000, **kw)


def test_out_of_order_input_every_window_matches_recomputation(kafka, topic_name, executor):
    src, out = setup_topics(kafka, topic_name)
    records = produce(kafka, src, 30_000)
    pipeline = payment_pipeline(topic_name("app"), src, out, size_ms=10_000, slide_ms=5_000)
    stats = run_pipeline(pipeline, config(kafka, pipeline.name), executor=executor,
                         until=lambda d: d.stats.records_in >= len(records) and d.caught_up(), drain=True)
    assert stats.records_in == len(records) and stats.failed == 0 and stats.late == 0
    assert diff_windows(recompute(records, 10_000, 5_000), read_windows(kafka, out)) == []


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_stop_mid_stream_and_restart_loses_no_window(kafka, topic_name, dask_executor, guarantee):
    src, out = setup_topics(kafka, topic_name)
    first = produce(kafka, src, 20_000)
    app = topic_name("app")
    pipeline = payment_pipeline(app, src, out)
    with PipelineRun(pipeline, config(kafka, app, guarantee=guarantee), dask_executor) as run:
        assert run.sink.transactional == (guarantee == "exactly_once")
        stats1 = run.driver.run(until=lambda d: d.stats.records_in >= 8_000)  # stop, no drain
    assert 0 < stats1.records_in < len(first) or stats1.windows > 0
    more = produce(kafka, src, 10_000, skip=20_000)
    with PipelineRun(pipeline, config(kafka, app, guarantee=guarantee), dask_executor) as run:
        stats2 = run.driver.run(until=lambda d: d.caught_up() and d.stats.records_in > 0, drain=True)
    # state came back from the changelog, and no record was read twice
    assert stats2.restored > 0 and stats1.records_in + stats2.records_in == len(first) + len(more)
    assert diff_windows(recompute(first + more), read_windows(kafka, out)) == []


@pytest.mark.parametrize("range_records", [300, 20_000])
def test_a_rekeyed_window_stopped_mid_stream_and_drained_matches_recomputation(kafka, topic_name, dask_executor,
                                                                               range_records):
    """Payments partitioned by user, windows by merchant through the repartition topic, at two
    range sizes, with a stop (no drain) in the middle: every window exact and once. The
    input's disorder (2 s) is below the grace (3 s), so no record is late on its partition."""
    from fault_app import by_merchant

    src, out = setup_topics(kafka, topic_name, partitions=3)
    records = produce(kafka, src, 12_000, partitions=3)
    app = topic_name("app")
    pipeline = payment_pipeline(app, src, out, last=False, map_fn=by_merchant, repartition=True)
    cfg = RunConfig(app_id=app, kafka=kafka, commit_interval_s=0.2, range_records=range_records)
    with PipelineRun(pipeline, cfg, dask_executor) as run:
        first = run.driver.run(until=lambda d: d.stats.records_in >= 6_000)
    with PipelineRun(pipeline, cfg, dask_executor) as run:
        assert run.driver.core.repartition == f"{app}.repartition.0"
        second = run.driver.run(until=lambda d: d.caught_up() and d.stats.records_in > 0, drain=True)
    assert first.failed == second.failed == 0 and first.late == second.late == 0 and second.restored > 0
    expected = recompute([by_merchant(r) for r in records], last=False)
    assert diff_windows(expected, read_windows(kafka, out)) == []


def test_a_global_window_gives_one_result_per_window_over_every_partition(kafka, topic_name, dask_executor):
    """`window()` without `key_by()`: one result per window, never one per partition, equal to
    the sums over every partition's records; stopped mid-stream, restarted and drained."""
    import math

    from operators import Count, Max, Sum
    from stream.pipeline import Pipeline, Tumbling

    src, out = setup_topics(kafka, topic_name, partitions=3)
    records = produce(kafka, src, 9_000, partitions=3)
    app = topic_name("app")
    schema = {"type": "record", "name": "All", "fields": [
        {"name": "window_start", "type": "long"}, {"name": "window_end", "type": "long"},
        {"name": "n", "type": "long"}, {"name": "total", "type": "double"}, {"name": "high", "type": ["null", "double"]}]}
    pipeline = (Pipeline(app).source(src, schema="schemas/payment.avsc", timestamp="ts")
                .window(Tumbling(seconds=10), grace=3_000,
                        aggregate={"n": Count(), "total": Sum("amount"), "high": Max("amount")})
                .sink(out, schema=schema))
    cfg = RunConfig(app_id=app, kafka=kafka, commit_interval_s=0.2, range_records=500)
    with PipelineRun(pipeline, cfg, dask_executor) as run:
        run.driver.run(until=lambda d: d.stats.records_in >= 4_000)
    with PipelineRun(pipeline, cfg, dask_executor) as run:
        stats = run.driver.run(until=lambda d: d.caught_up() and d.stats.records_in > 0, drain=True)
    assert stats.late == 0 and stats.failed == 0
    expected: dict = {}
    for r in records:
        w = expected.setdefault(r["ts"] - r["ts"] % 10_000, [0, 0.0, None])
        w[0], w[1], w[2] = w[0] + 1, w[1] + r["amount"], r["amount"] if w[2] is None else max(w[2], r["amount"])
    codec = AvroCodec(schema)
    rows = [codec.decode(m.value) for p in range(2) for m in read_all(kafka.consumer({"group.id": "verify"}), out, p)]
    assert sorted(r["window_start"] for r in rows) == sorted(expected)  # each window once
    for r in rows:
        n, total, high = expected[r["window_start"]]
        assert (r["n"], r["high"]) == (n, high) and math.isclose(r["total"], total, rel_tol=1e-9)


def test_undecodable_records_are_counted_and_good_ones_processed(kafka, topic_name):
    from confluent_kafka import Producer

    from stream.execution.local import LocalExecutor

    src, out = setup_topics(kafka, topic_name, partitions=1)
    records = produce(kafka, src, 2_000, partitions=1)
    p = Producer(kafka.producer())
    for bad in (b"\x02truncated", b"", None):
        p.produce(src, bad, b"bad", partition=0)
    p.flush(10)
    later = produce(kafka, src, 500, skip=2_000, partitions=1)
    pipeline = payment_pipeline(topic_name("app"), src, out)
    ex = LocalExecutor()
    stats = run_pipeline(pipeline, config(kafka, pipeline.name), executor=ex,
                         until=lambda d: d.stats.records_in >= 2_503 and d.caught_up(), drain=True)
    ex.close()
    assert (stats.failed, stats.skipped) == (2, 1)
    assert diff_windows(recompute(records + later), read_windows(kafka, out)) == []
    dead = read_all(kafka.consumer({"group.id": "verify"}), f"{pipeline.name}.dlq", 0)
    assert [(m.key, m.value) for m in dead] == [(b"bad", b"\x02truncated"), (b"bad", b"")]
    headers = [dict(m.headers) for m in dead]
    assert [h["dlq.reason"] for h in headers] == [b"decode_failed", b"decode_failed"]
    assert [h["dlq.source.offset"] for h in headers] == [b"2000", b"2001"]
    assert all(h["dlq.source.topic"] == src.encode() and h["dlq.source.partition"] == b"0" for h in headers)


def test_missing_input_topic_names_it_and_the_existing_ones(kafka, topic_name):
    src, out = setup_topics(kafka, topic_name)
    pipeline = payment_pipeline("app", "no-such-topic", out)
    with pytest.raises(TopicMissing, match="'no-such-topic' does not exist; topics on the broker: .*" + src):
        PipelineRun(pipeline, config(kafka, "app"))


def test_unreachable_broker_is_reported_with_the_address():
    from stream.app.broker import free_port

    address = f"127.0.0.1:{free_port()}"
    pipeline = payment_pipeline("app", "in", "out")
    cfg = RunConfig(app_id="app", kafka=KafkaConfig(address), connect_timeout_s=1.0)
    with pytest.raises(BrokerUnavailable, match=f"no Kafka broker answered at {address} within 1 s"):
        PipelineRun(pipeline, cfg)


def test_unreachable_scheduler_is_reported_with_the_address():
    from stream.app.broker import free_port
    from stream.errors import SchedulerUnavailable
    from stream.execution.dask import DaskExecutor

    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(SchedulerUnavailable, match=f"no Dask scheduler answered at {address}"):
        DaskExecutor(address, connect_timeout_s=1.0)


def test_existing_scheduler_by_address(kafka, topic_name, dask_executor):
    """--scheduler ADDR: connect to a running cluster instead of starting one."""
    from stream.execution.dask import DaskExecutor

    src, out = setup_topics(kafka, topic_name, partitions=2)
    records = produce(kafka, src, 3_000, partitions=2)
    remote = DaskExecutor(dask_executor.address)
    try:
        assert remote.cluster is None and remote.workers == 2
        pipeline = payment_pipeline(topic_name("app"), src, out)
        run_pipeline(pipeline, config(kafka, pipeline.name, scheduler=dask_executor.address), executor=remote,
                     until=lambda d: d.stats.records_in >= len(records) and d.caught_up(), drain=True)
    finally:
        remote.close()
    assert diff_windows(recompute(records), read_windows(kafka, out)) == []


def test_stateless_pipeline_writes_every_kept_record_once(kafka, topic_name, executor):
    """No window: filter + map + key_by, each surviving input record becomes one output record."""
    from stream.codecs.schemas import load_schema
    from stream.pipeline import Pipeline

    src, out = setup_topics(kafka, topic_name)
    records = produce(kafka, src, 5_000)
    pipeline = (Pipeline(topic_name("app")).source(src, schema="schemas/payment.avsc", timestamp="ts")
                .filter(lambda r: r["amount"] > 20)
                .map(lambda r: {**r, "amount": round(r["amount"] * 1.1, 2), "currency": "USD"})
                .key_by("user_id")
                .sink(out, schema="schemas/payment.avsc"))
    stats = run_pipeline(pipeline, config(kafka, pipeline.name), executor=executor,
                         until=lambda d: d.stats.records_in >= len(records) and d.caught_up())
    codec = AvroCodec(load_schema("schemas/payment.avsc"))
    got = {}
    for p in range(2):
        for m in read_all(kafka.consumer({"group.id": "verify"}), out, p):
            r = codec.decode(m.value)
            assert m.key == r["user_id"].encode() and r["payment_id"] not in got
            got[r["payment_id"]] = r
    want = {r["payment_id"]: {**r, "amount": round(r["amount"] * 1.1, 2), "currency": "USD"}
            for r in records if r["amount"] > 20}
    assert got == want and stats.records_out == len(want)


def test_metrics_endpoint_reports_what_the_run_did(kafka, topic_name):
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    from stream.execution.local import LocalExecutor

    src, out = setup_topics(kafka, topic_name, partitions=2)
    records = produce(kafka, src, 2_000, partitions=2)
    pipeline = payment_pipeline(topic_name("app"), src, out)
    ex = LocalExecutor()
    with PipelineRun(pipeline, config(kafka, pipeline.name, metrics_port=0), ex) as run:
        stats = run.driver.run(until=lambda d: d.stats.records_in >= len(records) and d.caught_up(), drain=True)
        text = urlopen(f"http://127.0.0.1:{run.metrics_port}/metrics", timeout=5).read().decode()
    ex.close()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}
    labels = (("pipeline", pipeline.name), ("topic", src))
    assert samples[("stream_records_in_total", labels)] == len(records)
    assert samples[("stream_records_out_total", (("pipeline", pipeline.name), ("topic", out)))] == stats.windows > 0
    assert samples[("stream_windows_emitted_total", (("pipeline", pipeline.name),))] == stats.windows
    lags = [v for (name, _), v in samples.items() if name == "stream_consumer_lag_records"]
    assert len(lags) == 2 and all(v == 0 for v in lags)


def test_one_reader_used_by_many_threads_at_once_reads_every_range_exactly(kafka, topic_name):
    """A worker may run several range tasks at once: each must get its own consumer."""
    from concurrent.futures import ThreadPoolExecutor

    from stream.sources.kafka import KafkaReader

    src, _ = setup_topics(kafka, topic_name)
    produce(kafka, src, 20_000)
    reader = KafkaReader.from_config(kafka.consumer({"group.id": topic_name("reader")}))
    whole = {p: [(m.offset, m.value) for m in read_all(kafka.consumer({"group.id": "verify"}), src, p)]
             for p in range(4)}
    ranges = [(p, start, min(start + 997, len(whole[p])))
              for _ in range(3) for p in range(4) for start in range(0, len(whole[p]), 997)]

    def read(job):
        p, start, end = job
        return job, [(m.offset, m.value) for m in reader.read(src, p, start, end, 10_000).messages]

    with ThreadPoolExecutor(8) as pool:
        for (p, start, end), offsets in pool.map(read, ranges, timeout=120):
            assert offsets == whole[p][start:end], f"{src}[{p}] {start}..{end}"


def test_readers_stay_warm_per_partition_and_are_bounded_per_thread(kafka, topic_name, monkeypatch):
    """A reader keeps one consumer per partition (so the next range is already fetched), and
    closes the least recently used beyond WARM_PARTITIONS per thread, across pipelines."""
    import threading

    from stream.sources import kafka as source

    monkeypatch.setattr(source, "WARM_PARTITIONS", 3)
    src, _ = setup_topics(kafka, topic_name, partitions=2)
    produce(kafka, src, 2_000, partitions=2)
    whole = {p: [m.offset for m in read_all(kafka.consumer({"group.id": "verify"}), src, p)]
             for p in range(2)}
    readers = [source.KafkaReader.from_config(kafka.consumer({"group.id": topic_name(f"r{i}")}))
               for i in range(3)]  # three pipelines on one worker thread
    me = threading.get_ident()
    for reader in readers:
        for p in range(2):
            start = 0
            while start < len(whole[p]):
                end = min(start + 300, len(whole[p]))
                got = [m.offset for m in reader.read(src, p, start, end, 10_000).messages]
                assert got == whole[p][start:end]
                start = end
            assert len([k for k in source._POOL if k[1] == me]) <= 3


def test_a_reader_idle_for_long_is_closed_so_it_stops_fetching(kafka, topic_name, monkeypatch):
    """A pooled consumer keeps fetching its partition while it waits for the next range; one
    whose pipeline moved on is closed at the next read on that thread after IDLE_CLOSE_S."""
    import threading

    from stream.sources import kafka as source

    # the limit is short only once both consumers exist: on a loaded machine the first read
    # (a new connection) can itself take longer than 0.5 s, which closed partition 0's early
    monkeypatch.setattr(source, "IDLE_CLOSE_S", 600.0)
    src, _ = setup_topics(kafka, topic_name, partitions=2)
    produce(kafka, src, 200, partitions=2)
    reader = source.KafkaReader.from_config(kafka.consumer({"group.id": topic_name("r")}))
    me = threading.get_ident()
    mine = lambda: {k[2] for k in source._POOL if k[1] == me and k[0] == reader.config}
    reader.read(src, 0, 0, 10, 100)
    reader.read(src, 1, 0, 10, 100)
    assert mine() == {(src, 0), (src, 1)}
    monkeypatch.setattr(source, "IDLE_CLOSE_S", 0.5)
    time.sleep(0.7)
    reader.read(src, 1, 10, 20, 100)  # partition 0's consumer has been idle past the limit
    assert mine() == {(src, 1)}
