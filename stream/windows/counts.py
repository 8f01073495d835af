"""Count window state of one input partition: per key, windows of `size` records every
`slide` records, in the partition's order.

Workers send one partial per input record (keyed by its offset, so in partition order),
each with the number of records it carries; here they fill slide-sized panes per key, and
each full set of ``size / slide`` consecutive panes is one window, emitted when its last
record arrives. Window bounds are the event times of its first and last record:
``[first, last + 1)``.

>>> from operators import Sum
>>> from stream.windows.specs import CountWindow
>>> s = CountStore(CountWindow(2), {"total": Sum("x")}, grace_ms=0)
>>> s.merge({("k", 0): [1, 10, 10, 5.0], ("k", 1): [1, 11, 11, 6.0], ("k", 2): [1, 12, 12, 7.0]})
>>> [(w.key, w.start, w.end, w.values) for w in s.advance(0)]
[('k', 10, 12, {'total': 11.0})]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Mapping

from operators.aggregate import Aggregation, Count as CountRecords
from stream.windows.eventtime import NEVER
from stream.windows.sessions import FirstEventTime, LastEventTime
from stream.windows.specs import CountWindow
from stream.windows.store import PaneKey, WindowResult, WindowResults

STATE = 0  # the one changelog bucket: every key's count state lives in it


def count_accumulators(aggregations: Mapping[str, Aggregation]) -> list[Aggregation]:
    """What workers fold per record for a count stage: records, first and last event time, the user's."""
    return [CountRecords(), FirstEventTime(), LastEventTime(), *aggregations.values()]


@dataclass
class CountStore:
    """Count windows of one partition: every `size` records of a key (sliding by `slide`)."""

    spec: CountWindow
    aggregations: Mapping[str, Aggregation]
    grace_ms: int
    emitted_through: int = NEVER
    early: bool = False
    # key: [records in the open pane, open pane accs or None, full panes' accs (at most size/slide - 1)]
    state: dict[Any, list[Any]] = field(default_factory=dict)
    _dirty: set[Any] = field(default_factory=set)
    _touched: set[Any] = field(default_factory=set)
    _ready: list[WindowResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._aggs = count_accumulators(self.aggregations)
        self._panes = self.spec.size // self.spec.slide

    def _combine(self, a: list[Any] | None, b: list[Any]) -> list[Any]:
        return b if a is None else [agg.merge(x, y) for agg, x, y in zip(self._aggs, a, b)]

    def merge(self, partials: Mapping[PaneKey, list[Any]]) -> None:
        for (key, _offset), accs in partials.items():  # in offset order
            st = self.state.get(key)
            if st is None:
                st = self.state[key] = [0, None, []]
            st[0] += accs[0]
            st[1] = self._combine(st[1], accs)
            if st[0] >= self.spec.slide:  # the pane is full
                st[2].append(st[1])
                st[0], st[1] = 0, None
                if len(st[2]) == self._panes:
                    whole = reduce(self._combine, st[2][1:], st[2][0])
                    self._ready.append(self._result(key, whole))
                    st[2].pop(0)
            self._dirty.add(key)
            if self.early:
                self._touched.add(key)

    def _result(self, key: Any, accs: list[Any]) -> WindowResult:
        values = {n: a.result(acc) for n, a, acc in zip(self.aggregations, self._aggs[3:], accs[3:])}
        return WindowResult(key, accs[1], accs[2] + 1, values)

    def advance(self, watermark: int) -> WindowResults:
        """The windows filled since the last call (count windows do not wait for the watermark)."""
        self.emitted_through = max(self.emitted_through, watermark)
        ready, self._ready = self._ready, []
        return WindowResults.of(ready)

    def early_results(self) -> WindowResults:
        """The window being filled, for keys changed since the last call (partial)."""
        touched, self._touched = self._touched, set()
        out = []
        for key in touched:
            count, open_pane, full = self.state[key]
            whole = None
            for pane in full[-(self._panes - 1):] if self._panes > 1 else []:
                whole = self._combine(whole, pane)
            if open_pane is not None:
                whole = self._combine(whole, open_pane)
            if whole is not None:
                out.append(self._result(key, whole))
        return WindowResults.of(out)

    def has_changes(self) -> bool:
        return bool(self._dirty)

    def take_changes(self) -> tuple[dict[int, dict[Any, list[Any]]], list[int]]:
        dirty, self._dirty = self._dirty, set()
        return ({STATE: {k: self.state[k] for k in dirty}} if dirty else {}), []

    def load(self, entries: Mapping[PaneKey, list[Any] | None], emitted_through: int) -> None:
        self.emitted_through = max(self.emitted_through, emitted_through)
        for (key, _), st in entries.items():
            if st is not None:
                self.state[key] = st

    def open_windows(self) -> int:
        return len(self.state)

    def check_invariants(self) -> None:
        for key, (count, open_pane, full) in self.state.items():
            assert 0 <= count < self.spec.slide and len(full) < self._panes, key
            assert (count == 0) == (open_pane is None), key
