"""In-memory topics: the twin of the Kafka source, for tests and the local executor.

A `MemoryTopic` holds messages per partition; its reader is picklable (it carries the
data), and `MemorySession` plays the consumer group: it owns every partition and keeps
committed offsets in a dict.

>>> t = MemoryTopic("in", partitions=2)
>>> t.append(1, b"v", key=b"k", timestamp_ms=5)
0
>>> MemorySession([t]).assigned()
[('in', 0), ('in', 1)]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.records import TP, RawMessage, ReadBatch


@dataclass
class MemoryTopic:
    """A topic in memory: messages per partition, appended by tests."""

    name: str
    partitions: int = 1
    data: dict[int, list[RawMessage]] = field(default_factory=dict)

    def append(self, partition: int, value: bytes | None, key: bytes | None = None,
               timestamp_ms: int = 0) -> int:
        """Append one message; returns its offset."""
        log = self.data.setdefault(partition, [])
        log.append(RawMessage(len(log), key, value, timestamp_ms))
        return len(log) - 1

    def group_metadata(self) -> None:
        return None

    def reader(self) -> MemoryReader:
        return MemoryReader({self.name: {p: list(v) for p, v in self.data.items()}})


@dataclass(frozen=True)
class MemoryReader:
    """Reads ranges out of a snapshot of in-memory topics."""

    logs: dict[str, dict[int, list[RawMessage]]]

    def read(self, topic: str, partition: int, start: int, end: int | None,
             max_records: int, tail_wait_s: float = 0.0) -> ReadBatch:
        log = self.logs.get(topic, {}).get(partition, [])
        start = max(start, 0)  # BEGINNING (no committed offset): a memory log starts at 0
        stop = len(log) if end is None else min(end, len(log))
        stop = min(stop, start + max_records)
        return ReadBatch(log[start:stop], max(stop, start), len(log), stop >= len(log))


class MemorySession:
    """The consumer-group side for in-memory topics: all partitions, offsets in a dict."""

    def __init__(self, topics: list[MemoryTopic], offsets: dict[TP, int] | None = None) -> None:
        self.topics = topics
        self.offsets: dict[TP, int] = offsets if offsets is not None else {}
        self._reader = MemoryReader({})
        self._announced = False
        self.on_revoke = None  # a group of one is never revoked
        self.refresh()

    def refresh(self) -> None:
        """Snapshot the topics' current contents for the next reads."""
        logs = {}
        for t in self.topics:
            logs.update(t.reader().logs)
        self._reader = MemoryReader(logs)

    def poll(self, timeout: float) -> list[tuple[str, list[TP]]]:
        """The first call assigns every partition, as a group of one would."""
        if self._announced:
            return []
        self._announced = True
        return [("assigned", self.assigned())]

    def assigned(self) -> list[TP]:
        return [(t.name, p) for t in self.topics for p in range(t.partitions)]

    def committed(self, tps: list[TP]) -> dict[TP, int]:
        return {tp: self.offsets.get(tp, 0) for tp in tps}

    def commit(self, offsets: dict[TP, int]) -> None:
        self.offsets.update(offsets)

    def group_metadata(self) -> None:
        return None

    def reader(self) -> MemoryReader:
        return self._reader

    def close(self) -> None:
        pass
