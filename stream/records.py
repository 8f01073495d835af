"""Records as they travel: raw messages in, failures and partial aggregates out.

>>> RawMessage(offset=5, key=b"u1", value=b"...", timestamp_ms=1000).offset
5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BEGINNING = -2  # a range may start here before the partition's first offset is known (librdkafka's OFFSET_BEGINNING)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One input message as read from a partition (value None is a tombstone)."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()


def column(messages: Any, name: str) -> list[Any]:
    """One field (`offset`, `key`, `value`, `timestamp_ms`) of every message of a batch.

    A batch read from Kafka keeps the client's messages and answers this without building a
    RawMessage per record; a plain list of RawMessage is read field by field.

    >>> column([RawMessage(3, None, b"v", 0)], "value")
    [b'v']
    """
    fast = getattr(messages, "column", None)
    return fast(name) if fast is not None else [getattr(m, name) for m in messages]


@dataclass(frozen=True, slots=True)
class Failure:
    """A record that could not be processed: where it was, why (a stable reason), and its bytes."""

    offset: int
    reason: str
    error_type: str
    message: str
    key: bytes | None = None
    value: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    schema_id: int | None = None

    def dead_letter_headers(self, topic: str, partition: int) -> tuple[tuple[str, bytes], ...]:
        """The original headers plus where the record came from and why it failed."""
        return self.headers + (
            ("dlq.reason", self.reason.encode()), ("dlq.error.type", self.error_type.encode()),
            ("dlq.error.message", self.message.encode("utf-8", "replace")),
            ("dlq.source.topic", topic.encode()), ("dlq.source.partition", str(partition).encode()),
            ("dlq.source.offset", str(self.offset).encode())) + (
            (("dlq.schema.id", str(self.schema_id).encode()),) if self.schema_id is not None else ())


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-record limits workers enforce: larger records and event times further ahead than
    `max_future_ms` past `now_ms` (the plan time) go to the dead-letter topic."""

    max_record_bytes: int = 1_048_576
    max_future_ms: int = 86_400_000
    now_ms: int | None = None
    event_time_range: tuple[int, int] | None = None  # replay: only records with event time in [from, to)


@dataclass(slots=True)
class Partial:
    """What processing one batch of records yields.

    `partials` maps (key, pane start) to one accumulator per aggregation; `pane_counts`
    maps pane start to its record count; `outputs` are encoded (key, value) pairs of a
    pipeline without a window.
    """

    partials: dict[tuple[Any, int], list[Any]] = field(default_factory=dict)
    pane_counts: dict[int, int] = field(default_factory=dict)
    outputs: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    max_ts: int | None = None
    records_in: int = 0
    bytes_in: int = 0
    skipped: int = 0
    scored: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, version) -> records
