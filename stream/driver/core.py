"""The driver's decisions as a state machine without I/O: events in, instructions out.

Planning, merging in offset order, event-time advance, closing, retries and the epoch
bookkeeping live here. `DriverCore.handle(event, now_ms)` takes one event (a tick of the
clock, partitions assigned or revoked, a range done or failed, the end of an epoch or of the
run) and returns what to do, in order: submit or cancel a range task, produce records,
commit. A thin loop (`stream.driver.loop.Driver` for a live run, `stream.app.replay` for a bounded
one) carries the instructions out against Dask and Kafka and feeds back what happened,
as dask/distributed's worker state machine does (`handle_stimulus` -> instructions).

Per partition the core keeps the contiguous merged prefix, its event time and its window
state. Work is grouped into epochs: one epoch's window results, dead letters, late records,
changelog entries and consumer offsets are committed together. On assignment a partition's
state is restored from the changelog as of its last committed epoch.

>>> from stream.pipeline import Pipeline
>>> schema = {"type": "record", "name": "R", "fields": [{"name": "k", "type": "string"}]}
>>> core = DriverCore(Pipeline("p").source("in", schema).sink("out", schema), Topics("p.changelog"))
>>> core.handle(Assigned([("in", 0)], committed={}, logs={0: []}), now_ms=1_000)
[Submit(task_id=1, tp=('in', 0), planned=Planned(start=-2, end=None, carry=-4611686018427387904, attempt=0), pin=0, marks=None)]
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, Union

from stream.codecs.state import StateFormatError
from stream.driver.checkpoint import Meta, delta_tombstones, deltas, encode_meta, next_epoch, open_marker, restore
from stream.driver.scheduler import PartitionPlan, Planned
from stream.pipeline import Pipeline
from stream.protocols import WindowState
from stream.records import BEGINNING, TP, Failure, Late
from stream.windows.eventtime import FOREVER, NEVER, PartitionClock
from stream.windows.keying import KeyHomes
from stream.windows.merge import advance, merge_range
from stream.windows.repartition import OriginClocks, all_origins, heartbeat, origin_id, repartition_topic, stamp
from stream.windows.store import WindowResult, WindowResults
from stream.worker.rows import encode_results, result_failure
from stream.worker.task import RangeResult

log = logging.getLogger(__name__)
Headers = tuple[tuple[str, bytes], ...]


# -- events ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tick:
    """Time passed: expire stuck tasks, merge, advance quiet partitions, maybe commit."""


@dataclass(frozen=True)
class Assigned:
    """Partitions are ours: `committed` holds the group's offsets of the inputs and of the
    changelog partitions, `logs` the changelog entries per changelog partition. With
    `stops` (bounded input), each partition is read from its offset in `committed` to its stop."""

    tps: list[TP]
    committed: dict[TP, int]
    logs: dict[int, list[Any]]
    stops: dict[TP, int] | None = None


@dataclass(frozen=True)
class Revoked:
    """Partitions are taken away; with `commit`, the open epoch is committed first."""

    tps: list[TP]
    commit: bool = True


@dataclass(frozen=True)
class RangeDone:
    """Event: a range task finished with its result."""

    task_id: int
    result: RangeResult


@dataclass(frozen=True)
class RangeFailed:
    """Event: a range task raised; the core retries it with the same bounds."""

    task_id: int
    error: BaseException


@dataclass(frozen=True)
class EndEpoch:
    """Commit the open epoch now, if it holds anything (before an assignment renumbers epochs)."""


@dataclass(frozen=True)
class Finish:
    """The run ends: merge what is back; with `drain` (bounded input) close every window; commit."""

    drain: bool = False


Event = Union[Tick, Assigned, Revoked, RangeDone, RangeFailed, EndEpoch, Finish]


# -- instructions ------------------------------------------------------------------------
@dataclass(frozen=True)
class Submit:
    """Read and process `planned` of partition `tp` on a worker (prefer worker `pin`)."""

    task_id: int
    tp: TP
    planned: Planned
    pin: int
    marks: dict[int, tuple[int, int]] | None = None  # a repartition partition: positions counted


@dataclass(frozen=True)
class Cancel:
    """Forget task `task_id` (it took too long; it has been submitted again)."""

    task_id: int


@dataclass(frozen=True)
class Produce:
    """Write records, all with the same headers, to `topic` (`partition` None: by key)."""

    topic: str
    records: Sequence[tuple[bytes | None, bytes | None]]
    headers: Headers
    partition: int | None = None


@dataclass(frozen=True)
class Mark:
    """A named point between the steps of a commit (where fault tests stop the process)."""

    point: str


@dataclass(frozen=True)
class BeginCommit:
    """An epoch's commit starts: every partition in `partitions` must still be ours (else
    abort the epoch and stop)."""

    epoch: int
    partitions: tuple[TP, ...]


@dataclass(frozen=True)
class Commit:
    """Commit the epoch: its outputs and these offsets together. `closed` lists (when, latest
    window end), both in ms, of the result batches it makes visible."""

    epoch: int
    offsets: dict[TP, int]
    closed: list[tuple[int, int]]


Instruction = Union[Submit, Cancel, Produce, Mark, BeginCommit, Commit]


# -- state -------------------------------------------------------------------------------
@dataclass
class PartitionState:
    """One assigned partition: its planning (`plan`), window state and changelog bookkeeping."""

    plan: PartitionPlan            # reading, merging and event time of the partition
    pin: int                       # worker index this partition prefers
    store: WindowState | None      # the partition's window state (None: no window stage)
    written: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # changelog deltas per pane
    state_bytes: dict[int, int] = field(default_factory=dict)  # changelog bytes per live pane
    live_committed: set[int] = field(default_factory=set)  # committed epochs with live deltas here
    # the newest committed epoch of this partition's own line: the epoch restored, then each
    # epoch committed while it was owned here; its next meta entry names it. Never another
    # partition's: a partition restored from an older point must not name an epoch whose
    # deltas of it its state does not include (they would be counted twice)
    named: set[int] = field(default_factory=set)
    last_ts: int = -1              # Kafka timestamp (ms) of the last merged record
    origins: OriginClocks | None = None  # a repartition partition: its origins' event times


@dataclass
class DriverStats:
    """Counts of a driver's run: records in and out, windows, commits, retries, ..."""

    records_in: int = 0
    records_out: int = 0
    windows: int = 0
    partial: int = 0               # early (partial) window results
    failed: int = 0
    late: int = 0
    skipped: int = 0
    filtered: int = 0              # records an operator dropped
    windowed: int = 0              # records added to window state
    commits: int = 0
    task_failures: int = 0
    restored: int = 0
    outside: int = 0               # closed windows left out by the core's `keep` rule


@dataclass(frozen=True)
class Topics:
    """Where the driver writes besides the sink topic (None: not written). Without a
    changelog nothing is committed (a bounded replay)."""

    changelog: str | None
    dead_letter: str | None = None
    late: str | None = None


@dataclass(frozen=True)
class Inflight:
    """A planned range task the core waits for."""

    tp: TP
    planned: Planned
    state: PartitionState          # the partition state it was planned for (stale once revoked)
    submitted_ms: int


class DriverCore:
    """The decisions of one driver over the partitions assigned to it; see the module doc.

    For a bounded run: `stamp=False` writes no epoch headers, `keep` picks the closed windows
    to write (the others are counted in `stats.outside`), `output` replaces the sink topic,
    and a `Topics` without a changelog commits nothing.
    """

    def __init__(self, pipeline: Pipeline, topics: Topics, *, range_records: int = 50_000,
                 max_inflight: int = 6, commit_interval_s: float = 1.0, result_commit_s: float = 0.1,
                 advance_after_ms: int | None = None, task_timeout_s: float = 60.0,
                 app_id: str | None = None, transactional_id: str | None = None, replica: int = 0,
                 stamp: bool = True, keep: Callable[[WindowResult], bool] | None = None,
                 output: str | None = None, metrics: Any = None, transactional: bool = False,
                 input_partitions: dict[str, int] | None = None, repartition_partitions: int = 0) -> None:
        plan = pipeline.validate()
        self.pipeline, self.topics = pipeline, topics
        self.sink_topic: str = output or plan.sink.topic
        self.range_records, self.max_inflight = range_records, max_inflight
        self.commit_interval_ms = int(commit_interval_s * 1000)
        # an epoch ends about this long after its first output, so read_committed readers see
        # results soon; an epoch that only moved offsets or state ends every commit interval
        self.result_commit_ms = int(min(result_commit_s, commit_interval_s) * 1000)
        self.out_of_order_ms = plan.source.out_of_order_ms
        self.advance_after_ms = advance_after_ms
        # a task in flight this long is read again (same bounds; the result is the same
        # whichever read it comes from): a future the cluster lost track of must not stall
        # its partition for ever
        self.task_timeout_ms = int(task_timeout_s * 1000)
        self.app_id = app_id or pipeline.name
        self.transactional_id = transactional_id or self.app_id
        self.replica, self.stamp, self.keep, self.metrics = replica, stamp, keep, metrics
        self.transactional = transactional  # epochs are transactions: count those found aborted
        self._aborted: set[int] = set()  # aborted epochs found at restores, counted once each
        stage = pipeline.window_stage
        self._early_ms = stage.early_ms if stage is not None and stage.early_ms else None
        self.homes = KeyHomes(pipeline.key_label) if stage is not None else None
        # a re-keyed window: stage 1 reads the input into the repartition topic, stage 2 windows it
        self.repartition: str | None = None
        self.stage_of: dict[str, Pipeline] = {}
        if pipeline.rekey:
            self.repartition = repartition_topic(self.app_id)
            first, second = pipeline.stages(self.repartition)
            self.stage_of = {**{t: first for t in plan.source.topics}, self.repartition: second}
            if input_partitions is None or repartition_partitions <= 0:
                raise ValueError("a re-keyed pipeline needs input_partitions and repartition_partitions")
            self.origins = all_origins(input_partitions, plan.source.topics)
            self.repartition_partitions = repartition_partitions
        self._rekeyed = False          # this epoch wrote to the repartition topic
        self._rekeyed_ms = -1          # when the last epoch that did committed
        self.parts: dict[TP, PartitionState] = {}
        self.inflight: dict[int, Inflight] = {}
        self.stats = DriverStats()
        self.now = 0                   # wall clock (ms) of the event being handled
        self.epoch = 0                 # the epoch being built (numbered at the first event)
        self._next_task = 1
        self._turn = 0                 # where round-robin planning starts next
        self._produced = False         # anything produced in this epoch
        self._results = False          # results (to the sink topic) among it
        self._first_output = 0         # when this epoch produced its first output
        self._closed: list[tuple[int, int]] = []  # (wall ms, latest window end) per emitted batch
        self._committed: dict[TP, int] = {}
        self._last_commit = self._last_early = 0
        self._headers: Headers = ()
        self._out: list[Instruction] = []

    def pipeline_for(self, topic: str) -> Pipeline:
        """The pipeline a range of `topic` is processed with (a re-keyed window's stage)."""
        return self.stage_of.get(topic, self.pipeline)

    # -- the one entry point ------------------------------------------------------------
    def handle(self, event: Event, now_ms: int) -> list[Instruction]:
        """Take one event at wall-clock time `now_ms`; returns the instructions, in order."""
        self.now = now_ms
        if not self.epoch:
            self.epoch = next_epoch(0, self.replica, now_ms)
            self._last_commit = self._last_early = now_ms
        self._HANDLERS[type(event)](self, event)
        if isinstance(event, (Tick, Assigned)):  # new reads start on these only, so a loop
            self._plan()                          # that only collects (at the end) winds down
        out, self._out = self._out, []
        return out

    def _on_tick(self, _: Tick) -> None:
        self._expire_stuck()
        self._merge_ready()
        self._emit(None)
        if self._early_ms is not None and self.now - self._last_early >= self._early_ms:
            self.emit_early()
        if (self.now - self._last_commit >= self.commit_interval_ms
                or (self._produced and self.now - self._first_output >= self.result_commit_ms)):
            self._commit()

    def _on_assigned(self, ev: Assigned) -> None:
        """Restore each partition's state as of its last committed epoch, then plan from there."""
        cl = self.topics.changelog
        restored, found = 0, set()
        for tp in ev.tps:
            start = ev.committed.get(tp, BEGINNING)
            last = ev.committed.get((cl, tp[1]), BEGINNING) if cl is not None else BEGINNING
            try:
                r = restore(ev.logs.get(tp[1], []), tp[0], last)
            except StateFormatError as exc:
                raise StateFormatError(
                    f"cannot restore the state of {tp[0]}[{tp[1]}] from partition {tp[1]} of {cl}: {exc}. "
                    "Nothing was processed. `stream reset` deletes the state and rebuilds it from the "
                    "input; find out first who wrote that entry (only this pipeline should)") from None
            found |= r.aborted
            if r.offset is not None and r.offset != start:
                # the state and its offset come from one meta entry; the group's offsets read
                # stale (or were moved by hand: `stream reset` also deletes the state)
                log.warning("%s[%d]: the group's committed offset %s is not the offset %d of the "
                            "last committed state (epoch %d); resuming at %d", tp[0], tp[1], start,
                            r.offset, r.epoch, r.offset)
                start = r.offset
            store = self._new_store(tp[0])
            if store is not None:
                store.load(r.panes, r.emitted_through)
            self.epoch = max(self.epoch, next_epoch(max(r.max_epoch, last), self.replica, 0))
            pin = sorted(set(self.parts) | set(ev.tps)).index(tp)
            plan = PartitionPlan(start, start, stop=ev.stops[tp] if ev.stops else None,
                                 clock=PartitionClock(NEVER if r.max_ts is None else r.max_ts),
                                 data_ms=self.now)
            self.parts[tp] = PartitionState(plan, pin, store, written=r.written, state_bytes=r.sizes,
                                            live_committed=r.live_committed,
                                            named={r.epoch} if r.epoch > 0 else set())
            if tp[0] == self.repartition:
                self.parts[tp].origins = OriginClocks.load(self.origins, r.origins)
            self._committed[tp] = start
            restored += len(r.panes)
        self.stats.restored += restored
        self._count_aborted(found)
        self._headers = ()
        if self.metrics:
            self.metrics.rebalanced("assigned")
        log.info("assigned %s: resuming at %s, %d window entries restored, epoch %d", ev.tps,
                 {tp: self.parts[tp].plan.merged for tp in ev.tps}, restored, self.epoch)

    def _count_aborted(self, found: set[int]) -> None:
        """Transactions a driver left open and the broker aborted (at the next
        init_transactions, or at its timeout), found in the changelog at a restore."""
        new = found - self._aborted if self.transactional else set()
        self._aborted |= new
        if new:
            log.warning("%d epoch(s) found aborted at restore (%s): their outputs are invisible to "
                        "read_committed readers and were recomputed", len(new), sorted(new))
            if self.metrics:
                for _ in new:
                    self.metrics.aborted()

    def _on_revoked(self, ev: Revoked) -> None:
        """Commit the open epoch while the partitions are still ours, then drop their state."""
        mine = [tp for tp in ev.tps if tp in self.parts]
        if not mine:
            return
        if ev.commit:
            self._merge_ready()
            self._commit()
        for tp in mine:
            self.parts.pop(tp, None)
            self._committed.pop(tp, None)
            if self.metrics:
                self.metrics.forget_partition(*tp)
        if self.metrics:
            self.metrics.rebalanced("revoked")
        log.info("revoked %s (%s, state dropped)", mine,
                 "open epoch committed" if ev.commit else "open epoch abandoned")

    def _on_done(self, ev: RangeDone) -> None:
        task = self._claim(ev.task_id)
        if task is None:
            return
        r = ev.result
        r.submitted_ms, r.accepted_ms = task.submitted_ms, self.now
        rest = task.state.plan.finished(task.planned, r)
        if rest is not None:  # the read stopped short: plan the rest, same end
            self._submit(task.tp, task.state, rest, "short_read")
        if self.metrics:
            self.metrics.stage("read_decode", r.seconds)
        self._merge_ready()

    def _on_failed(self, ev: RangeFailed) -> None:
        task = self._claim(ev.task_id)
        if task is not None:
            self._retry(task, ev.error)

    def _on_end_epoch(self, _: EndEpoch) -> None:
        self._commit()

    def _on_finish(self, ev: Finish) -> None:
        self._merge_ready()
        self._emit(FOREVER if ev.drain else None)
        self._commit()

    _HANDLERS: dict[type, Callable[["DriverCore", Any], None]] = {
        Tick: _on_tick, Assigned: _on_assigned, Revoked: _on_revoked, RangeDone: _on_done,
        RangeFailed: _on_failed, EndEpoch: _on_end_epoch, Finish: _on_finish}

    # -- planning and tasks -------------------------------------------------------------
    def _new_store(self, topic: str) -> WindowState | None:
        stage = self.pipeline_for(topic).window_stage
        return stage.new_store(early=stage.early_ms is not None) if stage else None

    def _submit(self, tp: TP, st: PartitionState, planned: Planned, why: str | None = None) -> None:
        """Plan a task; `why` names a retry (failed, short_read, rejudged) for the metrics."""
        task_id, self._next_task = self._next_task, self._next_task + 1
        self.inflight[task_id] = Inflight(tp, planned, st, self.now)
        self._out.append(Submit(task_id, tp, planned, st.pin,
                                dict(st.origins.marks) if st.origins is not None else None))
        if why is not None and self.metrics:
            self.metrics.retried(why)

    def _claim(self, task_id: int) -> Inflight | None:
        """The task's entry, removed; None when it is unknown (expired) or stale (revoked
        while in flight, perhaps assigned again since)."""
        task = self.inflight.pop(task_id, None)
        if task is None or self.parts.get(task.tp) is not task.state:
            return None
        return task

    def outstanding(self) -> int:
        """Ranges planned and not yet merged: in flight, or done and waiting for an earlier one.

        Planning stops at `max_inflight` of them, so a slow range (or a slow sink, which
        holds up the loop) pauses consumption: the backlog stays in Kafka, not in memory.
        """
        return len(self.inflight) + sum(st.plan.waiting() for st in self.parts.values())

    def _plan(self) -> None:
        """Plan ranges round-robin, starting after the partition planned last, so that with
        fewer slots than partitions none of them waits forever (tail reads return quickly)."""
        progress = True
        while progress and self.outstanding() < self.max_inflight:
            progress = False
            items = list(self.parts.items())
            if not items:
                return
            first = self._turn % len(items)
            for tp, st in items[first:] + items[:first]:
                if self.outstanding() >= self.max_inflight:
                    break
                self._turn += 1
                planned = st.plan.next(self.range_records)
                if planned is not None:
                    self._submit(tp, st, planned)
                    progress = True

    def _expire_stuck(self) -> None:
        """Read again, as a failed read, every range in flight for longer than the task timeout."""
        for task_id, task in list(self.inflight.items()):
            if self.now - task.submitted_ms < self.task_timeout_ms:
                continue
            del self.inflight[task_id]
            self._out.append(Cancel(task_id))
            if self.parts.get(task.tp) is task.state:
                self._retry(task, TimeoutError(
                    f"no result after {self.task_timeout_ms / 1000:.0f} s (its worker may have died)"))

    def _retry(self, task: Inflight, exc: BaseException) -> None:
        self.stats.task_failures += 1
        if self.metrics:
            self.metrics.task_failed()
        again = task.state.plan.failed(task.planned, exc, f"{task.tp[0]}[{task.tp[1]}]")
        log.warning("range %s[%d] %s..%s failed (%s: %s); re-planning it", task.tp[0], task.tp[1],
                    task.planned.start, task.planned.end, type(exc).__name__, exc)
        self._submit(task.tp, task.state, again, "failed")

    # -- merging in offset order --------------------------------------------------------
    def _merge_ready(self) -> None:
        t0 = time.perf_counter()
        merged = False
        for tp, st in self.parts.items():
            while (r := st.plan.take()) is not None:
                if isinstance(r, Planned):  # judged at too low an event time: read it again
                    self._submit(tp, st, r, "rejudged")
                    break
                if st.origins is not None and st.origins.repeats(r.partial.firsts):
                    # read before an earlier range's copies of aborted writes were counted
                    self._submit(tp, st, Planned(r.start, r.next_offset, st.plan.clock.now), "repeated")
                    break
                self._merge(tp, st, r)
                st.plan.merged_range(r)
                if r.last_ts >= 0:
                    st.last_ts = r.last_ts
                merged = True
            if self.metrics and st.plan.high is not None and st.plan.merged >= 0:
                behind = st.plan.lag()
                age = (self.now - st.last_ts) / 1000.0 if behind and st.last_ts >= 0 else 0.0
                self.metrics.lag(tp[0], tp[1], behind, max(0.0, age))
        if self.metrics and merged:
            self.metrics.stage("merge", time.perf_counter() - t0)

    def _merge(self, tp: TP, st: PartitionState, r: RangeResult) -> None:
        p = r.partial
        self.stats.records_in += p.records_in
        self.stats.skipped += p.skipped + p.outside
        self.stats.filtered += p.filtered
        if self.metrics:
            self.metrics.records_in(tp[0], p.records_in, p.bytes_in)
            for why, n in (("tombstone", p.skipped), ("outside_range", p.outside)):
                if n:
                    self.metrics.skipped(why, n)
            if p.filtered:
                self.metrics.filtered(p.filtered)
        for f in p.failures:
            self._failed(tp, f)
        if p.scored and self.metrics:
            self.metrics.scored(p.scored)
        if st.store is not None:
            if self.homes is not None:
                self.homes.check_partial(tp, p)
            if st.origins is not None:  # a repartition partition: its event time is its origins' lowest
                st.origins.heard(p)
                self.stats.skipped += p.repeated
                if self.metrics and p.repeated:
                    self.metrics.skipped("repeated", p.repeated)
            results, late = merge_range(st.store, st.plan.clock, p, self.out_of_order_ms)
            placed = p.windowed + len(p.singles) - (len(late) - len(p.late))  # singles the driver placed
            self.stats.windowed += placed
            if self.metrics and placed:
                self.metrics.windowed(placed)
            self._route_late(tp, late)
            self._emitted(results)
        elif self.repartition is not None:
            self._rekey(tp, st, p)
        else:
            st.plan.clock.observe(p.max_ts)
            self._produce(self.sink_topic, p.outputs, self.headers())
            self._count_out(len(p.outputs))

    def _rekey(self, tp: TP, st: PartitionState, p: Any) -> None:
        """Stage 1 of a re-keyed window: write the range's records to the repartition topic,
        each stamped with its origin and the origin's event time before it, then a heartbeat
        with the origin's event time to every repartition partition when it moved."""
        assert self.repartition is not None
        self._rekeyed = self._rekeyed or bool(p.outputs)
        origin = origin_id(self.pipeline.checked_source().topics.index(tp[0]), tp[1])
        clock = st.plan.clock
        carry = clock.now
        self._produce(self.repartition, [(k, stamp(v, origin, carry)) for k, v in p.outputs], self.headers())
        self._route_late(tp, p.late)
        clock.observe(p.max_ts)
        if clock.now != carry:
            beat = heartbeat(origin, clock.now)
            self._rekeyed = True
            for r in range(self.repartition_partitions):
                self._produce(self.repartition, [(None, beat)], self.headers(), r)

    def _route_late(self, tp: TP, late: list[Late]) -> None:
        """Count late records and write them, with the windows they missed, to the late topic
        (their bytes came back from the worker that read them)."""
        if not late:
            return
        self.stats.late += len(late)
        if self.metrics:
            self.metrics.late(len(late), [(tp[0], tp[1], r.offset, r.event_time) for r in late[-10:]])
        if self.topics.late is None:
            return
        for rec in late:
            self._produce(self.topics.late, [(rec.key, rec.value)], rec.late_headers(*tp) + self.headers())

    def _failed(self, tp: TP, f: Failure) -> None:
        """Count, log and (when a dead-letter topic is set) write a failed record there."""
        self.stats.failed += 1
        if self.topics.dead_letter is not None:
            self._produce(self.topics.dead_letter, [(f.key, f.value)], f.dead_letter_headers(*tp) + self.headers())
        if self.metrics:
            self.metrics.failed(f.reason, (tp[0], tp[1], f.offset), f"{f.error_type}: {f.message}")
        if self.stats.failed <= 100 or self.stats.failed % 1000 == 0:
            log.warning("record %s[%d]@%d failed (%s): %s: %s (%d failed so far)", tp[0], tp[1],
                        f.offset, f.reason, f.error_type, f.message, self.stats.failed)

    def _count_out(self, n: int) -> None:
        self.stats.records_out += n
        if self.metrics and n:
            self.metrics.records_out(self.sink_topic, n)

    def _produce(self, topic: str, records: Sequence[tuple[bytes | None, bytes | None]],
                 headers: Headers, partition: int | None = None) -> None:
        if records:
            if not self._produced:
                self._produced, self._first_output = True, self.now
                self._mark_open()
            self._results = self._results or topic == self.sink_topic
            self._out.append(Produce(topic, records, headers, partition))

    def _mark_open(self) -> None:
        """The epoch's first output: mark it begun in each owned changelog partition."""
        cl = self.topics.changelog
        if cl is not None and self.transactional:
            for tp in self.parts:
                m = open_marker(tp[0], self.epoch)
                self._out.append(Produce(cl, [(m.key, m.value)], m.headers, tp[1]))

    def headers(self) -> Headers:
        """Headers of every output record: the application, the epoch and the transaction."""
        if not self._headers and self.stamp:
            self._headers = (("stream.app", self.app_id.encode()),
                             ("stream.epoch", str(self.epoch).encode()),
                             ("stream.txn", self.transactional_id.encode()))
        return self._headers

    # -- closing windows ----------------------------------------------------------------
    def watermark(self) -> int:
        """The pipeline watermark, for dashboards: the lowest partition event time, minus the
        out-of-orderness, over the partitions that have had records (-1: none yet)."""
        times = [st.plan.clock.now for st in self.parts.values() if st.plan.clock.now != NEVER]
        return min(times) - self.out_of_order_ms if times else -1

    def _emit(self, event_time: int | None) -> WindowResults:
        """Move every partition's event time to `event_time` (FOREVER: the end of bounded input)
        and emit what closes; with None only the opted-in wall-clock advance moves it."""
        results = WindowResults()
        for st in self.parts.values():
            target = event_time if event_time is not None else self._quiet_advance(st)
            if st.store is not None and target is not None:
                results.extend(advance(st.store, st.plan.clock, target, self.out_of_order_ms))
        return self._emitted(results)

    def _quiet_advance(self, st: PartitionState) -> int | None:
        """With `advance_after_ms`: a partition confirmed quiet (a read that started after its
        last records reached its end and found nothing) moves on in event time by the quiet
        time beyond `advance_after_ms`, measured up to that read's start. A slow or stalled
        read confirms nothing, so it never moves time."""
        plan = st.plan
        if (self.advance_after_ms is None or plan.clock.event_time == NEVER or plan.quiet_ms < plan.data_ms
                or st.origins is not None):  # a repartition partition moves with its origins only
            return None
        beyond = plan.quiet_ms - plan.data_ms - self.advance_after_ms
        return plan.clock.event_time + beyond if beyond > 0 else None

    def _emitted(self, results: WindowResults) -> WindowResults:
        """Write closed windows to the sink (final results)."""
        if self.keep is not None and results:
            kept = results.select(self.keep)
            self.stats.outside += len(results) - len(kept)
            results = kept
        if not results:
            return results
        t0 = time.perf_counter()
        written = self._write_results(results, b"final")
        self.stats.windows += len(results)
        if self.metrics:
            self._closed.append((self.now, max(results.ends)))
            self.metrics.windows(len(results))
            self.metrics.stage("produce", time.perf_counter() - t0)
        self._count_out(written)
        return results

    def _write_results(self, results: WindowResults, kind: bytes) -> int:
        """Run the result operators, encode and produce; header `stream.result` says final or
        partial. Returns the number of records written."""
        headers = self.headers() + ((("stream.result", kind),) if self.stamp else ())
        scored: dict[tuple[str, str], int] = {}

        def failed(w: WindowResult, exc: BaseException, reason: str = "operator_error",
                   record: Any = None) -> None:
            self._failed((self.sink_topic, -1), result_failure(w, exc, reason, record))
        ready = encode_results(self.pipeline, results, failed, scored)
        self._produce(self.sink_topic, ready, headers)
        if scored and self.metrics:
            self.metrics.scored(scored)
        return len(ready)

    def emit_early(self) -> WindowResults:
        """Partial results of the open windows that changed since the last early emission."""
        self._last_early = self.now
        results = WindowResults()
        for st in self.parts.values():
            if st.store is not None:
                results.extend(st.store.early_results())
        if results:
            written = self._write_results(results, b"partial")
            self.stats.partial += len(results)
            self._count_out(written)
        return results

    # -- epochs -------------------------------------------------------------------------
    def _write_changelog(self, tp: TP, st: PartitionState) -> bool:
        """Write a partition's deltas, tombstones and meta entry; True if state changed."""
        cl, topic = self.topics.changelog, tp[0]
        assert cl is not None
        changed, dropped = st.store.take_changes() if st.store is not None else ({}, [])
        for pane, entries in changed.items():
            msgs = deltas(topic, pane, self.epoch, entries)
            for m in msgs:
                self._out.append(Produce(cl, [(m.key, m.value)], m.headers, tp[1]))
            st.written.setdefault(pane, []).append((self.epoch, len(msgs)))
            st.state_bytes[pane] = st.state_bytes.get(pane, 0) + sum(len(m.value or b"") for m in msgs)
        self._out.append(Mark("changelog"))
        for pane in dropped:
            st.state_bytes.pop(pane, None)
            for m in delta_tombstones(topic, pane, st.written.pop(pane, []), self.epoch):
                self._out.append(Produce(cl, [(m.key, None)], m.headers, tp[1]))
        st.live_committed &= {e for entries in st.written.values() for e, _ in entries}
        known = tuple(sorted(st.named | st.live_committed))  # this entry alone survives compaction
        meta = encode_meta(Meta(topic, self.epoch, known,
                                st.store.emitted_through if st.store is not None else NEVER,
                                None if st.plan.clock.now == NEVER else st.plan.clock.now, st.plan.merged,
                                st.origins.state() if st.origins is not None else None))
        self._out.append(Produce(cl, [(meta.key, meta.value)], meta.headers, tp[1]))
        return bool(changed or dropped)

    def _commit(self) -> None:
        """End the epoch: changelog and meta entries, then offsets, committed with the outputs.
        The loop raises if the commit fails, and this core is not used again."""
        self._last_commit = self.now
        if self.topics.changelog is None:  # bounded input: nothing is committed
            self._produced = self._results = False
            return
        offsets = {tp: st.plan.merged for tp, st in self.parts.items() if st.plan.merged >= 0}
        dirty = any(st.store is not None and st.store.has_changes() for st in self.parts.values())
        moved = any(self._committed.get(tp) != o for tp, o in offsets.items())
        if not (self._produced or dirty or moved):
            return
        self._out.append(BeginCommit(self.epoch, tuple(self.parts)))
        if self._results:
            self._out.append(Mark("after_produce"))  # an epoch that wrote results, none committed yet
        for tp, st in self.parts.items():
            self._write_changelog(tp, st)
        for p in {tp[1] for tp in self.parts}:
            offsets[(self.topics.changelog, p)] = self.epoch
        closed, self._closed = self._closed, []
        self._out.append(Commit(self.epoch, offsets, closed))
        for st in self.parts.values():  # this epoch's deltas are committed now
            if any(entries and entries[-1][0] == self.epoch for entries in st.written.values()):
                st.live_committed.add(self.epoch)
            st.named = {self.epoch}
        self._committed.update({tp: o for tp, o in offsets.items() if tp in self.parts})
        self.epoch = next_epoch(self.epoch, self.replica, self.now)
        self._headers = ()
        self._produced = self._results = False
        if self._rekeyed:
            self._rekeyed, self._rekeyed_ms = False, self.now

    # -- views --------------------------------------------------------------------------
    def caught_up(self) -> bool:
        """True when every assigned partition has been merged up to the end its last read saw
        (bounded input: up to its stop). A re-keyed window also needs what stage 1 wrote
        committed, and each repartition partition read to its end since."""
        if self._rekeyed:
            return False
        return bool(self.parts) and all(
            st.plan.settled() and (st.origins is None or st.plan.quiet_ms >= self._rekeyed_ms)
            for st in self.parts.values())

    def finished(self) -> bool:
        """Bounded input: every partition merged up to its stop, nothing in flight."""
        return not self.inflight and all(st.plan.stop is not None and st.plan.merged >= st.plan.stop
                                         for st in self.parts.values())

    def lag(self) -> int:
        return sum(st.plan.lag() for st in self.parts.values())

    def state_bytes(self) -> int:
        """Window state as serialized in the changelog: what a restore of these partitions reads."""
        return sum(sum(st.state_bytes.values()) for st in list(self.parts.values()))

    def open_windows(self) -> int:
        return sum(st.store.open_windows() for st in self.parts.values() if st.store is not None)
