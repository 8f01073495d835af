"""Window state as a sans-I/O state machine over panes of partial aggregates.

`merge` takes one range's partials for a partition; `advance(watermark)` emits every
window whose ``end + grace`` the watermark has reached, each exactly once, and drops panes
no open window needs. Records for panes whose windows have all closed are late.

>>> from operators import Count
>>> from stream.windows.specs import Tumbling
>>> s = WindowStore(Tumbling(seconds=10), {"n": Count()}, grace_ms=0)
>>> s.merge("p0", {("u1", 0): [3]}, {0: 5})
0
>>> [(w.key, w.start, w.values) for w in s.advance(10_000)]
[('u1', 0, {'n': 3})]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping

from operators.aggregate import Aggregation
from stream.windows.specs import Hopping
from stream.windows.watermark import NEVER

PaneKey = tuple[Any, int]  # (key, pane start)


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One closed window of one key, with each aggregation's result by output name."""

    key: Any
    start: int
    end: int
    values: dict[str, Any]


@dataclass
class WindowStore:
    spec: Hopping
    aggregations: Mapping[str, Aggregation]
    grace_ms: int
    emitted_through: int = NEVER
    panes: dict[int, dict[Any, list[Any]]] = field(default_factory=dict)
    first_offsets: dict[tuple[Hashable, int], int] = field(default_factory=dict)
    key_partitions: dict[Any, Hashable] = field(default_factory=dict)

    def _closes_at(self, window_start: int) -> int:
        return window_start + self.spec.size_ms + self.grace_ms

    def pane_closed(self, pane: int) -> bool:
        """True when every window containing the pane has been emitted."""
        return self._closes_at(pane) <= self.emitted_through

    def pane_late(self, pane: int) -> bool:
        """True when at least one window containing the pane has been emitted."""
        oldest = pane - self.spec.size_ms + self.spec.slide_ms
        return self._closes_at(oldest) <= self.emitted_through

    def merge(self, part: Hashable, partials: Mapping[PaneKey, list[Any]],
              first_offsets: Mapping[int, int], counts: Mapping[int, int] | None = None) -> int:
        """Merge one range's partials; return how many records were late.

        `first_offsets` maps pane start to the first input offset of that pane in the range;
        `counts` maps pane start to its record count (used only to count late records).
        """
        aggs = list(self.aggregations.values())
        late = 0
        for (key, pane), accs in partials.items():
            if self.pane_closed(pane):
                continue
            by_key = self.panes.setdefault(pane, {})
            self.key_partitions[key] = part
            old = by_key.get(key)
            by_key[key] = accs if old is None else [a.merge(x, y) for a, x, y in zip(aggs, old, accs)]
        for pane, offset in first_offsets.items():
            if self.pane_late(pane):
                late += (counts or {}).get(pane, 0)
            if not self.pane_closed(pane):
                slot = (part, pane)
                self.first_offsets[slot] = min(offset, self.first_offsets.get(slot, offset))
        return late

    def _closing_windows(self, watermark: int) -> list[int]:
        size, slide = self.spec.size_ms, self.spec.slide_ms
        starts = {p - j * slide for p in self.panes for j in range(size // slide)}
        return sorted(s for s in starts
                      if self.emitted_through < self._closes_at(s) <= watermark)

    def advance(self, watermark: int) -> list[WindowResult]:
        """Emit the windows the watermark closes, oldest first, and forget dead panes."""
        if watermark <= self.emitted_through:
            return []
        out = [r for s in self._closing_windows(watermark) for r in self._results(s)]
        self.emitted_through = watermark
        dead = [p for p in self.panes if self.pane_closed(p)]
        for pane in dead:
            del self.panes[pane]
        if dead:  # keep the key -> partition map as small as the live state
            live = set().union(*(by_key.keys() for by_key in self.panes.values()))
            self.key_partitions = {k: p for k, p in self.key_partitions.items() if k in live}
        for slot in [s for s in self.first_offsets if self.pane_closed(s[1])]:
            del self.first_offsets[slot]
        return out

    def _results(self, start: int) -> list[WindowResult]:
        merged: dict[Any, list[Any]] = {}
        aggs = list(self.aggregations.values())
        for pane in self.spec.panes_of_window(start):
            for key, accs in self.panes.get(pane, {}).items():
                old = merged.get(key)
                merged[key] = accs if old is None else [a.merge(x, y) for a, x, y in zip(aggs, old, accs)]
        end = start + self.spec.size_ms
        names = list(self.aggregations)
        return [WindowResult(key, start, end,
                             {n: a.result(acc) for n, a, acc in zip(names, aggs, accs)})
                for key, accs in merged.items()]

    def drop_partition(self, part: Hashable) -> None:
        """Forget a revoked partition's window state: its keys' panes and its offsets.

        Keyed state needs input partitioned by key, so each key lives in one partition; the
        partition's next owner rebuilds these windows from the committed offsets.
        """
        gone = {k for k, p in self.key_partitions.items() if p == part}
        for by_key in self.panes.values():
            for k in gone & by_key.keys():
                del by_key[k]
        for k in gone:
            del self.key_partitions[k]
        for pane in [p for p, by_key in self.panes.items() if not by_key]:
            del self.panes[pane]
        for slot in [s for s in self.first_offsets if s[0] == part]:
            del self.first_offsets[slot]

    def first_open_offset(self, part: Hashable) -> int | None:
        """Lowest input offset of `part` that an open window still needs, if any."""
        offsets = [o for (p, _), o in self.first_offsets.items() if p == part]
        return min(offsets) if offsets else None

    def open_windows(self) -> int:
        """Number of (key, pane) entries held; a measure of state size."""
        return sum(len(keys) for keys in self.panes.values())

    def check_invariants(self) -> None:
        """Assert internal consistency (used by tests after every run)."""
        for pane in self.panes:
            assert not self.pane_closed(pane), f"closed pane {pane} still held"
            assert pane % self.spec.slide_ms == 0, f"pane {pane} not aligned"
        for _, pane in self.first_offsets:
            assert not self.pane_closed(pane)
        for by_key in self.panes.values():
            assert by_key.keys() <= self.key_partitions.keys(), "a key without its partition"
