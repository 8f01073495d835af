"""`stream replay`: run a pipeline over a past time range of its input, as a bounded batch.

The same pipeline, the same worker code: every input partition is read from the offset
where the range starts to its end offset when the replay began, in ranges spread over the
Dask workers; records whose event time falls in ``[from, to)`` are processed. At the end
every window is closed, and the windows that lie wholly inside the range are written to
the output topic. Windows cut by either edge would hold only part of their records, so they
are counted and left out. Nothing is committed to the application's consumer group or
changelog: a replay never disturbs the live pipeline.

Start offsets: Kafka's answer for the start time (`offsets_for_times`), kept when the
record just before it is older than the start. Otherwise (the embedded broker answers 0,
and an answer may be too high) the replay reads from the partition's first offset. Kafka
timestamps must not precede event times (create time or log-append time both qualify).

>>> parse_time("2026-01-01T00:01:00Z"), parse_time("1767225660000")
(1767225660000, 1767225660000)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from stream.compute import encode_results, result_failure
from stream.errors import ConfigError
from stream.execution.task import RangeTask, run_range
from stream.pipeline import Pipeline
from stream.planning import PartitionPlan, Planned
from stream.records import BEGINNING, Limits
from stream.windows.eventtime import FOREVER
from stream.windows.merge import advance, merge_range

log = logging.getLogger(__name__)


def parse_time(text: str, setting: str = "--from") -> int:
    """Epoch milliseconds from epoch ms digits or an ISO 8601 time (UTC when no zone is given)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(setting, f"{text!r} is neither epoch milliseconds nor an ISO 8601 time "
                                   "(for example 2026-01-01T12:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


@dataclass
class ReplaySummary:
    """What a replay read and wrote."""

    records_read: int = 0
    windows: int = 0            # windows closed that lie inside the range
    late: int = 0               # records late on their partition (not counted)
    edge_windows: int = 0       # windows cut by an edge of the range, left out
    written: int = 0            # records written to the output topic
    failed: int = 0             # records that failed (written to the dead-letter topic)
    seconds: float = 0.0
    partitions: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # -> (start, end)

    def line(self) -> str:
        rate = self.records_read / self.seconds if self.seconds else 0.0
        return (f"replayed {self.records_read:,} records in {self.seconds:.1f} s ({rate:,.0f}/s): "
                f"{self.written:,} written, {self.windows:,} windows inside the range, "
                f"{self.edge_windows:,} cut by its edges left out, {self.failed:,} failed, "
                f"{self.late:,} late")


def partition_bounds(reader: Any, topic: str, partition: int) -> tuple[int | None, int | None]:
    """A partition's first offset (None: empty) and end offset, from one fetch (never ListOffsets)."""
    first = reader.read(topic, partition, BEGINNING, None, 1)
    return (first.messages[0].offset if first.messages else None), first.high


def time_hints(kafka: Any, group: str, tps: list[tuple[str, int]], at_ms: int) -> dict[tuple[str, int], int | None]:
    """The broker's `offsets_for_times` answer per partition: a hint to check, not an offset to
    trust (the embedded broker answers 0 for every time)."""
    from confluent_kafka import Consumer, TopicPartition

    from stream.secrets import reveal_config

    consumer = Consumer(reveal_config(kafka.consumer({"group.id": group})))
    try:
        answer = consumer.offsets_for_times([TopicPartition(t, p, at_ms) for t, p in tps], timeout=30)
    finally:
        consumer.close()
    return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in answer}


def start_offset(reader: Any, hint: int | None, topic: str, partition: int, from_ms: int,
                 low: int) -> int:
    """Kafka's offset for `from_ms` when the record before it is older; else `low`."""
    if hint is None or hint <= low:
        return low
    before = reader.read(topic, partition, hint - 1, hint, 1)
    if before.messages and before.messages[0].timestamp_ms < from_ms:
        return hint
    log.info("%s[%d]: the broker's offset for the start time does not check out; reading from %d",
             topic, partition, low)
    return low


def replay(pipeline: Pipeline, kafka: Any, executor: Any, from_ms: int, to_ms: int, output: str,
           dead_letter: str | None = None, range_records: int = 50_000, max_inflight: int = 8,
           progress: Callable[[ReplaySummary], None] | None = None) -> ReplaySummary:
    """Replay `pipeline` over event times ``[from_ms, to_ms)`` of its input into `output`."""
    from stream.admin import check_topics, wait_for_broker
    from stream.sinks.kafka import KafkaSink
    from stream.sources.kafka import KafkaReader

    if to_ms <= from_ms:
        raise ConfigError("--to", f"must be after --from ({to_ms} <= {from_ms})")
    t0 = time.monotonic()
    md = wait_for_broker(kafka.client(), 30)
    topics = list(pipeline.source_spec.topics)  # type: ignore[union-attr]
    counts = check_topics(md, topics, "input")
    check_topics(md, [output], "output")
    reader = KafkaReader.from_config(kafka.consumer({"group.id": "stream-replay"}))
    hints = time_hints(kafka, "stream-replay", [(t, p) for t in topics for p in range(counts[t])], from_ms)
    summary = ReplaySummary()
    limits = Limits(kafka.max_record_bytes, event_time_range=(from_ms, to_ms))
    plans: dict[tuple[str, int], PartitionPlan] = {}
    for t in topics:
        for p in range(counts[t]):
            low, high = partition_bounds(reader, t, p)
            if low is None or high is None:
                continue  # an empty partition
            start = start_offset(reader, hints.get((t, p)), t, p, from_ms, low)
            summary.partitions[(t, p)] = (start, high)
            plans[(t, p)] = PartitionPlan(start, start, stop=high)
    stage = pipeline.window_stage
    stores = {tp: stage.new_store() for tp in plans} if stage is not None else {}
    closed: list[Any] = []
    ooo = pipeline.source_spec.out_of_order_ms  # type: ignore[union-attr]
    inflight: dict[Any, tuple[tuple[str, int], Planned]] = {}
    sink = KafkaSink(kafka.producer({"linger.ms": 20}))  # idempotent; no transaction

    def submit(tp: tuple[str, int], planned: Planned) -> None:
        task = RangeTask(tp[0], tp[1], planned.start, planned.end, range_records, reader, pipeline,
                         limits, carry=planned.carry)
        inflight[executor.submit(run_range, task, pin=tp[1])] = (tp, planned)

    def failed(tp: tuple[str, int], f: Any) -> None:
        summary.failed += 1
        if dead_letter is not None:
            sink.produce(dead_letter, f.key, f.value, f.dead_letter_headers(*tp))

    def plan_more() -> None:
        for tp, plan in plans.items():
            while len(inflight) < max_inflight and (planned := plan.next(range_records)) is not None:
                submit(tp, planned)

    def merge(tp: tuple[str, int], plan: PartitionPlan) -> None:
        while (r := plan.take()) is not None:
            if isinstance(r, Planned):  # judged at too low an event time: read it again
                submit(tp, r)
                return
            summary.records_read += r.partial.records_in
            for f in r.partial.failures:
                failed(tp, f)
            if stage is None:
                for key, value in r.partial.outputs:
                    sink.produce(output, key, value)
                summary.written += len(r.partial.outputs)
            else:
                found, late = merge_range(stores[tp], plan.clock, r.partial, ooo)
                closed.extend(found)
                summary.late += len(late)
            plan.merged_range(r)

    while any(plan.merged < (plan.stop or 0) for plan in plans.values()) or inflight:
        plan_more()
        for fut in executor.wait(list(inflight), 1.0):
            outcome = executor.outcome(fut)
            if outcome is None:
                continue
            tp, planned = inflight.pop(fut)
            result, exc = outcome
            if exc is not None:
                submit(tp, plans[tp].failed(planned, exc, f"replay {tp[0]}[{tp[1]}]"))
                continue
            rest = plans[tp].finished(planned, result)
            if rest is not None:  # a short read: the rest, same end
                submit(tp, rest)
        for tp, plan in plans.items():  # merge in offset order
            merge(tp, plan)
        if progress is not None:
            summary.seconds = time.monotonic() - t0
            progress(summary)
    if stage is not None:
        results = []
        for tp, store in stores.items():
            closed += advance(store, plans[tp].clock, FOREVER, ooo)
        for w in closed:
            if w.start >= from_ms and w.end <= to_ms:
                results.append(w)
            else:
                summary.edge_windows += 1
        summary.windows = len(results)

        def result_failed(w: Any, exc: BaseException, reason: str = "operator_error", record: Any = None) -> None:
            failed((output, -1), result_failure(w, exc, reason, record))
        ready = encode_results(pipeline, results, result_failed)
        for key, value in ready:
            sink.produce(output, key, value)
        summary.written += len(ready)
    sink.flush(60)  # raises, naming the broker, when results are not acknowledged
    sink.close()
    summary.seconds = time.monotonic() - t0
    return summary
