"""The Kafka source: the driver's group membership and the workers' pooled range readers.

The driver never reads records: it subscribes, pauses every partition it is assigned and
keeps polling to stay in the group. Workers read ranges with `assign()`, stop when their
position reaches the range end or at partition EOF (never by waiting for offset end - 1,
which may be a transaction marker), and report the end offset they saw from the fetch.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from stream.records import BEGINNING, TP, RawMessage, ReadBatch
from stream.secrets import reveal_config

log = logging.getLogger(__name__)
assert BEGINNING == OFFSET_BEGINNING


class KafkaSession:
    """The driver's consumer-group member: assignment, committed offsets, commits."""

    def __init__(self, config: dict[str, Any], topics: list[str], reader: "KafkaReader") -> None:
        self._reader = reader
        self._consumer = Consumer(reveal_config({**config, "enable.auto.commit": False,
                                                 "auto.offset.reset": "earliest"}))
        self._events: list[tuple[str, list[TP]]] = []
        self._assigned: set[TP] = set()
        self.on_revoke: Any = None  # called with the partitions while they are still ours
        self._failure: BaseException | None = None
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.pause(partitions)
        tps = [(p.topic, p.partition) for p in partitions]
        self._assigned.update(tps)
        self._events.append(("assigned", tps))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        if self.on_revoke is not None:
            try:  # commit the open epoch before the partitions go
                self.on_revoke(tps)
            except BaseException as exc:  # noqa: BLE001 - raised from poll(): never out of a librdkafka callback
                self._failure = self._failure or exc
        else:
            self._events.append(("revoked", tps))
        self._assigned.difference_update(tps)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._assigned.difference_update(tps)
        self._events.append(("lost", tps))

    def poll(self, timeout: float) -> list[tuple[str, list[TP]]]:
        """Serve group callbacks; returns the assignment changes since the last call."""
        msg = self._consumer.poll(timeout)
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if msg is not None and msg.error() is not None:
            log.warning("consumer group: %s", msg.error())
        events, self._events = self._events, []
        return events

    def assigned(self) -> list[TP]:
        return sorted(self._assigned)

    def committed(self, tps: list[TP], timeout: float = 10.0) -> dict[TP, int]:
        """Committed offsets; BEGINNING where the group has none."""
        got = self._consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=timeout)
        return {(x.topic, x.partition): (x.offset if x.offset >= 0 else BEGINNING) for x in got}

    def commit(self, offsets: dict[TP, int]) -> None:
        if offsets:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                  asynchronous=False)

    def group_metadata(self) -> Any:
        """The group's metadata for `send_offsets_to_transaction`."""
        return self._consumer.consumer_group_metadata()

    def reader(self) -> "KafkaReader":
        """The picklable reader that range tasks use."""
        return self._reader

    def close(self) -> None:
        try:
            self._consumer.close()  # leaves the group; the revoke hook may commit first
        except Exception as exc:  # noqa: BLE001 - closing after a failure: report, do not mask the failure
            log.warning("closing the group consumer: %s", exc)


# Consumers kept across ranges, one per (configuration, worker thread, partition): creating one
# per range costs more than the read, and a consumer that stays on its partition has already
# fetched the next range when its task arrives (partitions are pinned to workers). Per thread:
# a consumer is not safe for two reads at once, and a worker may run several tasks in parallel.
# At most WARM_PARTITIONS per thread (whatever their configuration: pipelines come and go on a
# long-lived Dask worker); the least recently used one is closed beyond that. One unused for
# IDLE_CLOSE_S is closed too: an idle consumer keeps fetching its partition every
# fetch.wait.max.ms, load that the broker serves for nothing once its pipeline has moved on.
_POOL: dict[tuple, "_PooledConsumer"] = {}
_POOL_LOCK = threading.Lock()
WARM_PARTITIONS = 16
IDLE_CLOSE_S = 10.0


@dataclass
class _PooledConsumer:
    consumer: Consumer
    tp: TP | None = None
    position: int | None = None
    used: float = 0.0


def _pooled(config: tuple, tp: TP) -> _PooledConsumer:
    thread = threading.get_ident()
    key = (config, thread, tp)
    entry = _POOL.get(key)
    if entry is None:
        settings = dict(config)
        settings.update({"enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "earliest", "enable.auto.offset.store": False,
                         "fetch.wait.max.ms": 20, "queued.max.messages.kbytes": 4_096})
        entry = _PooledConsumer(Consumer(reveal_config(settings)))
    now = time.monotonic()
    entry.used = now
    with _POOL_LOCK:  # only this thread's consumers: another thread may be reading with its own
        _POOL[key] = entry
        mine = sorted((k for k in _POOL if k[1] == thread), key=lambda k: _POOL[k].used)
        extra = len(mine) - WARM_PARTITIONS
        for i, k in enumerate(mine):
            if i < extra or now - _POOL[k].used > IDLE_CLOSE_S:
                _close(_POOL.pop(k))
    return entry


def _close(entry: _PooledConsumer) -> None:
    try:
        entry.consumer.close()
    except Exception:  # noqa: BLE001 - closing a reader: nothing useful to do with an error
        pass


@atexit.register
def close_pool() -> None:
    """Close every pooled reader of this process."""
    while _POOL:
        with _POOL_LOCK:
            _, entry = _POOL.popitem()
        _close(entry)


@dataclass(frozen=True)
class KafkaReader:
    """Reads partition ranges with a consumer pooled per worker thread and partition."""

    config: tuple[tuple[str, Any], ...]
    max_wait_s: float = 30.0

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "KafkaReader":
        return cls(tuple(sorted(config.items())))

    def read(self, topic: str, partition: int, start: int, end: int | None,
             max_records: int, tail_wait_s: float = 0.0) -> ReadBatch:
        entry = _pooled(self.config, (topic, partition))
        c = entry.consumer
        if entry.tp != (topic, partition) or entry.position != start or start < 0:
            c.assign([TopicPartition(topic, partition, start)])
            entry.tp, entry.position = (topic, partition), None
        entry.position = None  # unknown until this read ends cleanly
        batch = _read_loop(c, (topic, partition), start, end, max_records, tail_wait_s, self.max_wait_s)
        entry.position = batch.next_offset if not batch.past_end else None
        low_high = c.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        high = low_high[1] if low_high and low_high[1] >= 0 else None
        return ReadBatch(batch.messages, batch.next_offset, high, batch.eof)


class KafkaMessages(Sequence[RawMessage]):
    """The messages of one read, kept as the client returned them.

    `column(name)` extracts one field of all of them in a tight loop; a RawMessage is built
    only when one is indexed or iterated (the row path, dead letters, late records).
    """

    __slots__ = ("_msgs",)

    def __init__(self, msgs: list[Any]) -> None:
        self._msgs = msgs

    def __len__(self) -> int:
        return len(self._msgs)

    @staticmethod
    def _raw(m: Any) -> RawMessage:
        ts_type, ts = m.timestamp()
        return RawMessage(m.offset(), m.key(), m.value(), ts if ts_type else 0, tuple(m.headers() or ()))

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._raw(m) for m in self._msgs[i]]
        return self._raw(self._msgs[i])

    def __iter__(self) -> Iterator[RawMessage]:
        return map(self._raw, self._msgs)

    def column(self, name: str) -> list[Any]:
        ms = self._msgs
        if name == "value":
            return [m.value() for m in ms]
        if name == "key":
            return [m.key() for m in ms]
        if name == "offset":
            return [m.offset() for m in ms]
        if name == "timestamp_ms":
            return [ts if kind else 0 for kind, ts in (m.timestamp() for m in ms)]
        return [getattr(r, name) for r in self]


@dataclass
class _Loop:
    messages: KafkaMessages
    next_offset: int
    eof: bool
    past_end: bool


def _read_loop(c: Consumer, tp: TP, start: int, end: int | None, max_records: int,
               tail_wait_s: float, max_wait_s: float) -> _Loop:
    msgs: list[Any] = []
    eof_at: int | None = None
    past_end = False
    t0 = time.monotonic()
    while len(msgs) < max_records and not past_end:
        want = max_records - len(msgs)
        if end is not None and msgs:  # ask for no more than the range holds, so the
            want = min(want, end - msgs[-1].offset() - 1)  # consumer stays at its end
        elif end is not None and start >= 0:
            want = min(want, end - start)
        # consume() waits its timeout for the whole count: a tail read (end unknown) asks
        # briefly and loops, so it returns as soon as it reaches the end of what is there;
        # once it has records, it only takes what is already fetched (no wait)
        ask = max(1, min(want, 10_000))
        got = c.consume(ask, 0.1 if end is not None else (0.0 if msgs else 0.01))
        for m in got:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    eof_at = m.offset()
                    continue
                raise KafkaException(err)
            off: int = m.offset()  # type: ignore[assignment]  # set on every message without an error
            if end is not None and off >= end:
                past_end = True
                break
            if off >= start or start < 0:
                msgs.append(m)
        nxt = msgs[-1].offset() + 1 if msgs else start
        if end is not None and nxt >= end:
            break
        if eof_at is None and nxt >= 0:
            # A consumer left at the end by the previous read gets no second EOF event: ask
            # the end offset the last fetch saw (never ListOffsets, see docs/brokers.md).
            high = c.get_watermark_offsets(TopicPartition(*tp), cached=True)
            if high and 0 <= high[1] <= nxt:
                eof_at = high[1]
        waited = time.monotonic() - t0
        if eof_at is not None and (msgs or waited >= tail_wait_s or end is not None):
            break
        if end is None and msgs and len(got) < ask:
            break  # a tail read has drained what was fetched: hand it over, read on next time
        if waited >= max_wait_s:
            break
    nxt = max(msgs[-1].offset() + 1 if msgs else start, eof_at if eof_at is not None else start)
    if end is not None and (past_end or nxt > end):
        nxt = end
    return _Loop(KafkaMessages(msgs), nxt, eof_at is not None and nxt >= eof_at, past_end)


def read_all(config: dict[str, Any], topic: str, partition: int,
             timeout_s: float = 30.0) -> list[RawMessage]:
    """Every message of one partition, from the beginning to EOF (end offsets from the fetch)."""
    reader = KafkaReader.from_config({**config, "group.id": config.get("group.id", "stream-read-all")})
    out: list[RawMessage] = []
    start, t0 = BEGINNING, time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        batch = reader.read(topic, partition, start, None, 100_000, 0.0)
        out.extend(batch.messages)
        start = batch.next_offset
        if batch.eof:
            return out
    raise TimeoutError(f"reading {topic}[{partition}] did not reach its end in {timeout_s:.0f} s")


def read_partitions(config: dict[str, Any], topic: str, partitions: list[int],
                    timeout_s: float = 60.0) -> dict[int, list[RawMessage]]:
    """Every message of several partitions, from the beginning to their end, with one consumer.

    For restoring state: all partitions are fetched at once, so restoring N partitions costs
    one connection and one round of fetches, not N. The ends are the high watermarks asked
    for first: an empty partition is not read at all, and a partition is done when the
    position reaches its end (a transaction marker last included) or at EOF, whichever
    comes first. Waiting for EOF alone cost about half a second on the embedded broker.
    """
    c = Consumer(reveal_config({**config, "group.id": config.get("group.id", "stream-read-all"),
                                "enable.auto.commit": False, "enable.partition.eof": True,
                                "fetch.wait.max.ms": 100}))
    out: dict[int, list[Any]] = {p: [] for p in partitions}
    t0 = time.monotonic()
    try:
        bounds = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s) for p in partitions}
        ends = {p: high for p, (low, high) in bounds.items() if high > low}
        left = set(ends)
        c.assign([TopicPartition(topic, p, bounds[p][0]) for p in sorted(left)])
        while left:
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(f"reading {topic} partitions {sorted(left)} did not reach "
                                   f"their end in {timeout_s:.0f} s")
            for m in c.consume(10_000, 0.1):
                err = m.error()
                if err is None:
                    out[m.partition()].append(m)  # type: ignore[index]  # set on every message without an error
                elif err.code() == KafkaError._PARTITION_EOF:
                    left.discard(m.partition())
                else:
                    raise KafkaException(err)
            for tp in c.position([TopicPartition(topic, p) for p in left]):
                if tp.offset >= ends[tp.partition]:
                    left.discard(tp.partition)
        return {p: list(KafkaMessages(msgs)) for p, msgs in out.items()}
    finally:
        c.close()
