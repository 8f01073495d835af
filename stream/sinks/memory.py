"""In-memory sink: the twin of the Kafka sink, for tests.

Records produced with an explicit partition (the changelog) are also kept per partition, so
`MemoryChangelog` can read them back.

>>> s = MemorySink(); s.produce("out", b"k", b"v"); s.flush()
>>> s.records["out"]
[(b'k', b'v', ())]
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from stream.protocols import Session
from stream.records import TP, RawMessage


class MemorySink:
    """Keeps produced records in lists per topic (and per partition, for the changelog)."""

    transactional = False

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[bytes | None, bytes | None, tuple]]] = defaultdict(list)
        self.partitioned: dict[TP, list[RawMessage]] = defaultdict(list)
        self.flushes = 0
        self.epochs = 0

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                headers: tuple[tuple[str, bytes], ...] = (), partition: int | None = None) -> None:
        self.records[topic].append((key, value, tuple(headers)))
        if partition is not None:
            log = self.partitioned[(topic, partition)]
            log.append(RawMessage(len(log), key, value, 0, tuple(headers)))

    def produce_many(self, topic: str, records: Any, headers: tuple[tuple[str, bytes], ...] = (),
                     partition: int | None = None) -> None:
        for key, value in records:
            self.produce(topic, key, value, headers, partition)

    def flush(self, timeout: float = 30.0) -> None:
        self.flushes += 1

    def commit_epoch(self, offsets: dict[TP, int], session: Session) -> None:
        self.flush()
        session.commit(offsets)
        self.epochs += 1

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


class MemoryChangelog:
    """Reads changelog partitions back out of a `MemorySink`."""

    def __init__(self, sink: MemorySink, topic: str) -> None:
        self.sink, self.topic = sink, topic

    def load(self, partitions: list[int]) -> dict[int, list[RawMessage]]:
        return {p: list(self.sink.partitioned[(self.topic, p)]) for p in partitions}
