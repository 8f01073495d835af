"""Re-keying through a repartition topic, with event time that stays per input partition.

A window over a key the input is not partitioned by runs in two stages of one driver.
Stage 1 reads the input, runs the steps up to `key_by()` and writes each record to the
repartition topic, keyed (and so partitioned) by the new key, in an *envelope*: the record,
its event time, its *origin* (the input partition it came from) and `before`, the origin's
event time before it. Stage 2 reads the repartition topic and windows it.

Stage 2 judges each record at its own origin's event time (`before`), so whether a record
is late depends on its input partition in order, not on how stage 1 interleaved the input
partitions. After each range of an origin, stage 1 writes a *heartbeat* (origin, event time)
to every repartition partition; a repartition partition's event time is the lowest over all
origins of their last heartbeat (`OriginClocks`), and windows close by it. A record that comes
after a heartbeat of its origin has a `before` at least that heartbeat's, so a window that
closed is one its later records are judged late for: every window holds exactly the on-time
records of every origin, and its result is a function of the input partitions alone.

Each envelope also names its *position*: the record's input offset, and its index among the
records a step made of that input record. Of one origin, a repartition partition holds
positions in increasing order, except where a stage-1 epoch was aborted and done again: the
embedded broker shows aborted records to `read_committed` readers too, and the second copies
are the same records at the same positions. Stage 2 keeps, per origin, the highest position
it counted (`OriginClocks.marks`) and skips any at or below it.

>>> v = encode_record(0, 12_000, (40, 0), {"card": "c1", "amount": 5})
>>> d = decode(stamp(v, origin=3, carry=20_000))
>>> (d.origin, d.before, d.ts, d.position, d.record["card"])
(3, 20000, 12000, (40, 0), 'c1')
>>> c = OriginClocks(origins=(0, 1)); c.update({0: 5_000}); c.now()
-4611686018427387904
>>> c.update({1: 7_000}); c.now()
5000
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

import msgpack

from stream.codecs.state import StateFormatError, decode as decode_state, encode as encode_state
from stream.errors import DecodeError, EncodeError
from stream.windows.eventtime import NEVER

RECORD, HEARTBEAT, PLAIN = 1, 2, 3  # PLAIN: a record of plain values in MessagePack as is
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None), bytes})
# kind, origin, before (a heartbeat: the origin's event time), ts, input offset, index at that offset
_HEAD = struct.Struct(">BIqqqI")
Position = tuple[int, int]
_TOPIC_SHIFT = 20               # origin id: input topic index << 20 | partition


def repartition_topic(app_id: str, n: int = 0) -> str:
    """The internal topic of a pipeline's `n`-th re-keying.

    >>> repartition_topic("fraud")
    'fraud.repartition.0'
    """
    return f"{app_id}.repartition.{n}"


def origin_id(topic_index: int, partition: int) -> int:
    """One number per input partition: the input topic's index in `source()`, and the partition.

    >>> origin_id(1, 3)
    1048579
    """
    return topic_index << _TOPIC_SHIFT | partition


def all_origins(partitions: Mapping[str, int], topics: tuple[str, ...]) -> tuple[int, ...]:
    """Every origin of input `topics`, given each topic's partition count.

    >>> all_origins({"a": 2, "b": 1}, ("a", "b"))
    (0, 1, 1048576)
    """
    return tuple(origin_id(i, p) for i, t in enumerate(topics) for p in range(partitions[t]))


def encode_record(before: int, ts: int, position: Position, record: dict[str, Any],
                  fields: tuple[str, ...] | None = None) -> bytes:
    """A stage-1 record's envelope, origin left 0 and `before` the range's own event time before
    it (NEVER for its first record): the driver `stamp`s both once it knows the range's start.
    With `fields`, only those fields travel (what stage 2 reads: the key and the aggregations').
    A record of plain values is packed as is (4 times faster than the tagged state format)."""
    if fields is not None:
        record = {f: record[f] for f in fields if f in record}
    if all(type(v) in _PLAIN_TYPES for v in record.values()) and all(type(k) is str for k in record):
        try:
            packed: bytes = msgpack.packb(record)
            return _HEAD.pack(PLAIN, 0, before, ts, *position) + packed
        except (OverflowError, ValueError, TypeError):  # an integer beyond 64 bits: the state format holds it
            pass
    return _HEAD.pack(RECORD, 0, before, ts, *position) + encode_state(record)


def stamp(value: bytes, origin: int, carry: int) -> bytes:
    """The envelope with its origin set and `before` raised to `carry`, the origin's event time
    before the range (known exactly once the driver merges the range, in offset order)."""
    kind, _, before, ts, offset, index = _HEAD.unpack_from(value)
    return _HEAD.pack(kind, origin, max(before, carry), ts, offset, index) + value[_HEAD.size:]


def heartbeat(origin: int, event_time: int) -> bytes:
    """The envelope that tells stage 2 an origin's event time has reached `event_time`."""
    return _HEAD.pack(HEARTBEAT, origin, event_time, 0, 0, 0)


class Envelope(NamedTuple):
    """One repartition record read back: a record (`RECORD`) or a heartbeat (`HEARTBEAT`)."""

    kind: int
    origin: int
    before: int
    ts: int
    position: Position
    record: dict[str, Any] | None


def decode(value: bytes) -> Envelope:
    """An envelope read back; DecodeError when it is none (a foreign write to the topic).

    >>> decode(heartbeat(2, 9_000))
    Envelope(kind=2, origin=2, before=9000, ts=0, position=(0, 0), record=None)
    """
    try:
        kind, origin, before, ts, offset, index = _HEAD.unpack_from(value)
        if kind == HEARTBEAT:
            return Envelope(kind, origin, before, ts, (offset, index), None)
        payload = value[_HEAD.size:]
        record = msgpack.unpackb(payload) if kind == PLAIN else decode_state(payload)
    except (struct.error, StateFormatError, ValueError, msgpack.UnpackException) as exc:
        raise DecodeError("decode_failed", f"not a repartition envelope: {exc}", value) from None
    if kind not in (RECORD, PLAIN) or not isinstance(record, dict):
        raise DecodeError("decode_failed", f"not a repartition envelope (kind {kind})", value)
    return Envelope(kind, origin, before, ts, (offset, index), record)


@dataclass(frozen=True)
class EnvelopeCodec:
    """The codec of a repartition topic, for the pipelines of both stages: stage 1 encodes
    records with it (`encode`: envelope without origin, see `encode_record`); stage 2's
    workers read envelopes with `decode` (above), not through this codec.

    Stage 1's codec carries the window's `judge`: a record late at its place in its input
    partition is routed to the late topic there, with its original bytes, and goes no further
    (stage 2 would judge it late by the same `before` anyway).
    """

    judge: Any = None
    carried: tuple[str, ...] | None = None  # the fields stage 2 reads (None: all of them)
    fields = None
    schema = None

    def encode(self, record: dict[str, Any]) -> bytes:
        try:
            return encode_record(NEVER, 0, (0, 0), record, self.carried)
        except StateFormatError as exc:
            raise EncodeError(f"cannot carry the record through the repartition topic: {exc}") from None

    def decode(self, data: bytes | None) -> dict[str, Any]:
        record = decode(data or b"").record
        if record is None:
            raise DecodeError("decode_failed", "a heartbeat is not a record", data)
        return record



@dataclass
class OriginClocks:
    """A repartition partition's view of every origin: its event time, from heartbeats, and
    the highest position counted (`marks`). `now()` is the lowest event time of them all:
    NEVER until every origin has been heard from.
    """

    origins: tuple[int, ...]
    clocks: dict[int, int] = field(default_factory=dict)
    marks: dict[int, Position] = field(default_factory=dict)

    def update(self, heard: Mapping[int, int], marks: Mapping[int, Position] | None = None) -> None:
        for origin, t in heard.items():
            if t > self.clocks.get(origin, NEVER):
                self.clocks[origin] = t
        for origin, pos in (marks or {}).items():
            if origin not in self.marks or pos > self.marks[origin]:
                self.marks[origin] = pos

    def heard(self, partial: Any) -> None:
        """Take a merged repartition range's heartbeats and marks, and set its `max_ts` to the
        partition's event time: the lowest of its origins' (None until each was heard)."""
        self.update(partial.clocks, partial.marks)
        low = self.now()
        partial.max_ts = None if low == NEVER else low

    def repeats(self, firsts: Mapping[int, Position]) -> bool:
        """True when a range counted a position at or below a mark: it was read against marks
        lower than these (a range planned before an earlier one with aborted copies merged)."""
        return any(origin in self.marks and pos <= self.marks[origin] for origin, pos in firsts.items())

    def state(self) -> dict[int, list[int]]:
        """What the changelog keeps: per origin, [event time, mark offset, mark index].

        >>> c = OriginClocks((0,)); c.update({0: 5}, {0: (7, 1)}); c.state()
        {0: [5, 7, 1]}
        >>> OriginClocks.load((0,), c.state()) == c
        True
        """
        return {o: [self.clocks.get(o, NEVER), *self.marks.get(o, (-1, -1))]
                for o in sorted(set(self.clocks) | set(self.marks))}

    @classmethod
    def load(cls, origins: tuple[int, ...], state: Mapping[int, Any]) -> OriginClocks:
        out = cls(origins)
        for o, (t, offset, index) in state.items():
            if t != NEVER:
                out.clocks[o] = t
            if offset >= 0:
                out.marks[o] = (offset, index)
        return out

    def now(self) -> int:
        if not self.origins:
            return NEVER
        return min(self.clocks.get(o, NEVER) for o in self.origins)
