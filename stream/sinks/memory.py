"""In-memory sink: the twin of the Kafka sink, for tests.

>>> s = MemorySink(); s.produce("out", b"k", b"v"); s.flush()
>>> s.records["out"]
[(b'k', b'v', ())]
"""

from __future__ import annotations

from collections import defaultdict


class MemorySink:
    def __init__(self) -> None:
        self.records: dict[str, list[tuple[bytes | None, bytes | None, tuple]]] = defaultdict(list)
        self.flushes = 0

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        self.records[topic].append((key, value, tuple(headers)))

    def flush(self, timeout: float = 30.0) -> None:
        self.flushes += 1

    def close(self) -> None:
        pass
