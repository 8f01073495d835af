"""Records as they travel: raw messages in, failures and partial aggregates out.

>>> RawMessage(offset=5, key=b"u1", value=b"...", timestamp_ms=1000).offset
5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

TP = tuple[str, int]  # a topic partition: (topic, partition)
BEGINNING = -2  # a range may start here before the partition's first offset is known (librdkafka's OFFSET_BEGINNING)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One input message as read from a partition (value None is a tombstone)."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class ReadBatch:
    """What a reader returns: messages in ``[start, next_offset)``, the end offset it saw."""

    messages: Sequence[RawMessage]
    next_offset: int
    high: int | None
    eof: bool


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
class Late:
    """A record that came after a window it belongs to had closed, on its own partition.

    `windows` lists those closed windows ``(start, end)``; `counted` says whether the record
    still counts in other, open windows (hopping windows whose oldest ones had closed).
    """

    offset: int
    event_time: int
    windows: tuple[tuple[int, int], ...]
    counted: bool
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    def late_headers(self, topic: str, partition: int) -> tuple[tuple[str, bytes], ...]:
        """The original headers plus where the record came from and which windows it missed."""
        import json

        start, end = self.windows[0] if self.windows else (-1, -1)
        return self.headers + (
            ("late.window.start", str(start).encode()), ("late.window.end", str(end).encode()),
            ("late.windows", json.dumps([list(w) for w in self.windows]).encode()),
            ("late.event.time", str(self.event_time).encode()),
            ("late.counted", b"true" if self.counted else b"false"),
            ("late.source.topic", topic.encode()), ("late.source.partition", str(partition).encode()),
            ("late.source.offset", str(self.offset).encode()))


@dataclass(frozen=True, slots=True)
class Single:
    """One record of a session key that the driver places itself (see `SessionJudge`):
    its offset, key, event time, the range's own event time before it, its accumulators,
    and (when it may be late) its original message."""

    offset: int
    key: Any
    ts: int
    before: int
    accs: list[Any]
    raw: "RawMessage | None" = None


FIVE_MINUTES_MS = 300_000


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-record limits workers enforce: larger records, and event times more than
    `max_future_ms` after the record's own Kafka timestamp (the producer's or the broker's
    clock when it was written), go to the dead-letter topic. Both are properties of the
    record, so the decision is the same whenever and wherever it is read."""

    max_record_bytes: int = 1_048_576
    max_future_ms: int = FIVE_MINUTES_MS
    event_time_range: tuple[int, int] | None = None  # replay: only records with event time in [from, to)


@dataclass(slots=True)
class Partial:
    """What processing one batch of records yields.

    `partials` maps (key, pane start) to one accumulator per aggregation, for the records
    on time in every window of their pane; `staged` holds, per stage (the latest window
    start that had closed when they came, ascending), the partials of hopping records that
    still count in their pane's younger windows only; `singles` are session records the
    driver places one by one; `late` the records late on their partition. `carry` is the
    event time the range was judged at, `valid_below` how far the true one may be above it
    with every decision unchanged, and `max_ts` the range's own highest event time. `outputs`
    are encoded (key, value) pairs of a pipeline without a window. Every record read is
counted once among `windowed` (or `outputs`), `failures`, `late`, `skipped`, `filtered`,
`outside` and `singles`, so the accounting closes (a hopping record late for some windows
but counted in younger ones is both windowed and late).
    """

    partials: dict[tuple[Any, int], list[Any]] = field(default_factory=dict)
    staged: list[tuple[int, dict[tuple[Any, int], list[Any]]]] = field(default_factory=list)
    singles: list[Single] = field(default_factory=list)
    late: list[Late] = field(default_factory=list)
    carry: int = -(2**62)
    valid_below: int = 2**62
    outputs: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    max_ts: int | None = None
    records_in: int = 0
    bytes_in: int = 0
    skipped: int = 0       # tombstones
    filtered: int = 0      # records an operator dropped (a filter, a flat_map that returned none)
    outside: int = 0       # records of a replay outside its time range
    windowed: int = 0      # records added to window state (session records the driver places: not here)
    scored: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, version) -> records
    clocks: dict[int, int] = field(default_factory=dict)  # a repartition range: origin -> event time heard
    firsts: dict[int, tuple[int, int]] = field(default_factory=dict)  # ... origin -> first position counted
    marks: dict[int, tuple[int, int]] = field(default_factory=dict)   # ... origin -> last position counted
    repeated: int = 0      # a repartition range: copies of records already counted (aborted, then redone)
