"""Changelog entries of window state, and the rule that restores only committed ones.

Partition p of the changelog topic holds the state of input partition p. Each epoch writes,
per pane it changed, a delta: the full accumulators of the keys it changed, in chunks keyed
by (input topic, pane, epoch, chunk), with the epoch in a header. Deltas of one pane replayed
in epoch order rebuild it (a later full value replaces an earlier one). When a pane is dropped
its deltas are tombstoned, so a compacted changelog holds only open panes. One message per
changed pane, not per key, keeps the driver's cost per epoch small. Every epoch also writes one meta entry per owned
input partition: how far windows were emitted, the partition's max event time, and the
epochs of the partition's own line known to be committed: the previous one (the epoch its
state was restored from, or the last one committed while the writer owned it), and every
committed epoch whose deltas of it are still live (a compacted changelog keeps only the latest
meta entry, so that one alone must name them all). Never an epoch outside that line: a
partition restored from an older point than another driver's last commit must not name it. The group's committed offset on changelog
partition p names the last committed epoch, in the same transaction as the input offsets; meta
entries name the earlier ones. Restore (`restore_point`) takes the newest epoch known to be
committed, and of the other epochs only those its own meta entry names; it resumes at the input
offset in that meta entry, so the state and the offset it is restored with always come from
one epoch, even where the group's offsets read stale. An aborted epoch's entries (visible on
the embedded broker) are never counted.

>>> e = encode_meta(Meta("in", epoch=3, committed=(2,), emitted_through=10_000, max_ts=12_000))
>>> msgs = [*deltas("in", 0, 2, {"u1": [4], "u2": [1]}), *deltas("in", 0, 3, {"u1": [9]}), e]
>>> r = restore(msgs, "in", last_committed=2)   # epoch 3 is not committed: its entry is ignored
>>> (r.panes, r.emitted_through, r.max_epoch)
({('u1', 0): [4], ('u2', 0): [1]}, -4611686018427387904, 3)
>>> restore(msgs, "in", last_committed=3).panes
{('u1', 0): [9], ('u2', 0): [1]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from stream.codecs.state import VERSION, StateFormatError, decode, encode, is_pickle
from stream.records import RawMessage
from stream.windows.eventtime import NEVER

EPOCH_HEADER = "stream.epoch"
REPLICAS = 1000  # epoch numbers of replica r are r modulo this
_META = "meta"
_OPEN = "open"  # an epoch began writing: one whose commit never comes was aborted


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


CHUNK_KEYS = 20_000  # keys per delta message, so one message stays a few MB at most


def meta_key(topic: str) -> bytes:
    """The key of `topic`'s meta entries: the format version, the input topic, "meta".

    >>> meta_key("in"), _delta_key("in", 7, 3001, 0)
    (b'[1,"in","meta"]', b'[1,"in",7,3001,0]')
    """
    return _key(topic, _META)


def open_marker(topic: str, epoch: int) -> RawMessage:
    """The entry an epoch writes with its first output: should the epoch never commit, the
    next restore sees an epoch that began and was aborted (`Restored.aborted`).

    >>> open_marker("in", 6001).key
    b'[1,"in","open"]'
    """
    return RawMessage(0, _key(topic, _OPEN), b"", 0, epoch_headers(epoch))


def _key(*slot: Any) -> bytes:
    return json.dumps([VERSION, *slot], separators=(",", ":")).encode()


def _slot(m: RawMessage) -> tuple[Any, ...]:
    """The (topic, "meta") or (topic, pane, epoch, chunk) a changelog entry's key names."""
    try:
        key = json.loads(m.key) if m.key is not None else None
    except ValueError:
        found = "a pickle, the format before state format 1, which is not loaded" if is_pickle(m.key) else "not JSON"
        raise StateFormatError(f"the changelog entry at offset {m.offset} has a key in no known format: "
                               f"it is {found}") from None
    if not isinstance(key, list) or not key or key[0] != VERSION:
        version = key[0] if isinstance(key, list) and key else "unknown"
        raise StateFormatError(f"the changelog entry at offset {m.offset} is in state format {version}; "
                               f"this version reads format {VERSION} only")
    slot = tuple(key[1:])
    if not (isinstance(slot[0], str) and (slot[1:] in ((_META,), (_OPEN,)) or (
            len(slot) == 4 and all(type(n) is int for n in slot[1:])))):
        raise StateFormatError(f"the changelog entry at offset {m.offset} has a key that names no state: {m.key!r}")
    return slot


def epoch_headers(epoch: int) -> tuple[tuple[str, bytes], ...]:
    """The headers that tag a changelog entry with its epoch."""
    return ((EPOCH_HEADER, str(epoch).encode()),)


def _delta_key(topic: str, pane: int, epoch: int, chunk: int) -> bytes:
    return _key(topic, pane, epoch, chunk)


def deltas(topic: str, pane: int, epoch: int, changed: Mapping[Any, Sequence[Any]],
           chunk_keys: int = CHUNK_KEYS) -> list[RawMessage]:
    """The delta messages of one pane for one epoch: full accumulators of the changed keys."""
    items = list(changed.items())
    headers = epoch_headers(epoch)
    return [RawMessage(0, _delta_key(topic, pane, epoch, i // chunk_keys),
                       encode(dict(items[i:i + chunk_keys])), 0, headers)
            for i in range(0, len(items), chunk_keys)]


def delta_tombstones(topic: str, pane: int, written: list[tuple[int, int]],
                     epoch: int) -> list[RawMessage]:
    """Tombstones for every delta of a dropped pane; `written` lists (epoch, chunks)."""
    headers = epoch_headers(epoch)
    return [RawMessage(0, _delta_key(topic, pane, e, c), None, 0, headers)
            for e, n in written for c in range(n)]


@dataclass(frozen=True, slots=True)
class Meta:
    """Per epoch and input partition: progress, and the epochs known to be committed."""

    topic: str
    epoch: int
    committed: tuple[int, ...]
    emitted_through: int = NEVER
    max_ts: int | None = None
    offset: int = -1
    origins: Mapping[int, Any] | None = None  # a repartition partition: OriginClocks.state()


def encode_meta(meta: Meta) -> RawMessage:
    """A partition's meta entry as a changelog record (JSON: epoch, epochs it builds on, offset)."""
    body: dict[str, Any] = {"epoch": meta.epoch, "committed": list(meta.committed),
                            "emitted_through": meta.emitted_through, "max_ts": meta.max_ts, "offset": meta.offset}
    if meta.origins:
        body["origins"] = {str(o): t for o, t in meta.origins.items()}
    return RawMessage(0, meta_key(meta.topic), json.dumps(body).encode(), 0, epoch_headers(meta.epoch))


def _epoch(m: RawMessage) -> int | None:
    for name, value in m.headers:
        if name == EPOCH_HEADER:
            return int(value)
    return None


def restore_point(messages: Iterable[RawMessage], topic: str, last_committed: int) -> tuple[int, set[int]]:
    """The epoch to restore, and the epochs whose entries make up its state.

    The epoch is the newest one known to be committed that has a meta entry of `topic`:
    the group's (`last_committed`), or a later one that some meta entry names (a writer names
    only epochs it saw commit; the group's offsets can read stale, as on the embedded broker
    while another transaction is open on a shared partition). Its state is made of its own
    entries and those of the epochs its meta entry names, and that meta entry holds the input
    offset the state reflects: state and offset always come from one epoch. Entries of epochs
    no such meta entry names (aborted, open, or simply later) never count.

    >>> log = [encode_meta(Meta("in", 3, (2,))), encode_meta(Meta("in", 5, (3, 4))),
    ...        encode_meta(Meta("in", 6, (5,)))]
    >>> restore_point(log, "in", 5)    # epoch 6 is open or aborted: no meta entry names it
    (5, {3, 4, 5})
    >>> restore_point(log, "in", 3)    # the group's offsets read stale: epoch 5 is named
    (5, {3, 4, 5})
    >>> restore_point([], "in", -2)    # nothing committed: no state
    (-2, set())
    """
    key, metas, named = meta_key(topic), {}, set()
    for m in messages:
        if m.value is not None and m.key is not None and _slot(m)[1:] == (_META,):
            body = _meta(m)
            named.update(body["committed"])
            if m.key == key:
                metas[_epoch(m)] = body["committed"]
    known = [e for e in named | {last_committed} if e in metas and e >= last_committed]
    if known:
        point = max(known)
        return point, {point, *metas[point]}
    if last_committed <= 0:
        return last_committed, set()
    # no meta entry of the group's epoch (not written by this version): every epoch up to it
    return last_committed, {e for e in named if e < last_committed} | {last_committed}


def _meta(m: RawMessage) -> dict[str, Any]:
    try:
        body = json.loads(m.value or b"")
        if isinstance(body, dict) and isinstance(body.get("committed"), list):
            return body
        problem = "not a meta entry"
    except ValueError as exc:
        problem = str(exc)
    raise StateFormatError(f"the changelog entry at offset {m.offset} cannot be read: {problem}")


def _value(m: RawMessage) -> Any:
    try:
        return decode(m.value) if m.value is not None else None
    except StateFormatError as exc:
        raise StateFormatError(f"the changelog entry at offset {m.offset} cannot be read: {exc}") from None


@dataclass
class Restored:
    """One input partition's state as of its last committed epoch."""

    panes: dict[tuple[Any, int], list[Any]] = field(default_factory=dict)
    emitted_through: int = NEVER
    max_ts: int | None = None
    max_epoch: int = 0      # highest epoch seen in the log, committed or not
    written: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # pane: [(epoch, chunks)]
    sizes: dict[int, int] = field(default_factory=dict)  # pane: bytes of its committed deltas
    live_committed: set[int] = field(default_factory=set)  # committed epochs with live deltas
    epoch: int = 0             # the epoch restored (restore_point)
    offset: int | None = None  # the input offset its state reflects (its meta entry)
    aborted: set[int] = field(default_factory=set)  # epochs that wrote here after it, never committed
    origins: dict[int, Any] = field(default_factory=dict)  # a repartition partition's OriginClocks.state()


def restore(messages: list[RawMessage], topic: str, last_committed: int) -> Restored:
    """Replay a changelog partition: per message key, the latest entry of a committed epoch;
    then each pane's deltas in epoch order."""
    point, ok = restore_point(messages, topic, last_committed)
    out = Restored(epoch=max(point, 0))
    latest: dict[bytes, tuple[int, RawMessage]] = {}
    live: dict[bytes, RawMessage] = {}  # every key's last entry, committed or not: still to tombstone?
    for m in messages:
        epoch = _epoch(m)
        if epoch is None or m.key is None:
            continue
        out.max_epoch = max(out.max_epoch, epoch)
        if epoch > point and epoch not in ok:
            out.aborted.add(epoch)
        live[m.key] = m
        if epoch in ok and epoch >= latest.get(m.key, (0, m))[0]:
            latest[m.key] = (epoch, m)
    chunks: list[tuple[int, int, dict[Any, Any]]] = []
    for epoch, m in latest.values():
        slot = _slot(m)
        if slot[0] != topic:
            continue
        if slot[1:] == (_OPEN,):
            continue
        if slot[1:] == (_META,):
            meta = _meta(m) if m.value is not None else {}
            out.emitted_through = meta.get("emitted_through", NEVER)
            out.max_ts = meta.get("max_ts")
            out.origins = {int(o): t for o, t in meta.get("origins", {}).items()}
            if epoch == point and meta.get("offset", -1) != -1:  # BEGINNING (-2) too: nothing merged yet
                out.offset = meta["offset"]
        elif m.value is not None:
            chunks.append((slot[2], slot[1], _value(m)))
            out.sizes[slot[1]] = out.sizes.get(slot[1], 0) + len(m.value)
    for _order, pane, entries in sorted(chunks, key=lambda c: c[0]):
        for k, accs in entries.items():
            out.panes[(k, pane)] = accs
    written: dict[tuple[int, int], int] = {}
    for key, last in live.items():
        alive = last.value is not None or (key in latest and latest[key][1].value is not None)
        slot = _slot(last)
        if alive and slot[0] == topic and len(slot) == 4:
            written[(slot[1], slot[2])] = max(written.get((slot[1], slot[2]), 0), slot[3] + 1)
    for (pane, epoch), n in sorted(written.items()):
        out.written.setdefault(pane, []).append((epoch, n))
        if epoch in ok:
            out.live_committed.add(epoch)
    return out
