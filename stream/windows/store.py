"""Window state of one input partition, as a sans-I/O state machine over panes.

`merge` takes partial aggregates of records that are on time (the workers decide that,
record by record: `stream.windows.eventtime`); `advance(watermark)` emits every window whose
``end + grace`` the watermark has reached, each exactly once, and drops panes no open window
needs. `take_changes` hands the entries changed, and the panes dropped, since its last call
to the changelog.

>>> from operators import Count
>>> from stream.windows.specs import Tumbling
>>> s = WindowStore(Tumbling(seconds=10), {"n": Count()}, grace_ms=0)
>>> s.merge({("u1", 0): [3]})
>>> [(w.key, w.start, w.values) for w in s.advance(10_000)]
[('u1', 0, {'n': 3})]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from operators.aggregate import Aggregation
from stream.windows.eventtime import NEVER
from stream.windows.specs import Hopping

PaneKey = tuple[Any, int]  # (key, pane start)


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One closed window of one key, with each aggregation's result by output name."""

    key: Any
    start: int
    end: int
    values: dict[str, Any]


@dataclass(slots=True)
class WindowResults:
    """Window results by column: a key, a start, an end and each output's value per row.

    What the stores emit: the columns go straight to a batch encoder, and no object is made
    per result unless someone iterates, which yields `WindowResult` rows.

    >>> r = WindowResults(["a", "b"], [0, 0], [10, 10], {"n": [1, 2]})
    >>> r.extend(WindowResults.of([WindowResult("a", 10, 20, {"n": 5})]))
    >>> [(w.key, w.start, w.values) for w in r], len(r)
    ([('a', 0, {'n': 1}), ('b', 0, {'n': 2}), ('a', 10, {'n': 5})], 3)
    """

    keys: list[Any] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    values: dict[str, list[Any]] = field(default_factory=dict)  # output name: one value per row

    @classmethod
    def of(cls, rows: Iterable[WindowResult]) -> "WindowResults":
        """The columns of `rows`, which all have the same output names."""
        rows = list(rows)
        names = list(rows[0].values) if rows else []
        return cls([w.key for w in rows], [w.start for w in rows], [w.end for w in rows],
                   {n: [w.values[n] for w in rows] for n in names})

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[WindowResult]:
        names, columns = list(self.values), list(self.values.values())
        for key, start, end, *vals in zip(self.keys, self.starts, self.ends, *columns):
            yield WindowResult(key, start, end, dict(zip(names, vals)))

    def extend(self, other: "WindowResults") -> None:
        """Append `other`'s rows (results of the same window stage: the same outputs)."""
        if not other:
            return
        if not self:
            self.values = {n: [] for n in other.values}
        if self.values.keys() != other.values.keys():
            raise ValueError(f"results with outputs {list(other.values)} do not extend {list(self.values)}")
        self.keys += other.keys
        self.starts += other.starts
        self.ends += other.ends
        for name, column in other.values.items():
            self.values[name] += column

    def select(self, keep: Callable[[WindowResult], bool]) -> "WindowResults":
        """The rows `keep` accepts."""
        return WindowResults.of(w for w in self if keep(w))


@dataclass
class WindowStore:
    """Tumbling and hopping windows of one partition, kept as slide-sized panes per key."""

    spec: Hopping
    aggregations: Mapping[str, Aggregation]
    grace_ms: int
    emitted_through: int = NEVER
    panes: dict[int, dict[Any, Sequence[Any]]] = field(default_factory=dict)  # pane: key: accumulators
    _dirty: dict[int, set[Any]] = field(default_factory=dict)   # pane: keys changed
    _dropped: set[int] = field(default_factory=set)              # panes dropped
    early: bool = False                                          # track changes for early results
    _touched: dict[int, set[Any]] = field(default_factory=dict)  # pane: keys changed since early

    def closes_at(self, window_start: int) -> int:
        """The watermark at which the window starting at `window_start` closes."""
        return window_start + self.spec.size_ms + self.grace_ms

    def pane_closed(self, pane: int) -> bool:
        """True when every window containing the pane has been emitted."""
        return self.closes_at(pane) <= self.emitted_through

    def _combine(self, old: Sequence[Any] | None, accs: Sequence[Any]) -> Sequence[Any]:
        if old is None:
            return accs
        return [a.merge(x, y) for a, x, y in zip(self.aggregations.values(), old, accs)]

    def merge(self, partials: Mapping[PaneKey, list[Any]]) -> None:
        """Merge partials of on-time records (a closed pane's, which the workers never send, is ignored)."""
        merges = [a.merge for a in self.aggregations.values()]
        panes, dirty = self.panes, self._dirty
        touched = self._touched if self.early else None
        closed: dict[int, bool] = {}
        for (key, pane), accs in partials.items():
            shut = closed.get(pane)
            if shut is None:
                shut = closed[pane] = self.pane_closed(pane)
            if shut:
                continue
            by_key = panes.get(pane)
            if by_key is None:
                by_key = panes[pane] = {}
            old = by_key.get(key)  # held as tuples: 24 bytes less per entry than lists
            by_key[key] = tuple(accs) if old is None else tuple([m(x, y) for m, x, y in zip(merges, old, accs)])
            changed = dirty.get(pane)
            if changed is None:
                changed = dirty[pane] = set()
            changed.add(key)
            if touched is not None:
                touched.setdefault(pane, set()).add(key)

    def _closing_windows(self, watermark: int) -> list[int]:
        size, slide = self.spec.size_ms, self.spec.slide_ms
        starts = {p - j * slide for p in self.panes for j in range(size // slide)}
        return sorted(s for s in starts
                      if self.emitted_through < self.closes_at(s) <= watermark)

    def advance(self, watermark: int) -> WindowResults:
        """Emit the windows the watermark closes, oldest first, and forget dead panes."""
        out = WindowResults()
        if watermark <= self.emitted_through:
            return out
        for start in self._closing_windows(watermark):
            out.extend(self._columns(start))
        self.emitted_through = watermark
        for pane in [p for p in self.panes if self.pane_closed(p)]:
            del self.panes[pane]
            self._dirty.pop(pane, None)
            self._touched.pop(pane, None)
            self._dropped.add(pane)
        return out

    def early_results(self) -> WindowResults:
        """Current results of the open windows that changed since the last call: partial,
        not final (the window may still change; its final result comes when it closes)."""
        touched, self._touched = self._touched, {}
        wanted: dict[int, set[Any]] = {}  # window start: keys
        for pane, keys in touched.items():
            for start, _ in self.spec.windows_of_pane(pane):
                if self.closes_at(start) > self.emitted_through:
                    wanted.setdefault(start, set()).update(keys)
        out = WindowResults()
        for start in sorted(wanted):
            out.extend(self._columns(start, wanted[start]))
        return out

    def _columns(self, start: int, keys: set[Any] | None = None) -> WindowResults:
        panes = self.spec.panes_of_window(start)
        merged: dict[Any, Any] = {}
        if len(panes) == 1:  # tumbling: the pane's accumulators are the window's
            held = self.panes.get(panes[0], {})
            merged = held if keys is None else {k: held[k] for k in keys if k in held}
        else:
            for pane in panes:
                held = self.panes.get(pane, {})
                items = held.items() if keys is None else ((k, held[k]) for k in keys if k in held)
                for key, accs in items:
                    merged[key] = self._combine(merged.get(key), accs)
        n = len(merged)
        columns = list(zip(*merged.values())) if n else [() for _ in self.aggregations]
        values = {name: list(col) if type(a).result is Aggregation.result else [a.result(acc) for acc in col]
                  for (name, a), col in zip(self.aggregations.items(), columns)}
        return WindowResults(list(merged), [start] * n, [start + self.spec.size_ms] * n, values)

    def has_changes(self) -> bool:
        return bool(self._dropped) or any(self._dirty.values())

    def take_changes(self) -> tuple[dict[int, dict[Any, Sequence[Any]]], list[int]]:
        """({pane: {key: accumulators changed}}, panes dropped) since the last call."""
        changed = {}
        for pane, keys in self._dirty.items():
            if keys:
                held = self.panes[pane]
                changed[pane] = {k: held[k] for k in keys}
        dropped = sorted(self._dropped)
        self._dirty, self._dropped = {}, set()
        return changed, dropped

    def load(self, entries: Mapping[PaneKey, Sequence[Any]], emitted_through: int) -> None:
        """Restore state: accumulators per (key, pane) and how far windows were emitted."""
        self.emitted_through = max(self.emitted_through, emitted_through)
        for (key, pane), accs in entries.items():
            if not self.pane_closed(pane):
                self.panes.setdefault(pane, {})[key] = accs

    def open_windows(self) -> int:
        """Number of (key, pane) entries held; a measure of state size."""
        return sum(len(keys) for keys in self.panes.values())

    def check_invariants(self) -> None:
        """Assert internal consistency (used by tests after every run)."""
        for pane in self.panes:
            assert not self.pane_closed(pane), f"closed pane {pane} still held"
            assert pane % self.spec.slide_ms == 0, f"pane {pane} not aligned"
        for pane, keys in self._dirty.items():
            assert keys <= self.panes.get(pane, {}).keys(), "a changed entry that is not held"
