"""The unit of parallel work: read one partition range, process it, return small results.

`run_range` is a top-level function over a picklable `RangeTask`, so it ships to a Dask
worker as is; the reader inside the task reuses a pooled client per worker process.

>>> from stream.sources.memory import MemoryTopic
>>> t = MemoryTopic("in", partitions=1); t.append(0, b"x")
0
>>> r = t.reader().read("in", 0, start=0, end=None, max_records=10)
>>> (len(r.messages), r.next_offset, r.eof)
(1, 1, True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from stream.pipeline import Pipeline
from stream.protocols import Reader
from stream.records import Limits, Partial
from stream.windows.eventtime import NEVER
from stream.worker.rows import process_messages


@dataclass(frozen=True, slots=True)
class RangeTask:
    """Read ``[start, end)`` of one partition (`end` None: read to EOF, at most max_records)."""

    topic: str
    partition: int
    start: int
    end: int | None
    max_records: int
    reader: Reader
    pipeline: Pipeline
    limits: Limits = Limits()
    tail_wait_s: float = 0.2
    carry: int = NEVER  # the partition's event time before `start` (exact, or a lower bound)
    marks: dict[int, tuple[int, int]] | None = None  # a repartition partition: positions counted

    @property
    def tp(self) -> tuple[str, int]:
        return (self.topic, self.partition)


@dataclass(slots=True)
class RangeResult:
    """A processed range: ``[start, next_offset)`` and what it produced."""

    topic: str
    partition: int
    start: int
    next_offset: int
    high: int | None
    eof: bool
    partial: Partial
    seconds: float
    last_ts: int = -1  # Kafka timestamp (ms) of the range's last record; -1: empty range
    submitted_ms: int = 0  # the driver's wall clock when it planned the read, and when the
    accepted_ms: int = 0   # result came back (set by the driver)


def run_range(task: RangeTask) -> RangeResult:
    """Read, decode, run operators and aggregate one range. Runs on a worker."""
    t0 = time.perf_counter()
    batch = task.reader.read(task.topic, task.partition, task.start, task.end,
                             task.max_records, task.tail_wait_s)
    partial = process_messages(task.pipeline, batch.messages, task.limits, task.carry, task.marks)
    last_ts = batch.messages[-1].timestamp_ms if len(batch.messages) else -1
    return RangeResult(task.topic, task.partition, task.start, batch.next_offset, batch.high,
                       batch.eof, partial, time.perf_counter() - t0, last_ts)
