"""Planning and in-order merging of one partition's range tasks: decisions, no I/O.

What the driver and `stream replay` share: which range of a partition to read next, what to
do when a task fails (the same bounds again, at most MAX_ATTEMPTS times) or reads short (the
rest, same end), and which finished ranges can be merged, strictly in offset order. A range
whose event-time decisions do not hold at the partition's event time when its turn comes
(`stream.windows.eventtime.holds`) is handed back to be read again, judged exactly.

Live input has no end: once planning reaches the end offset the last read saw, one
open-ended read per partition reads to the end of the partition (the tail). Bounded input
(`stop`, for replay) is read up to `stop` and no further.

>>> from stream.records import Partial
>>> from stream.worker.task import RangeResult
>>> p = PartitionPlan(merged=0, planned=0, stop=250)
>>> [(r.start, r.end) for r in (p.next(100), p.next(100), p.next(100), p.next(100)) if r]
[(0, 100), (100, 200), (200, 250)]
>>> p.finished(Planned(0, 100, p.clock.now), RangeResult("t", 0, 0, 60, 250, False, Partial(), 0.0))
Planned(start=60, end=100, carry=-4611686018427387904, attempt=0)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.errors import FatalError
from stream.windows.eventtime import PartitionClock, holds
from stream.worker.task import RangeResult

MAX_ATTEMPTS = 8  # reads of one range before the run gives up


@dataclass(frozen=True, slots=True)
class Planned:
    """A range to read: ``[start, end)`` (`end` None: to the end of the partition), judged at
    event time `carry` (exact, or a lower bound), and how many reads of it failed before."""

    start: int
    end: int | None
    carry: int
    attempt: int = 0


@dataclass
class PartitionPlan:
    """Where one partition's reading and merging stand."""

    merged: int                   # next offset to merge: everything below is merged
    planned: int                  # next offset to plan
    stop: int | None = None       # bounded input: read up to here (None: live, with a tail)
    high: int | None = None       # end offset seen by the last read
    tail_busy: bool = False       # an open-ended read is in flight
    caught_up: bool = False       # the last merged range reached the end of the partition
    done: dict[int, RangeResult] = field(default_factory=dict)  # finished, waiting for their turn
    clock: PartitionClock = field(default_factory=PartitionClock)  # event time, in offset order
    data_ms: int = 0              # wall clock when the last merged range with records came back
    quiet_ms: int = 0             # start of the latest merged read, after that, that found the
                                  # end of the partition and nothing new (0: none yet)

    def carry(self, start: int) -> int:
        """The partition's event time before `start` as far as known now: exact when every
        range before it is merged, else a lower bound (raised by the ranges done before it)."""
        known = [r.partial.max_ts for r in self.done.values()
                 if r.next_offset <= start and r.partial.max_ts is not None]
        return max([self.clock.now, *known])

    def next(self, range_records: int) -> Planned | None:
        """The next range to read, or None when there is nothing to plan now."""
        if self.stop is not None:
            if self.planned >= self.stop:
                return None
            end = min(self.planned + range_records, self.stop)
        elif self.tail_busy:
            return None
        elif self.high is None or self.planned < 0 or self.planned >= self.high:
            self.tail_busy = True
            return Planned(self.planned, None, self.carry(self.planned))
        else:
            end = min(self.planned + range_records, self.high)
        planned, self.planned = Planned(self.planned, end, self.carry(self.planned)), end
        return planned

    def failed(self, p: Planned, error: BaseException, where: str) -> Planned:
        """The same range again; after MAX_ATTEMPTS failed reads, a FatalError."""
        if p.attempt + 1 >= MAX_ATTEMPTS:
            raise FatalError(f"range {where} {p.start}..{p.end} failed {MAX_ATTEMPTS} times; "
                             f"last error: {type(error).__name__}: {error}")
        return Planned(p.start, p.end, self.carry(p.start), p.attempt + 1)

    def finished(self, p: Planned, r: RangeResult) -> Planned | None:
        """Keep a finished range for its turn; returns the rest of a read that stopped short."""
        if r.high is not None:
            self.high = max(self.high or 0, r.high)
        self.done[p.start] = r
        if p.end is None:
            self.tail_busy = False
            self.planned = r.next_offset
        elif r.next_offset < p.end:
            return Planned(r.next_offset, p.end, self.carry(r.next_offset))
        return None

    def take(self) -> RangeResult | Planned | None:
        """The next range to merge, in offset order; or a range to read again because it was
        judged at too low an event time (an earlier range raised it past what its decisions
        allow: the new read is judged exactly); or None when the next one is not back yet.
        Call `merged_range` after merging what it returns."""
        r = self.done.pop(self.merged, None)
        if r is None or holds(r.partial.carry, r.partial.valid_below, self.clock.now):
            return r
        return Planned(r.start, r.next_offset, self.clock.now)

    def merged_range(self, r: RangeResult) -> None:
        """Move past a merged range; note when data was last seen and when quiet was confirmed."""
        self.merged, self.caught_up = r.next_offset, r.eof
        if r.next_offset > r.start:
            self.data_ms = r.accepted_ms
        elif r.eof and r.submitted_ms >= self.data_ms:
            self.quiet_ms = max(self.quiet_ms, r.submitted_ms)

    def waiting(self) -> int:
        """Ranges finished and waiting for an earlier one."""
        return len(self.done)

    def lag(self) -> int:
        """Records known to be in the partition and not merged yet."""
        return max(0, (self.high or 0) - max(self.merged, 0))

    def settled(self) -> bool:
        """Merged up to the end the last read saw, with nothing waiting."""
        return self.caught_up and not self.done and self.merged >= (self.high or 0)
