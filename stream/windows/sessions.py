"""Session window state of one input partition, as a sans-I/O state machine over buckets.

Workers aggregate each key's records into gap-wide buckets, carrying the first and last event
time of the bucket with the accumulators. Here, a key's buckets, in time order, form one
session while the next bucket's first record is less than `gap` after the previous bucket's
last one; a record that bridges two sessions merges them, because the buckets between are
then close enough. A session closes, once and final, when the watermark reaches
``last event time + gap + grace``.

Late records: a record is late exactly when the session it joins, or the one it would start,
has closed at its position in the partition. Workers send the records that are surely on
time as buckets; a key with a record that may be late comes record by record, and `place`
decides each one against the key's sessions, the closed ones included: the last emitted
session of each key is kept (`tails`) while a record could still reach it.

>>> from operators import Count
>>> from stream.windows.specs import Session
>>> s = SessionStore(Session(seconds=10), {"n": Count()}, grace_ms=0)
>>> first_last_n = lambda ts: [ts, ts, 1]
>>> s.merge({("u", 0): first_last_n(1_000), ("u", 10_000): first_last_n(10_500)})
>>> [(w.key, w.start, w.end, w.values) for w in s.advance(30_000)]
[('u', 1000, 20500, {'n': 2})]
>>> s.place("u", 20_200, first_last_n(20_200), watermark=30_000)  # joins the emitted session
(1000, 20500)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from operators.aggregate import Aggregation, Max, Min
from stream.windows.eventtime import NEVER
from stream.windows.specs import Session
from stream.windows.store import PaneKey, WindowResult, WindowResults

TAIL = "\x00tail"  # changelog entries (TAIL, key) hold a key's last emitted session


def _is_tail(key: Any) -> bool:
    return type(key) is tuple and len(key) == 2 and key[0] == TAIL


def session_accumulators(aggregations: Mapping[str, Aggregation]) -> list[Aggregation]:
    """What workers aggregate for a session stage: first and last event time, then the user's."""
    return [FirstEventTime(), LastEventTime(), *aggregations.values()]


@dataclass(frozen=True)
class FirstEventTime(Min):
    """The lowest event time of the records (Min over the event time, not a field)."""

    field: str | None = None  # type: ignore[assignment]  # no field: it reads the event time

    def extract(self, record: dict[str, Any], ts: int) -> int:
        return ts


@dataclass(frozen=True)
class LastEventTime(Max):
    """The highest event time of the records."""

    field: str | None = None  # type: ignore[assignment]  # no field: it reads the event time

    def extract(self, record: dict[str, Any], ts: int) -> int:
        return ts


@dataclass
class SessionStore:
    """Session windows of one partition: per key, records less than `gap` apart."""

    spec: Session
    aggregations: Mapping[str, Aggregation]
    grace_ms: int
    emitted_through: int = NEVER
    panes: dict[int, dict[Any, list[Any]]] = field(default_factory=dict)  # bucket: key: [first, last, *accs]
    _dirty: dict[int, set[Any]] = field(default_factory=dict)   # bucket: keys changed or deleted
    _dropped: set[int] = field(default_factory=set)              # buckets emptied
    early: bool = False
    _touched: set[Any] = field(default_factory=set)              # keys changed since early results
    _buckets: dict[Any, list[int]] = field(default_factory=dict)  # key: its buckets, sorted
    _next_close: dict[Any, int] = field(default_factory=dict)    # key: when its first session can close
    tails: dict[int, dict[Any, tuple[int, int]]] = field(default_factory=dict)  # bucket: key: last
                                                                 # emitted session (first, last)
    _tail_of: dict[Any, int] = field(default_factory=dict)       # key: the bucket of its tail

    def __post_init__(self) -> None:
        self._aggs = session_accumulators(self.aggregations)

    # -- the WindowStore interface the driver uses ------------------------------------------
    def merge(self, partials: Mapping[PaneKey, list[Any]]) -> None:
        """Merge buckets of on-time records."""
        merges = [a.merge for a in self._aggs]
        for (key, pane), accs in partials.items():
            held = self.panes.setdefault(pane, {})
            old = held.get(key)
            if old is None:
                held[key] = accs
                buckets = self._buckets.setdefault(key, [])
                buckets.append(pane)
                if len(buckets) > 1 and buckets[-2] > pane:
                    buckets.sort()
            else:
                held[key] = [m(x, y) for m, x, y in zip(merges, old, accs)]
            self._next_close.pop(key, None)
            self._dirty.setdefault(pane, set()).add(key)
            if self.early:
                self._touched.add(key)

    def place(self, key: Any, ts: int, accs: list[Any], watermark: int) -> tuple[int, int] | None:
        """Add one record judged at `watermark` (its partition's, just before it); returns the
        closed session ``(start, end)`` it is late for, or None when it was added."""
        gap, grace = self.spec.gap_ms, self.grace_ms
        bucket = self._tail_of.get(key)
        if bucket is not None:  # it would join the key's last emitted session
            first, last = self.tails[bucket][key]
            if first - gap < ts < last + gap:
                return (first, last + gap)
        for _, s in self._sessions(key):  # or one that has closed, not yet emitted
            if s[0] - gap < ts < s[1] + gap and s[1] + gap + grace <= watermark:
                return (s[0], s[1] + gap)
        if ts + gap + grace <= watermark:  # or the session it would start has closed
            return (ts, ts + gap)
        self.merge({(key, self.spec.pane_of(ts)): accs})
        return None

    def _sessions(self, key: Any) -> list[tuple[list[int], list[Any]]]:
        """The key's sessions, oldest first: (buckets, merged [first, last, *accs])."""
        merges = [a.merge for a in self._aggs]
        out: list[tuple[list[int], list[Any]]] = []
        for pane in self._buckets.get(key, []):
            accs = self.panes[pane][key]
            if out and accs[0] - out[-1][1][1] < self.spec.gap_ms:
                buckets, merged = out[-1]
                buckets.append(pane)
                out[-1] = (buckets, [m(x, y) for m, x, y in zip(merges, merged, accs)])
            else:
                out.append(([pane], accs))
        return out

    def advance(self, watermark: int) -> WindowResults:
        """Emit the sessions the watermark closes (last + gap + grace <= watermark)."""
        if watermark <= self.emitted_through:
            return WindowResults()
        horizon = watermark - self.spec.gap_ms - self.grace_ms  # sessions ending by here close
        candidates = {k for p, keys in self.panes.items() if p <= horizon for k in keys}
        out: list[WindowResult] = []
        for key in candidates:
            if self._next_close.get(key, NEVER) > watermark:
                continue
            for buckets, accs in self._sessions(key):
                closes = accs[1] + self.spec.gap_ms + self.grace_ms
                if closes > watermark:
                    self._next_close[key] = closes
                    break
                out.append(self._result(key, accs))
                self._keep_tail(key, accs[0], accs[1])  # first: its bucket is not dropped
                self._delete(key, buckets)
        self.emitted_through = watermark
        self._forget_tails(watermark)
        out.sort(key=lambda w: (w.start, str(w.key)))
        return WindowResults.of(out)

    def _keep_tail(self, key: Any, first: int, last: int) -> None:
        """Remember a key's last emitted session, so a record that would join it is late."""
        old = self._tail_of.get(key)
        bucket = self.spec.pane_of(last)
        self.tails.setdefault(bucket, {})[key] = (first, last)
        self._tail_of[key] = bucket
        self._dirty.setdefault(bucket, set()).add((TAIL, key))
        if old is not None and old != bucket:
            del self.tails[old][key]
            self._dirty.setdefault(old, set()).add((TAIL, key))
            self._drop_if_empty(old)

    def _forget_tails(self, watermark: int) -> None:
        """Drop tails no record can reach any more: one that could would be late on its own
        (its own session closed: ts + gap + grace <= watermark) with ts < last + gap."""
        gap = self.spec.gap_ms
        for bucket in [b for b in self.tails if b + gap + 2 * gap + self.grace_ms <= watermark]:
            for key in self.tails.pop(bucket):
                del self._tail_of[key]
                self._dirty.setdefault(bucket, set()).add((TAIL, key))
            self._drop_if_empty(bucket)

    def _drop_if_empty(self, bucket: int) -> None:
        if not self.panes.get(bucket) and not self.tails.get(bucket):
            self.panes.pop(bucket, None)
            self.tails.pop(bucket, None)
            self._dirty.pop(bucket, None)
            self._dropped.add(bucket)

    def _result(self, key: Any, accs: list[Any]) -> WindowResult:
        names = list(self.aggregations)
        values = {n: a.result(acc) for n, a, acc in zip(names, self._aggs[2:], accs[2:])}
        return WindowResult(key, accs[0], accs[1] + self.spec.gap_ms, values)

    def _delete(self, key: Any, buckets: list[int]) -> None:
        for pane in buckets:
            held = self.panes[pane]
            del held[key]
            self._dirty.setdefault(pane, set()).add(key)  # written as a deletion
            if not held:
                del self.panes[pane]
                self._drop_if_empty(pane)
        gone = set(buckets)
        left = [p for p in self._buckets[key] if p not in gone]
        if left:
            self._buckets[key] = left
        else:
            del self._buckets[key]
            self._next_close.pop(key, None)
        self._touched.discard(key)

    def early_results(self) -> WindowResults:
        """Current results of the open sessions of keys changed since the last call (partial)."""
        touched, self._touched = self._touched, set()
        return WindowResults.of(self._result(k, accs) for k in touched if k in self._buckets
                                for _, accs in self._sessions(k))

    def has_changes(self) -> bool:
        return bool(self._dropped) or any(self._dirty.values())

    def take_changes(self) -> tuple[dict[int, dict[Any, list[Any] | None]], list[int]]:
        """({bucket: {key: accumulators, or None when deleted}}, buckets emptied) since the last call."""
        changed: dict[int, dict[Any, Any]] = {}
        for pane, keys in self._dirty.items():
            held, tails = self.panes.get(pane, {}), self.tails.get(pane, {})
            changed[pane] = {k: (tails.get(k[1]) if _is_tail(k) else held.get(k)) for k in keys}
        dropped = sorted(self._dropped)
        self._dirty, self._dropped = {}, set()
        return changed, dropped

    def load(self, entries: Mapping[PaneKey, list[Any] | None], emitted_through: int) -> None:
        self.emitted_through = max(self.emitted_through, emitted_through)
        for (key, pane), accs in sorted(entries.items(), key=lambda e: e[0][1]):
            if accs is None:
                continue
            if _is_tail(key):
                self.tails.setdefault(pane, {})[key[1]] = tuple(accs)
                self._tail_of[key[1]] = pane
            else:
                self.panes.setdefault(pane, {})[key] = accs
                self._buckets.setdefault(key, []).append(pane)

    def open_windows(self) -> int:
        return sum(len(keys) for keys in self.panes.values())

    def check_invariants(self) -> None:
        for key, bucket in self._tail_of.items():
            assert key in self.tails[bucket], f"tail of {key!r} not held"
        assert sum(map(len, self.tails.values())) == len(self._tail_of), "a tail not indexed"
        for pane, keys in self.panes.items():
            assert keys, f"empty bucket {pane} held"
            assert pane % self.spec.gap_ms == 0, f"bucket {pane} not aligned"
            for key in keys:
                assert pane in self._buckets[key], f"bucket {pane} of {key!r} not indexed"
        for key, buckets in self._buckets.items():
            assert buckets == sorted(buckets) and all(key in self.panes[p] for p in buckets)
