"""`stream replay`: run a pipeline over a past time range of its input, as a bounded batch.

The same pipeline, the same worker code and the same driver core (`stream.driver.core`,
with its retries, ordering and dead letters): every input partition is read from the offset
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

from stream.driver.core import Assigned, DriverCore, Finish, Tick, Topics
from stream.driver.loop import TaskLoop
from stream.errors import ConfigError, PipelineError
from stream.pipeline import Pipeline
from stream.protocols import Executor
from stream.records import BEGINNING, Limits

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


def replay(pipeline: Pipeline, kafka: Any, executor: Executor, from_ms: int, to_ms: int, output: str,
           dead_letter: str | None = None, range_records: int = 50_000, max_inflight: int = 8,
           progress: Callable[[ReplaySummary], None] | None = None) -> ReplaySummary:
    """Replay `pipeline` over event times ``[from_ms, to_ms)`` of its input into `output`."""
    from stream.app.admin import check_topics, wait_for_broker
    from stream.sinks.kafka import KafkaSink
    from stream.sources.kafka import KafkaReader

    if to_ms <= from_ms:
        raise ConfigError("--to", f"must be after --from ({to_ms} <= {from_ms})")
    if pipeline.rekey:
        raise PipelineError(f"stream replay does not run re-keyed windows yet: {pipeline.name} windows by "
                            f"key_by({pipeline.key_label}) through a repartition topic. Run it with `stream run` "
                            "under a new --app-id, reading from the start of the input")
    t0 = time.monotonic()
    md = wait_for_broker(kafka.client(), 30)
    topics = list(pipeline.validate().source.topics)
    counts = check_topics(md, topics, "input")
    check_topics(md, [output], "output")
    reader = KafkaReader.from_config(kafka.consumer({"group.id": "stream-replay"}))
    hints = time_hints(kafka, "stream-replay", [(t, p) for t in topics for p in range(counts[t])], from_ms)
    summary = ReplaySummary()
    for t in topics:
        for p in range(counts[t]):
            low, high = partition_bounds(reader, t, p)
            if low is None or high is None:
                continue  # an empty partition
            summary.partitions[(t, p)] = (start_offset(reader, hints.get((t, p)), t, p, from_ms, low), high)
    core = DriverCore(pipeline, Topics(None, dead_letter), range_records=range_records,
                      max_inflight=max_inflight, stamp=False, output=output,
                      keep=lambda w: w.start >= from_ms and w.end <= to_ms)
    sink = KafkaSink(kafka.producer({"linger.ms": 20}))  # idempotent; no transaction
    loop = TaskLoop(core, executor, sink, lambda: reader,
                    Limits(kafka.max_record_bytes, event_time_range=(from_ms, to_ms)))
    bounds = summary.partitions
    loop.handle(Assigned(list(bounds), {tp: b[0] for tp, b in bounds.items()}, {},
                         stops={tp: b[1] for tp, b in bounds.items()}))

    def tally() -> ReplaySummary:
        s = core.stats
        summary.records_read, summary.windows, summary.late = s.records_in, s.windows, s.late
        summary.edge_windows, summary.written, summary.failed = s.outside, s.records_out, s.failed
        summary.seconds = time.monotonic() - t0
        return summary

    while not core.finished():
        loop.collect(1.0)
        loop.handle(Tick())
        if progress is not None:
            progress(tally())
    loop.handle(Finish(drain=True))
    sink.flush(60)  # raises, naming the broker, when results are not acknowledged
    sink.close()
    return tally()
