"""Watermarks: per partition, the max event time seen minus the allowed out-of-orderness.

The pipeline watermark is the minimum over active partitions; an idle partition (caught up
and without new records for longer than the idle timeout) stops holding it back. When every
partition is idle, the watermark is the highest partition watermark, so a quiet stream still
closes the windows it has seen past. It never goes backwards.

With `advance_after_ms`, a stream quiet for that long (no partition delivered a record) is
taken to move on in event time with the wall clock: the watermark becomes the highest event
time seen, minus the out-of-orderness, plus the quiet time beyond `advance_after_ms`. So the
last windows of a stream that stops close, `advance_after_ms` plus their grace after the last
record, instead of waiting for the next one.

>>> w = Watermarks(out_of_order_ms=1000, idle_timeout_ms=5000)
>>> w.observe("p0", 10_000, now_ms=0, caught_up=True); w.observe("p1", 4_000, now_ms=0, caught_up=True)
>>> w.current(now_ms=0)
3000
>>> w.current(now_ms=6000)  # both idle now: the quiet stream still advances
9000
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

NEVER = -(2**62)


@dataclass(slots=True)
class _Partition:
    max_ts: int = NEVER
    last_data_ms: int = NEVER
    caught_up: bool = False


@dataclass(slots=True)
class Watermarks:
    out_of_order_ms: int
    idle_timeout_ms: int
    floor: int = NEVER
    advance_after_ms: int | None = None
    _parts: dict[Hashable, _Partition] = field(default_factory=dict)

    def add(self, part: Hashable, now_ms: int) -> None:
        """Start tracking a partition (it holds the watermark until it is idle)."""
        self._parts.setdefault(part, _Partition(last_data_ms=now_ms))

    def remove(self, part: Hashable) -> None:
        self._parts.pop(part, None)

    def observe(self, part: Hashable, max_ts: int | None, now_ms: int,
                caught_up: bool = False) -> None:
        """Record a processed range: its max event time (None if it had no records)."""
        p = self._parts.setdefault(part, _Partition(last_data_ms=now_ms))
        if max_ts is not None:
            p.max_ts = max(p.max_ts, max_ts)
            p.last_data_ms = now_ms
        p.caught_up = caught_up

    def max_ts(self, part: Hashable) -> int | None:
        """The highest event time seen on a partition (None if none yet)."""
        p = self._parts.get(part)
        return None if p is None or p.max_ts == NEVER else p.max_ts

    def _idle(self, p: _Partition, now_ms: int) -> bool:
        return p.caught_up and now_ms - p.last_data_ms >= self.idle_timeout_ms

    def current(self, now_ms: int) -> int:
        """The pipeline watermark now (monotonic)."""
        if self._parts:
            active = [p.max_ts for p in self._parts.values() if not self._idle(p, now_ms)]
            seen = active or [p.max_ts for p in self._parts.values()]
            wm = (min(seen) if active else max(seen))
            if wm != NEVER:
                self.floor = max(self.floor, wm - self.out_of_order_ms)
            if self.advance_after_ms is not None:
                self.floor = max(self.floor, self._wall_clock(now_ms, self.advance_after_ms))
        return self.floor

    def _wall_clock(self, now_ms: int, after_ms: int) -> int:
        top = max(p.max_ts for p in self._parts.values())
        quiet = now_ms - max(p.last_data_ms for p in self._parts.values())
        if top == NEVER or quiet < after_ms:
            return NEVER
        return top - self.out_of_order_ms + quiet - after_ms
