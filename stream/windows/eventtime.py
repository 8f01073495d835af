"""Event time per partition, record by record: which records are on time, which are late.

A partition's event time is the highest event time of the records that reached its window
stage so far, in offset order. A window ``[start, end)`` closes when that event time, minus
the allowed out-of-orderness, reaches ``end + grace``. A record is late exactly when, at its
position in the partition, a window it belongs to has closed. The decision depends on the
partition's records in order and nothing else: not on how the partition is cut into ranges,
nor on when or where a range is read.

Workers judge a range against the event time at its start (`carry`). While earlier ranges
of the same partition are still in flight, that event time is not known yet, so a range is
judged against a lower bound of it, and its result says how far the true one may be above
it with every decision unchanged (`valid_below`). The driver merges ranges in offset order,
knows the true event time at each range's start, and has a range judged again (same bounds)
in the rare case its result does not hold (`holds`).

>>> from stream.windows.specs import Tumbling
>>> j = Tumbling(seconds=10).judge(grace_ms=0, out_of_order_ms=0)
>>> j.place(before=NEVER, ts=12_000)          # all its windows open: on time, pane 10 s
Placed(pane=10000, stage=-4611686018427387904, closed=(), valid_below=20000)
>>> j.place(before=25_000, ts=12_000).closed  # event time 25 s closed [10 s, 20 s)
((10000, 20000),)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

NEVER = -(2**62)
FOREVER = 2**62


class Placed(NamedTuple):
    """Where one record goes, judged at the partition's event time before it.

    `pane` is None when every window of the record has closed (the record is only late).
    `stage` orders hopping panes whose oldest windows had closed: the latest closed window
    start (NEVER when none had). `closed` lists the windows ``(start, end)`` already closed.
    The same placement holds for any event time before the record below `valid_below`.
    """

    pane: int | None
    stage: int
    closed: tuple[tuple[int, int], ...]
    valid_below: int


@dataclass(frozen=True, slots=True)
class HoppingJudge:
    """Hopping and tumbling windows: a record's windows close in order, oldest first."""

    size_ms: int
    slide_ms: int
    grace_ms: int
    out_of_order_ms: int

    def place(self, before: int, ts: int) -> Placed:
        pane = ts - ts % self.slide_ms
        first = pane - self.size_ms + self.slide_ms          # its oldest window's start
        delay = self.size_ms + self.grace_ms + self.out_of_order_ms
        horizon = before - delay                             # windows starting here or before are closed
        n = self.size_ms // self.slide_ms
        shut = 0 if horizon < first else min(n, (horizon - first) // self.slide_ms + 1)
        closed = tuple((s, s + self.size_ms) for s in range(first, first + shut * self.slide_ms, self.slide_ms))
        if shut == n:
            return Placed(None, NEVER, closed, FOREVER)
        stage = NEVER if shut == 0 else first + (shut - 1) * self.slide_ms
        return Placed(pane, stage, closed, first + shut * self.slide_ms + delay)

    def doubtful(self, before: int, ts: int) -> bool:
        """Hopping decisions need no window state: never doubtful."""
        return False


@dataclass(frozen=True, slots=True)
class SessionJudge:
    """Session windows: a record is surely on time when it is no more than grace plus the
    out-of-orderness behind the event time; otherwise it is *doubtful*: it may join (or
    start) a session that has closed, which only the driver's session state can tell."""

    gap_ms: int
    grace_ms: int
    out_of_order_ms: int

    def doubtful(self, before: int, ts: int) -> bool:
        return ts < before - self.grace_ms - self.out_of_order_ms

    def place(self, before: int, ts: int) -> Placed:
        return Placed(ts - ts % self.gap_ms, NEVER, (), ts + self.grace_ms + self.out_of_order_ms + 1)


@dataclass(frozen=True, slots=True)
class CountJudge:
    """Count windows fill in partition order; event time closes nothing."""

    def doubtful(self, before: int, ts: int) -> bool:
        return False

    def place(self, before: int, ts: int) -> Placed:
        return Placed(0, NEVER, (), FOREVER)


Judge = HoppingJudge | SessionJudge | CountJudge


@dataclass(slots=True)
class PartitionClock:
    """One partition's event time: the highest event time merged so far, in offset order,
    and how far an opted-in wall-clock advance has moved it beyond that.

    >>> c = PartitionClock(); c.observe(5_000); c.observe(3_000); c.now
    5000
    >>> c.advance_to(9_000); c.now
    9000
    """

    event_time: int = NEVER
    advanced: int = NEVER

    @property
    def now(self) -> int:
        return max(self.event_time, self.advanced)

    def observe(self, max_ts: int | None) -> None:
        if max_ts is not None and max_ts > self.event_time:
            self.event_time = max_ts

    def advance_to(self, event_time: int) -> None:
        """Move event time on without a record (the wall-clock advance); never backwards."""
        self.advanced = max(self.advanced, event_time)


def holds(assumed: int, valid_below: int, actual: int) -> bool:
    """True when a range judged at event time `assumed` decides the same at `actual`.

    `assumed` is a lower bound of `actual` (the event time known when the range was planned).

    >>> holds(1_000, 20_000, 19_999), holds(1_000, 20_000, 20_000), holds(5, 6, 3)
    (True, False, False)
    """
    return actual == assumed or assumed < actual < valid_below
