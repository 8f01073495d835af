"""Changelog entries of window state, and the rule that restores only committed ones.

Partition p of the changelog topic holds the state of input partition p. Each entry is the
full accumulator of one (input topic, key, pane), or a tombstone once the pane is dropped,
with the epoch that wrote it in a header. Every epoch also writes one meta entry per owned
input partition: how far windows were emitted, the partition's max event time, and the
epochs its writer knew to be committed. The group's committed offset on changelog partition
p names the last committed epoch; the meta entries name the earlier ones. Restore keeps, per
key, the latest entry of a committed epoch, so an aborted epoch's entries (visible on the
embedded broker) are never counted.

>>> e = encode_meta(Meta("in", epoch=3, committed=(2,), emitted_through=10_000, max_ts=12_000))
>>> msgs = [entry(("in", "u1", 0), [4], 2), entry(("in", "u1", 0), [9], 3), e]
>>> r = restore(msgs, "in", last_committed=2)   # epoch 3 is not committed: its entry is ignored
>>> (r.panes, r.emitted_through, r.max_epoch)
({('u1', 0): [4]}, -4611686018427387904, 3)
>>> restore(msgs, "in", last_committed=3).panes
{('u1', 0): [9]}
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from typing import Any, Iterable

from stream.records import RawMessage
from stream.windows.watermark import NEVER

EPOCH_HEADER = "stream.epoch"
REPLICAS = 1000  # epoch numbers of replica r are r modulo this
_META = "\x00meta"


def next_epoch(after: int, replica: int, now_ms: int) -> int:
    """The next epoch number of `replica`: above `after`, and at least the wall clock.

    Numbers grow with the clock, so a restarted driver never reuses the number of an epoch
    its predecessor aborted (even one that wrote nothing but outputs), and each replica has
    its own residue, so two replicas never share one.

    >>> next_epoch(0, 1, now_ms=5)
    5001
    >>> next_epoch(5001, 1, now_ms=5)
    6001
    """
    base = max(after + 1, now_ms * REPLICAS)
    return base + (replica - base) % REPLICAS


def entry_key(topic: str, key: Any, pane: int) -> bytes:
    """The changelog key of one (input topic, key, pane); stable, so compaction keeps the last."""
    return pickle.dumps((topic, key, pane), protocol=5)


def meta_key(topic: str) -> bytes:
    return pickle.dumps((topic, _META), protocol=5)


def epoch_headers(epoch: int) -> tuple[tuple[str, bytes], ...]:
    return ((EPOCH_HEADER, str(epoch).encode()),)


def entry(slot: tuple[str, Any, int], accs: list[Any] | None, epoch: int) -> RawMessage:
    """A changelog message for one slot (None: a tombstone). Offsets are filled by the log."""
    value = None if accs is None else pickle.dumps(accs, protocol=5)
    return RawMessage(0, entry_key(*slot), value, 0, epoch_headers(epoch))


@dataclass(frozen=True, slots=True)
class Meta:
    """Per epoch and input partition: progress, and the epochs known to be committed."""

    topic: str
    epoch: int
    committed: tuple[int, ...]
    emitted_through: int = NEVER
    max_ts: int | None = None
    offset: int = -1


def encode_meta(meta: Meta) -> RawMessage:
    body = {"epoch": meta.epoch, "committed": list(meta.committed),
            "emitted_through": meta.emitted_through, "max_ts": meta.max_ts, "offset": meta.offset}
    return RawMessage(0, meta_key(meta.topic), json.dumps(body).encode(), 0, epoch_headers(meta.epoch))


def _epoch(m: RawMessage) -> int | None:
    for name, value in m.headers:
        if name == EPOCH_HEADER:
            return int(value)
    return None


def committed_epochs(messages: Iterable[RawMessage], last_committed: int) -> set[int]:
    """Every epoch a meta entry names as committed, plus the last one the group committed."""
    known = {last_committed} if last_committed > 0 else set()
    for m in messages:
        if m.value is not None and m.key is not None and pickle.loads(m.key)[1:] == (_META,):
            known.update(json.loads(m.value)["committed"])
    return known


@dataclass
class Restored:
    """One input partition's state as of its last committed epoch."""

    panes: dict[tuple[Any, int], list[Any]] = field(default_factory=dict)
    emitted_through: int = NEVER
    max_ts: int | None = None
    max_epoch: int = 0      # highest epoch seen in the log, committed or not


def restore(messages: list[RawMessage], topic: str, last_committed: int) -> Restored:
    """Replay a changelog partition: keep, per key, the latest entry of a committed epoch."""
    ok = committed_epochs(messages, last_committed)
    out = Restored()
    latest: dict[bytes, tuple[int, RawMessage]] = {}
    for m in messages:
        epoch = _epoch(m)
        if epoch is None or m.key is None:
            continue
        out.max_epoch = max(out.max_epoch, epoch)
        if epoch in ok and epoch >= latest.get(m.key, (0, m))[0]:
            latest[m.key] = (epoch, m)
    for key, (_, m) in latest.items():
        slot = pickle.loads(key)
        if slot[0] != topic:
            continue
        if slot[1:] == (_META,):
            meta = json.loads(m.value) if m.value is not None else {}
            out.emitted_through = meta.get("emitted_through", NEVER)
            out.max_ts = meta.get("max_ts")
        elif m.value is not None:
            out.panes[(slot[1], slot[2])] = pickle.loads(m.value)
    return out
