"""Apply one processed range to its partition's window state, in offset order.

The one definition of what a range does to window state, used by the driver, the
`TestDriver` and replay: merge the on-time partials, close the windows that closed while the
range's records came (hopping panes whose oldest windows had closed are merged after those
windows are emitted), place session records one by one where the workers could not decide,
then move the partition's event time to the range's end and emit what that closes.

>>> from operators import Count
>>> from stream.records import Partial
>>> from stream.windows.eventtime import PartitionClock
>>> from stream.windows.specs import Tumbling
>>> from stream.windows.store import WindowStore
>>> store, clock = WindowStore(Tumbling(seconds=10), {"n": Count()}, grace_ms=0), PartitionClock()
>>> results, late = merge_range(store, clock, Partial(partials={("u", 0): [2]}, max_ts=12_000), 0)
>>> [(w.key, w.start, w.values) for w in results], clock.now
([('u', 0, {'n': 2})], 12000)
"""

from __future__ import annotations

from typing import Any

from stream.protocols import WindowState
from stream.records import Late, Partial
from stream.windows.eventtime import PartitionClock
from stream.windows.store import WindowResults


def merge_range(store: Any, clock: PartitionClock, partial: Partial,
                out_of_order_ms: int) -> tuple[WindowResults, list[Late]]:
    """Merge `partial` (judged at `clock.now`, or at a lower bound it `holds` for) into `store`;
    returns the windows it closed, oldest first, and every record late on the partition."""
    results = WindowResults()
    store.merge(partial.partials)
    for stage, partials in partial.staged:  # hopping: ascending latest-closed window start
        results.extend(store.advance(store.closes_at(stage)))
        store.merge(partials)
    late = list(partial.late)
    for s in partial.singles:  # session keys the workers could not decide, in offset order
        missed = store.place(s.key, s.ts, s.accs, max(clock.now, s.before) - out_of_order_ms)
        if missed is not None:
            m = s.raw
            late.append(Late(s.offset, s.ts, (missed,), False, m.key if m else None,
                             m.value if m else None, m.headers if m else ()))
    clock.observe(partial.max_ts)
    results.extend(store.advance(clock.now - out_of_order_ms))
    return results, late


def advance(store: WindowState, clock: PartitionClock, event_time: int, out_of_order_ms: int) -> WindowResults:
    """Move a partition's event time on without records (the wall-clock advance, or the end of
    bounded input); returns the windows that closes."""
    clock.advance_to(event_time)
    closed: WindowResults = store.advance(clock.now - out_of_order_ms)
    return closed
