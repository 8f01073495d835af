"""Window specs: frozen values in integer milliseconds over half-open ranges ``[start, end)``.

Hopping windows are made of tumbling panes of the slide size: a record is aggregated once
into its pane, and each window combines ``size / slide`` panes. A tumbling window is the
case ``slide == size``.

>>> Tumbling(seconds=10).assign(12_345)
[(10000, 20000)]
>>> Hopping(seconds=10, slide=timedelta(seconds=5)).assign(12_345)
[(5000, 15000), (10000, 20000)]
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar, Mapping

from stream.errors import PipelineError

if TYPE_CHECKING:
    from operators.aggregate import Aggregation
    from stream.protocols import WindowState
    from stream.windows.eventtime import Judge


def to_ms(value: int | timedelta, what: str = "duration") -> int:
    """Convert a timedelta (or integer milliseconds) to integer milliseconds.

    >>> to_ms(timedelta(seconds=1.5))
    1500
    """
    if isinstance(value, timedelta):
        return value // timedelta(milliseconds=1)
    if isinstance(value, bool) or not isinstance(value, int):
        raise PipelineError(f"{what} must be a timedelta or integer milliseconds, got {value!r}")
    return value


def seconds(n: float) -> timedelta:
    """``seconds(5)`` is ``timedelta(seconds=5)``."""
    return timedelta(seconds=n)


def minutes(n: float) -> timedelta:
    """``minutes(1)`` is ``timedelta(minutes=1)``."""
    return timedelta(minutes=n)


def _duration(size: int | timedelta | None, parts: dict[str, float], what: str) -> int:
    given = {k: v for k, v in parts.items() if v}
    if size is not None and given:
        raise PipelineError(f"{what}: give either a size or keyword units, not both")
    ms = to_ms(size, what) if size is not None else to_ms(timedelta(**given), what)
    if ms <= 0:
        raise PipelineError(f"{what} must be positive, got {ms} ms")
    return ms


class WindowSpec:
    """What a user passes to `window()`; each kind builds its own runtime parts from it.

    The state of one partition's windows (`build_state`), the judge that decides record by
    record where a record goes and whether it is late (`judge`), and what workers fold per
    (key, pane) (`worker_aggregations`): no code elsewhere asks which kind a spec is.
    """

    __slots__ = ()
    by_count: ClassVar[bool] = False  # workers send one partial per record, keyed by its offset

    def build_state(self, aggregations: Mapping[str, Aggregation], grace_ms: int,
                    early: bool = False) -> WindowState:
        """Empty window state for one input partition."""
        raise NotImplementedError

    def judge(self, grace_ms: int, out_of_order_ms: int) -> Judge:
        """The per-record judge of this kind of window."""
        raise NotImplementedError

    def worker_aggregations(self, aggregations: Mapping[str, Aggregation]) -> list[Aggregation]:
        """What workers fold per (key, pane): the user's aggregations by default."""
        return list(aggregations.values())

    def columnar_pane_ms(self) -> int | None:
        """The pane width when the columnar path can aggregate this window kind; else None."""
        return None

    def describe(self) -> str:
        """A short human description (the status page shows it)."""
        return repr(self)


@dataclass(frozen=True, slots=True)
class Hopping(WindowSpec):
    """Windows of `size_ms` starting every `slide_ms`; `size_ms` must be a multiple of `slide_ms`."""

    size_ms: int
    slide_ms: int

    def __init__(self, size: int | timedelta | None = None, *, slide: int | timedelta,
                 hours: float = 0, minutes: float = 0, seconds: float = 0,
                 milliseconds: float = 0) -> None:
        units = dict(hours=hours, minutes=minutes, seconds=seconds, milliseconds=milliseconds)
        size_ms = _duration(size, units, "window size")
        slide_ms = _duration(slide, {}, "window slide")
        if size_ms % slide_ms:
            raise PipelineError(
                f"window size ({size_ms} ms) must be a multiple of the slide ({slide_ms} ms)")
        object.__setattr__(self, "size_ms", size_ms)
        object.__setattr__(self, "slide_ms", slide_ms)

    @property
    def pane_ms(self) -> int:
        """Width of the panes records are aggregated into."""
        return self.slide_ms

    def pane_of(self, ts: int) -> int:
        """Start of the pane that holds event time `ts`."""
        return ts - ts % self.slide_ms

    def windows_of_pane(self, pane: int) -> list[tuple[int, int]]:
        """The windows (oldest first) that contain the pane starting at `pane`."""
        first = pane - self.size_ms + self.slide_ms
        return [(s, s + self.size_ms) for s in range(first, pane + 1, self.slide_ms)]

    def panes_of_window(self, start: int) -> range:
        """Pane starts that make up the window starting at `start`."""
        return range(start, start + self.size_ms, self.slide_ms)

    def assign(self, ts: int) -> list[tuple[int, int]]:
        """Every window ``[start, end)`` that event time `ts` falls in, oldest first."""
        return self.windows_of_pane(self.pane_of(ts))

    def build_state(self, aggregations: Mapping[str, Aggregation], grace_ms: int,
                    early: bool = False) -> WindowState:
        """Empty window state for one input partition: slide-sized panes per key."""
        from stream.windows.store import WindowStore
        return WindowStore(self, aggregations, grace_ms, early=early)

    def judge(self, grace_ms: int, out_of_order_ms: int) -> Judge:
        """The hopping judge: a record goes into its pane, late once its oldest window closed."""
        from stream.windows.eventtime import HoppingJudge
        return HoppingJudge(self.size_ms, self.slide_ms, grace_ms, out_of_order_ms)

    def columnar_pane_ms(self) -> int | None:
        """The slide: the columnar path aggregates a batch into slide-sized panes."""
        return self.slide_ms

    def describe(self) -> str:
        """``Tumbling(10 s)`` or ``Hopping(10 s, slide 5 s)``.

        >>> Hopping(seconds=10, slide=timedelta(seconds=5)).describe(), Tumbling(seconds=10).describe()
        ('Hopping(10 s, slide 5 s)', 'Tumbling(10 s)')
        """
        if self.size_ms == self.slide_ms:
            return f"Tumbling({self.size_ms / 1000:g} s)"
        return f"Hopping({self.size_ms / 1000:g} s, slide {self.slide_ms / 1000:g} s)"


class Tumbling(Hopping):
    """Back-to-back windows of one size: a hopping window whose slide equals its size."""

    __slots__ = ()

    def __init__(self, size: int | timedelta | None = None, *, hours: float = 0,
                 minutes: float = 0, seconds: float = 0, milliseconds: float = 0) -> None:
        units = dict(hours=hours, minutes=minutes, seconds=seconds, milliseconds=milliseconds)
        size_ms = _duration(size, units, "window size")
        super().__init__(size_ms, slide=size_ms)

    def __repr__(self) -> str:
        return f"Tumbling(size_ms={self.size_ms})"


@dataclass(frozen=True, slots=True)
class Session(WindowSpec):
    """Per-key sessions: records of a key less than `gap` apart in event time belong to one
    session, whose window is ``[first event time, last event time + gap)``.

    Records are aggregated into gap-wide buckets (``pane_of``): two records in one bucket are
    less than `gap` apart, so a bucket never spans two sessions, and sessions are built from
    buckets when they close.

    >>> Session(seconds=30).pane_of(95_000)
    90000
    """

    gap_ms: int

    def __init__(self, gap: int | timedelta | None = None, *, hours: float = 0, minutes: float = 0,
                 seconds: float = 0, milliseconds: float = 0) -> None:
        units = dict(hours=hours, minutes=minutes, seconds=seconds, milliseconds=milliseconds)
        object.__setattr__(self, "gap_ms", _duration(gap, units, "session gap"))

    @property
    def pane_ms(self) -> int:
        return self.gap_ms

    def pane_of(self, ts: int) -> int:
        return ts - ts % self.gap_ms

    def build_state(self, aggregations: Mapping[str, Aggregation], grace_ms: int,
                    early: bool = False) -> WindowState:
        """Empty session state for one input partition: gap-wide buckets per key."""
        from stream.windows.sessions import SessionStore
        return SessionStore(self, aggregations, grace_ms, early=early)

    def judge(self, grace_ms: int, out_of_order_ms: int) -> Judge:
        """The session judge: late once the session a record joins, or would start, has closed."""
        from stream.windows.eventtime import SessionJudge
        return SessionJudge(self.gap_ms, grace_ms, out_of_order_ms)

    def worker_aggregations(self, aggregations: Mapping[str, Aggregation]) -> list[Aggregation]:
        """First and last event time in front of the user's aggregations."""
        from stream.windows.sessions import session_accumulators
        return session_accumulators(aggregations)

    def describe(self) -> str:
        """``Session(gap 30 s)``."""
        return f"Session(gap {self.gap_ms / 1000:g} s)"


@dataclass(frozen=True, slots=True)
class CountWindow(WindowSpec):
    """Windows of `size` records per key, one every `slide` records (tumbling when equal).

    Records count in the order of their input partition (a key's records must all be in one
    partition, as for every keyed window). A window is emitted, final, when its last record
    arrives; a window not yet full is not emitted (early results show it).

    >>> CountWindow(100).slide, CountWindow(100, slide=25).slide
    (100, 25)
    """

    size: int
    slide: int

    def __init__(self, size: int, *, slide: int | None = None) -> None:
        slide = size if slide is None else slide
        if size < 1 or slide < 1:
            raise PipelineError(f"count window size and slide must be >= 1, got {size} and {slide}")
        if size % slide:
            raise PipelineError(f"count window size ({size}) must be a multiple of the slide ({slide})")
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "slide", slide)

    by_count: ClassVar[bool] = True

    def build_state(self, aggregations: Mapping[str, Aggregation], grace_ms: int,
                    early: bool = False) -> WindowState:
        """Empty count-window state for one input partition: records counted per key."""
        from stream.windows.counts import CountStore
        return CountStore(self, aggregations, grace_ms, early=early)

    def judge(self, grace_ms: int, out_of_order_ms: int) -> Judge:
        """Count windows have no event-time lateness: every record counts."""
        from stream.windows.eventtime import CountJudge
        return CountJudge()

    def worker_aggregations(self, aggregations: Mapping[str, Aggregation]) -> list[Aggregation]:
        """A record count and the event-time bounds in front of the user's aggregations."""
        from stream.windows.counts import count_accumulators
        return count_accumulators(aggregations)

    def describe(self) -> str:
        """``CountWindow(100)`` or ``CountWindow(100, slide 25)``."""
        return f"CountWindow({self.size})" if self.slide == self.size else f"CountWindow({self.size}, slide {self.slide})"
