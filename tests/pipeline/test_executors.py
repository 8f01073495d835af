"""The whole driver loop on in-memory topics, under both executors (no broker)."""


import pytest
from helpers import OUT_SCHEMA, diff_windows, payment_pipeline, recompute

from stream.app.generator import PaymentGenerator, partition_of
from stream.codecs.avro import AvroCodec
from stream.codecs.schemas import load_schema
from stream.driver.loop import Driver, Topics
from stream.records import RawMessage, ReadBatch
from stream.sinks.memory import MemoryChangelog, MemorySink
from stream.sources.memory import MemoryReader, MemorySession, MemoryTopic


def make_topic(n=6_000, partitions=3, seed=5):
    codec = AvroCodec(load_schema("schemas/payment.avsc"))
    topic = MemoryTopic("payments", partitions)
    records = list(PaymentGenerator(users=50, step_ms=5, seed=seed).records(n))
    for r in records:
        topic.append(partition_of(r["user_id"], partitions), codec.encode(r), r["user_id"].encode(), r["ts"])
    return topic, records


def run(pipeline, session, executor, sink=None, max_inflight=4, **kw):
    sink = sink or MemorySink()
    name = pipeline.name
    topics = Topics(f"{name}.changelog", f"{name}.dlq", f"{name}.late")
    d = Driver(pipeline, session, sink, executor, MemoryChangelog(sink, topics.changelog), topics,
               range_records=700, max_inflight=max_inflight, commit_interval_s=0.05, **kw)
    return d, sink


def run_with_restart(pipeline, topic, executor, stop_at, at_stop=lambda d, sink: None):
    """Run until `stop_at` records are in, then a new driver (the committed offsets and state,
    a new group member) to the end, closing every window; returns (first, second, sink).
    `at_stop(first, sink)` looks at the first driver when it stops."""
    session, sink = MemorySession([topic]), MemorySink()
    d, _ = run(pipeline, session, executor, sink)
    d.run(until=lambda d: d.stats.records_in >= stop_at)
    at_stop(d, sink)
    d2, _ = run(pipeline, MemorySession([topic], offsets=session.offsets), executor, sink)
    d2.run(until=lambda d: d.caught_up(), drain=True)
    return d, d2, sink


def decode_all(sink, topic="out"):
    codec = AvroCodec(OUT_SCHEMA)
    return [codec.decode(v) for _, v, _ in sink.records[topic]]


def test_every_window_matches_recomputation(executor):
    topic, records = make_topic()
    pipeline = payment_pipeline("mem", "payments", "out", slide_ms=5_000)
    d, sink = run(pipeline, MemorySession([topic]), executor)
    stats = d.run(until=lambda d: d.caught_up(), drain=True)
    for st in d.parts.values():
        st.store.check_invariants()
    assert stats.records_in == len(records) and stats.late == 0
    assert diff_windows(recompute(records, 10_000, 5_000), decode_all(sink)) == []


def test_more_partitions_than_planning_slots_all_get_read(executor):
    # Tail reads of caught-up partitions return quickly and are planned again at once; with
    # fewer slots than partitions, planning must still reach every partition in turn.
    topic, records = make_topic(n=3_000, partitions=5)
    d, sink = run(payment_pipeline("mem", "payments", "out"), MemorySession([topic]), executor,
                  max_inflight=2)
    stats = d.run(until=lambda d: d.caught_up(), drain=True)
    assert stats.records_in == len(records)
    assert diff_windows(recompute(records, 10_000, 10_000), decode_all(sink)) == []


class FlakyReader:
    """Fails the first read of every range starting at a multiple of 1400 (once each)."""

    def __init__(self, inner: MemoryReader, seen: set):
        self.inner, self.seen = inner, seen

    def read(self, topic, partition, start, end, max_records, tail_wait_s=0.0) -> ReadBatch:
        if start > 0 and start % 1400 == 0 and (partition, start) not in self.seen:
            self.seen.add((partition, start))
            raise ConnectionError(f"injected failure at {partition}:{start}")
        return self.inner.read(topic, partition, start, end, max_records, tail_wait_s)


def test_failed_ranges_are_replanned_with_the_same_bounds():
    from stream.execution.local import LocalExecutor

    topic, records = make_topic()
    session = MemorySession([topic])
    seen: set = set()
    reader = FlakyReader(session.reader(), seen)
    session.reader = lambda: reader
    ex = LocalExecutor()
    d, sink = run(payment_pipeline("mem", "payments", "out"), session, ex)
    stats = d.run(until=lambda d: d.caught_up(), drain=True)
    ex.close()
    assert stats.task_failures == len(seen) > 0
    assert diff_windows(recompute(records), decode_all(sink)) == []


def test_stop_and_resume_loses_no_window_and_emits_none_twice():
    """Stop mid-stream (offsets and state committed), resume with new data: exactly the windows."""
    from stream.execution.local import LocalExecutor

    codec = AvroCodec(load_schema("schemas/payment.avsc"))
    topic, records = make_topic(n=4_000)
    session, sink = MemorySession([topic]), MemorySink()
    ex = LocalExecutor()
    d, _ = run(payment_pipeline("mem", "payments", "out"), session, ex, sink)
    # Stop once the first 10 s window has surely closed (3,500 records = 17.5 s of event time),
    # so both emitted windows and open ones are in the committed state.
    d.run(until=lambda d: d.stats.records_in >= 3_500)
    first = len(sink.records["out"])
    assert 0 < first and session.offsets
    more = list(PaymentGenerator(users=50, step_ms=5, seed=5).records(6_000))[4_000:]
    for r in more:
        topic.append(partition_of(r["user_id"], 3), codec.encode(r), None, r["ts"])
    restarted = MemorySession([topic], offsets=session.offsets)  # a new group member, same offsets
    d2, _ = run(payment_pipeline("mem", "payments", "out"), restarted, ex, sink)
    d2.run(until=lambda d: d.caught_up(), drain=True)
    ex.close()
    assert d2.stats.restored > 0 and d2.stats.records_in == 6_000 - d.stats.records_in
    assert diff_windows(recompute(records + more), decode_all(sink)) == []


@pytest.mark.parametrize("bad", [b"\x00garbage", b"", None])
def test_undecodable_records_are_counted_and_the_rest_processed(bad):
    from stream.execution.local import LocalExecutor

    topic, records = make_topic(n=1_000, partitions=1)
    topic.append(0, bad, b"x", 0)
    codec = AvroCodec(load_schema("schemas/payment.avsc"))
    extra = dict(records[-1], payment_id="after", ts=records[-1]["ts"] + 1)
    topic.append(0, codec.encode(extra), None, extra["ts"])
    ex = LocalExecutor()
    d, sink = run(payment_pipeline("mem", "payments", "out"), MemorySession([topic]), ex)
    stats = d.run(until=lambda d: d.caught_up(), drain=True)
    ex.close()
    assert (stats.failed, stats.skipped) == ((0, 1) if bad is None else (1, 0))
    dead = sink.records["mem.dlq"]
    assert [(k, v) for k, v, _ in dead] == ([] if bad is None else [(b"x", bad)])
    assert diff_windows(recompute(records + [extra]), decode_all(sink)) == []


def test_operator_errors_go_to_the_dead_letter_topic_with_original_bytes():
    from operators import Count
    from stream.execution.local import LocalExecutor
    from stream.pipeline import Pipeline
    from stream.windows.specs import Tumbling

    topic, records = make_topic(n=500, partitions=1)
    poison = {r["payment_id"] for r in records[::100]}
    p = (Pipeline("ops").source("payments", schema="schemas/payment.avsc", timestamp="ts")
         .map(lambda r: r if r["payment_id"] not in poison else 1 / 0)
         .key_by("user_id").window(Tumbling(seconds=10), grace=2_000, aggregate={"n": Count()})
         .sink("out", schema={"type": "record", "name": "O", "fields": [
             {"name": "user_id", "type": "string"}, {"name": "window_start", "type": "long"},
             {"name": "window_end", "type": "long"}, {"name": "n", "type": "long"}]}))
    ex = LocalExecutor()
    d, sink = run(p, MemorySession([topic]), ex)
    stats = d.run(until=lambda d: d.caught_up(), drain=True)
    ex.close()
    dead = sink.records["ops.dlq"]
    assert stats.failed == len(poison) == len(dead) == 5
    codec = AvroCodec(load_schema("schemas/payment.avsc"))
    assert {codec.decode(v)["payment_id"] for _, v, _ in dead} == poison
    assert all(dict(h)["dlq.reason"] == b"operator_error" and dict(h)["dlq.error.type"] == b"ZeroDivisionError"
               for _, _, h in dead)
    assert sum(r["n"] for r in (AvroCodec(p.sink_spec.codec.schema).decode(v) for _, v, _ in sink.records["out"])) == 495


SKETCH_OUT = {"type": "record", "name": "Sk", "fields": [
    {"name": "user_id", "type": "string"}, {"name": "window_start", "type": "long"},
    {"name": "window_end", "type": "long"}, {"name": "merchants", "type": "long"},
    {"name": "p90", "type": ["null", "double"]}, {"name": "top", "type": {"type": "array", "items": "string"}},
    {"name": "first", "type": {"type": "array", "items": "string"}}]}


def sketch_pipeline():
    from operators import ApproxDistinct, ApproxQuantile, Collect, TopK
    from stream.pipeline import Pipeline
    from stream.windows.specs import Hopping

    return (Pipeline("sk").source("payments", schema="schemas/payment.avsc", timestamp="ts")
            .key_by("user_id")
            .window(Hopping(10_000, slide=5_000), grace=3_000, aggregate={
                "merchants": ApproxDistinct("merchant_id"), "p90": ApproxQuantile("amount", 0.9),
                "top": TopK("merchant_id", 2), "first": Collect("payment_id", 3)})
            .sink("out", schema=SKETCH_OUT))


def test_sketches_collect_and_top_k_through_both_executors_and_a_restart(executor):
    """Accumulators cross processes (Dask pickles them) and the changelog (a restart restores
    them); every window equals the aggregations run over its records in one go."""
    from collections import defaultdict

    topic, records = make_topic(n=4_000)
    pipeline = sketch_pipeline()
    _, d2, sink = run_with_restart(pipeline, topic, executor, 2_000)
    assert d2.stats.restored > 0
    aggs = pipeline.window_stage.aggregations
    by_window = defaultdict(list)
    for r in records:  # offset order within a user's partition
        start = r["ts"] - r["ts"] % 5_000
        for s in (start, start - 5_000):
            by_window[(r["user_id"], s)].append(r)
    rows = {(r["user_id"], r["window_start"]): r for r in decode_all_with(sink, SKETCH_OUT)}
    assert set(rows) == set(by_window)
    for k, recs in by_window.items():
        recs = sorted(recs, key=lambda r: r["ts"] - r["ts"] % 5_000)  # (pane, offset): Collect's order
        for name, agg in aggs.items():
            want = agg.result(agg.add(agg.create(), [agg.extract(r, r["ts"]) for r in recs]))
            assert rows[k][name] == pytest.approx(want), (k, name)


def decode_all_with(sink, schema, topic="out"):
    codec = AvroCodec(schema)
    return [codec.decode(v) for _, v, _ in sink.records[topic]]


def test_early_results_come_marked_partial_and_final_results_stay_exact(executor):
    import dataclasses

    topic, records = make_topic(n=3_000)
    base = payment_pipeline("mem", "payments", "out")
    stage = dataclasses.replace(base.window_stage, early_ms=1)  # every turn of the loop
    pipeline = dataclasses.replace(base, window_stage=stage)
    d, sink = run(pipeline, MemorySession([topic]), executor)
    stats = d.run(until=lambda d: d.caught_up(), drain=True)
    kinds = [dict(h).get("stream.result") for _, _, h in sink.records["out"]]
    assert stats.partial > 0 and kinds.count(b"partial") == stats.partial
    assert kinds.count(b"final") == stats.windows
    codec = AvroCodec(OUT_SCHEMA)
    final = [codec.decode(v) for (_, v, h), kind in zip(sink.records["out"], kinds) if kind == b"final"]
    assert diff_windows(recompute(records), final) == []


def test_wall_clock_advance_closes_every_window_of_a_stream_that_stopped():
    import time

    from stream.execution.local import LocalExecutor

    topic, records = make_topic(n=2_000)
    ex = LocalExecutor()
    d, sink = run(payment_pipeline("mem", "payments", "out", size_ms=1_000, grace_ms=2_000),
                  MemorySession([topic]), ex, advance_after_ms=300)
    deadline = time.monotonic() + 20
    d.run(until=lambda d: (d.caught_up() and d.stats.windows > 0 and d.open_windows() == 0)
          or time.monotonic() > deadline)  # no drain: only the watermark closes windows
    ex.close()
    assert d.open_windows() == 0 and d.stats.windows == len(sink.records["out"]) > 0


def _compacted(log):
    """What Kafka's log cleaner leaves of a changelog partition: the latest value per key,
    without keys whose latest value is a tombstone."""
    latest = {}
    for m in log:
        latest.pop(m.key, None)
        latest[m.key] = m
    return [m for m in latest.values() if m.value is not None]


def test_a_compacted_changelog_restores_the_same_state(executor):
    """A compacted changelog keeps one meta entry per partition (the latest); it alone must
    name every committed epoch whose deltas are still live, or their state is lost."""
    from stream.driver.checkpoint import restore

    topic, records = make_topic(n=6_000)
    pipeline = payment_pipeline("compact", "payments", "out", size_ms=20_000, slide_ms=2_000)
    changelog = f"{pipeline.name}.changelog"
    before = {}

    def compact(d, sink):
        assert d.stats.commits >= 4
        for p in range(3):
            full = sink.partitioned[(changelog, p)]
            small = _compacted(full)
            last = d.session.committed([(changelog, p)]).get((changelog, p), -2)
            want, got = restore(full, "payments", last), restore(small, "payments", last)
            assert got.panes == want.panes and got.emitted_through == want.emitted_through
            before[p] = (len(full), len(small))
            sink.partitioned[(changelog, p)] = [RawMessage(i, m.key, m.value, 0, m.headers)
                                                for i, m in enumerate(small)]
    session = MemorySession([topic])
    d, sink = run(pipeline, session, executor, max_inflight=1)
    d.run(until=lambda d: d.stats.records_in >= 4_000, on_step=lambda d: d.commit())  # many epochs
    compact(d, sink)
    d2, _ = run(pipeline, MemorySession([topic], offsets=session.offsets), executor, sink)
    d2.run(until=lambda d: d.caught_up(), drain=True)
    assert all(small < full for full, small in before.values())  # compaction removed entries
    assert d2.stats.restored > 0
    assert diff_windows(recompute(records, 20_000, 2_000), decode_all(sink)) == []
