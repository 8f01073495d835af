"""The driver loop: plan partition ranges, merge results in offset order, emit, commit epochs.

Only offsets go to workers and only small results come back. Per partition the driver keeps
the contiguous merged prefix and its window state; a range that fails is re-planned with the
same bounds. Work is grouped into epochs: one epoch's window results, dead letters, late
records, changelog entries and consumer offsets are committed together (one Kafka
transaction under exactly-once). On assignment a partition's state is restored from the
changelog as of its last committed epoch; on revocation the open epoch is committed first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from stream import faults
from stream.compute import encode_results, result_failure
from stream.errors import FatalError
from stream.execution.task import RangeResult, RangeTask, run_range
from stream.pipeline import Pipeline
from stream.records import BEGINNING, Failure, Late, Limits
from stream.state import Meta, delta_tombstones, deltas, encode_meta, next_epoch, restore
from stream.planning import PartitionPlan, Planned
from stream.windows.eventtime import FOREVER, NEVER, PartitionClock
from stream.windows.merge import advance, merge_range
from stream.windows.store import WindowResult, WindowStore

log = logging.getLogger(__name__)
TP = tuple[str, int]


@dataclass
class PartitionState:
    """One assigned partition: its planning (`plan`), window state and changelog bookkeeping."""

    plan: PartitionPlan            # reading, merging and event time of the partition
    pin: int                       # worker index this partition prefers
    store: WindowStore | None      # the partition's window state (None: no window stage)
    written: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # changelog deltas per pane
    state_bytes: dict[int, int] = field(default_factory=dict)  # changelog bytes per live pane
    live_committed: set[int] = field(default_factory=set)  # committed epochs with live deltas here
    last_ts: int = -1              # Kafka timestamp (ms) of the last merged record


@dataclass
class DriverStats:
    records_in: int = 0
    records_out: int = 0
    windows: int = 0
    partial: int = 0               # early (partial) window results
    failed: int = 0
    late: int = 0
    skipped: int = 0
    commits: int = 0
    task_failures: int = 0
    restored: int = 0


@dataclass(frozen=True)
class Topics:
    """Where the driver writes besides the sink topic (None: not written)."""

    changelog: str
    dead_letter: str | None = None
    late: str | None = None


class Driver:
    """Runs one pipeline over the partitions a session assigns, on an executor."""

    def __init__(self, pipeline: Pipeline, session: Any, sink: Any, executor: Any,
                 changelog: Any, topics: Topics, *, range_records: int = 50_000,
                 max_inflight: int = 6, commit_interval_s: float = 1.0,
                 limits: Limits = Limits(), metrics: Any = None,
                 app_id: str | None = None, transactional_id: str | None = None,
                 replica: int = 0, result_commit_s: float = 0.1,
                 advance_after_ms: int | None = None, task_timeout_s: float = 60.0) -> None:
        pipeline.validate()
        self.pipeline = pipeline
        self.session, self.sink, self.executor = session, sink, executor
        self.changelog, self.topics = changelog, topics
        self.range_records, self.max_inflight = range_records, max_inflight
        self.commit_interval_s = commit_interval_s
        # an epoch ends about this long after its first output, so read_committed readers see
        # results soon; an epoch that only moved offsets or state ends every commit_interval_s
        self.result_commit_s = min(result_commit_s, commit_interval_s)
        self.limits, self.metrics = limits, metrics
        self.app_id = app_id or pipeline.name
        self.transactional_id = transactional_id or self.app_id
        self.out_of_order_ms = pipeline.source_spec.out_of_order_ms  # type: ignore[union-attr]
        self.advance_after_ms = advance_after_ms
        # a task in flight this long is read again (same bounds; the result is the same
        # whichever read it comes from): a future the cluster lost track of must not stall
        # its partition for ever
        self.task_timeout_ms = int(task_timeout_s * 1000)
        stage = pipeline.window_stage
        self._early_s = stage.early_ms / 1000 if stage is not None and stage.early_ms else None
        self._last_early = time.monotonic()
        self.parts: dict[TP, PartitionState] = {}
        self._turn = 0  # where round-robin planning starts next
        # future -> (task, attempt, the partition state it was planned for)
        self.inflight: dict[Any, tuple[RangeTask, int, PartitionState]] = {}
        self.stats = DriverStats()
        self.replica = replica
        self.epoch = next_epoch(0, replica, _now_ms())  # the epoch being built
        self._known_committed: set[int] = set()  # epochs to name in the next meta entries
        self._produced = False         # anything produced in this epoch
        self._first_output = 0.0       # when this epoch produced its first output
        self._closed: list[tuple[float, int]] = []  # (when, latest window end) per emitted batch
        self._committed: dict[TP, int] = {}
        self._last_commit = time.monotonic()
        self._headers: tuple[tuple[str, bytes], ...] = ()
        self.failed = False            # set when the loop died: no further commits
        session.on_revoke = self._on_revoked
        if metrics is not None:
            metrics.probes.watermark_ms = self.watermark
            metrics.probes.open_windows = self.open_windows
            metrics.probes.state_bytes = self.state_bytes
            metrics.probes.partitions = lambda: len(self.parts)
            metrics.probes.ready = lambda: bool(self.parts) and not self.failed
            metrics.topics(list(pipeline.source_spec.topics), pipeline.sink_spec.topic)  # type: ignore[union-attr]

    # -- group membership -----------------------------------------------------------------
    def _new_store(self) -> WindowStore | None:
        stage = self.pipeline.window_stage
        return stage.new_store(early=stage.early_ms is not None) if stage else None

    def _on_assigned(self, tps: list[TP]) -> None:
        """Restore each partition's state as of its last committed epoch, then plan from there."""
        if self._produced and not self.failed:
            self.commit()  # records already carry this epoch's number, which may change below
        cl = self.topics.changelog
        restored = 0
        committed = self.session.committed(tps + [(cl, p) for p in {tp[1] for tp in tps}])
        logs = self.changelog.load(sorted({tp[1] for tp in tps}))
        now = _now_ms()
        for tp in tps:
            start = committed.get(tp, BEGINNING)
            last = committed.get((cl, tp[1]), BEGINNING)
            r = restore(logs[tp[1]], tp[0], last)
            store = self._new_store()
            if store is not None:
                store.load(r.panes, r.emitted_through)
            self.epoch = max(self.epoch, next_epoch(max(r.max_epoch, last), self.replica, 0))
            if last > 0:
                self._known_committed.add(last)
            pin = sorted(set(self.parts) | set(tps)).index(tp)
            plan = PartitionPlan(start, start, clock=PartitionClock(NEVER if r.max_ts is None else r.max_ts),
                                 data_ms=now)
            self.parts[tp] = PartitionState(plan, pin, store, written=r.written, state_bytes=r.sizes,
                                            live_committed=r.live_committed)
            self._committed[tp] = start
            restored += len(r.panes)
        self.stats.restored += restored
        self._headers = ()
        if self.metrics:
            self.metrics.rebalanced("assigned")
        log.info("assigned %s: resuming at %s, %d window entries restored, epoch %d", tps,
                 {tp: self.parts[tp].plan.merged for tp in tps}, restored, self.epoch)

    def _on_revoked(self, tps: list[TP]) -> None:
        """Commit the open epoch while the partitions are still ours, then drop their state."""
        mine = [tp for tp in tps if tp in self.parts]
        if not mine:
            return
        if not self.failed:  # after a fatal error nothing more is committed
            self._merge_ready()
            self.commit()
        for tp in mine:
            self.parts.pop(tp, None)
            self._committed.pop(tp, None)
            if self.metrics:
                self.metrics.forget_partition(*tp)
        if self.metrics:
            self.metrics.rebalanced("revoked")
        log.info("revoked %s (%s, state dropped)", mine,
                 "open epoch abandoned" if self.failed else "open epoch committed")

    def _serve_group(self, timeout: float) -> None:
        for kind, tps in self.session.poll(timeout):
            if kind == "assigned":
                self._on_assigned(tps)
            elif kind == "revoked":
                self._on_revoked(tps)
            elif kind == "lost":
                if self.metrics:
                    self.metrics.rebalanced("lost")
                raise FatalError(f"partitions {tps} were lost (session timed out); the open epoch "
                                 "is abandoned and the driver restarts from the last commit")

    # -- planning -------------------------------------------------------------------------
    def _submit(self, tp: TP, st: PartitionState, planned: Planned) -> None:
        task = RangeTask(tp[0], tp[1], planned.start, planned.end, self.range_records,
                         self.session.reader(), self.pipeline, self.limits, carry=planned.carry)
        fut = self.executor.submit(run_range, task, pin=st.pin)
        self.inflight[fut] = (planned, task, st, _now_ms())

    def _plan_one(self, tp: TP, st: PartitionState) -> bool:
        """Plan the next range of one partition; False when it has nothing to plan now."""
        planned = st.plan.next(self.range_records)
        if planned is not None:
            self._submit(tp, st, planned)
        return planned is not None

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
                progress |= self._plan_one(tp, st)

    # -- results --------------------------------------------------------------------------
    def _collect(self, timeout: float) -> None:
        self._expire_stuck()
        for fut in self.executor.wait(list(self.inflight), timeout):
            outcome = self.executor.outcome(fut)
            if outcome is None:
                continue  # went back to pending (its worker left): still in flight
            planned, task, st, submitted = self.inflight.pop(fut)
            if self.parts.get(task.tp) is not st:
                continue  # revoked while in flight (perhaps assigned again since): stale
            result, exc = outcome
            if exc is not None:
                self._retry(task, st, planned, exc)
                continue
            result.submitted_ms, result.accepted_ms = submitted, _now_ms()
            self._accept(task, st, planned, result)

    def _expire_stuck(self) -> None:
        """Read again, as a failed read, every range in flight for longer than the task timeout."""
        now = _now_ms()
        for fut, (planned, task, st, submitted) in list(self.inflight.items()):
            if now - submitted < self.task_timeout_ms:
                continue
            del self.inflight[fut]
            cancel = getattr(self.executor, "cancel", None)
            if cancel is not None:
                cancel(fut)
            if self.parts.get(task.tp) is st:
                self._retry(task, st, planned, TimeoutError(
                    f"no result after {self.task_timeout_ms / 1000:.0f} s (its worker may have died)"))

    def _retry(self, task: RangeTask, st: PartitionState, planned: Planned, exc: BaseException) -> None:
        self.stats.task_failures += 1
        if self.metrics:
            self.metrics.task_failed()
        again = st.plan.failed(planned, exc, f"{task.topic}[{task.partition}]")
        log.warning("range %s[%d] %s..%s failed (%s: %s); re-planning it", task.topic,
                    task.partition, task.start, task.end, type(exc).__name__, exc)
        self._submit(task.tp, st, again)
        if self.metrics:
            self.metrics.retried("failed")

    def _accept(self, task: RangeTask, st: PartitionState, planned: Planned, r: RangeResult) -> None:
        rest = st.plan.finished(planned, r)
        if rest is not None:  # the read stopped short: plan the rest, same end
            self._submit(task.tp, st, rest)
            if self.metrics:
                self.metrics.retried("short_read")
        if self.metrics:
            self.metrics.stage("read_decode", r.seconds)

    def _merge_ready(self) -> None:
        t0, now = time.perf_counter(), _now_ms()
        merged = False
        for tp, st in self.parts.items():
            while (r := st.plan.take()) is not None:
                if isinstance(r, Planned):  # judged at too low an event time: read it again
                    self._submit(tp, st, r)
                    if self.metrics:
                        self.metrics.retried("rejudged")
                    break
                self._merge(tp, st, r)
                st.plan.merged_range(r)
                if r.last_ts >= 0:
                    st.last_ts = r.last_ts
                merged = True
            if self.metrics and st.plan.high is not None and st.plan.merged >= 0:
                behind = st.plan.lag()
                age = (now - st.last_ts) / 1000.0 if behind and st.last_ts >= 0 else 0.0
                self.metrics.lag(tp[0], tp[1], behind, max(0.0, age))
        if self.metrics and merged:
            self.metrics.stage("merge", time.perf_counter() - t0)

    def _merge(self, tp: TP, st: PartitionState, r: RangeResult) -> None:
        p = r.partial
        self.stats.records_in += p.records_in
        self.stats.skipped += p.skipped
        if self.metrics:
            self.metrics.records_in(tp[0], p.records_in, p.bytes_in)
            if p.skipped:
                self.metrics.skipped("tombstone", p.skipped)
        for f in p.failures:
            self._failed(tp, f)
        if p.scored and self.metrics:
            self.metrics.scored(p.scored)
        if st.store is not None:
            results, late = merge_range(st.store, st.plan.clock, p, self.out_of_order_ms)
            self._route_late(tp, late)
            self._emitted(results)
        else:
            st.plan.clock.observe(p.max_ts)
            self._produce_many(self.pipeline.sink_spec.topic, p.outputs, self.headers())  # type: ignore[union-attr]
            self._count_out(len(p.outputs))

    def _route_late(self, tp: TP, late: list[Late]) -> None:
        """Count late records and write them, with the windows they missed, to the late topic
        (their bytes came back from the worker that read them)."""
        if not late:
            return
        self.stats.late += len(late)
        if self.metrics:
            self.metrics.late(len(late))
        if self.topics.late is None:
            return
        for rec in late:
            self._produce(self.topics.late, rec.key, rec.value, rec.late_headers(*tp) + self.headers())

    def _failed(self, tp: TP, f: Failure) -> None:
        """Count, log and (when a dead-letter topic is set) write a failed record there."""
        self.stats.failed += 1
        if self.topics.dead_letter is not None:
            self._produce(self.topics.dead_letter, f.key, f.value,
                          f.dead_letter_headers(*tp) + self.headers())
        if self.metrics:
            self.metrics.failed(f.reason)
        if self.stats.failed <= 100 or self.stats.failed % 1000 == 0:
            log.warning("record %s[%d]@%d failed (%s): %s: %s (%d failed so far)", tp[0], tp[1],
                        f.offset, f.reason, f.error_type, f.message, self.stats.failed)

    def _count_out(self, n: int) -> None:
        self.stats.records_out += n
        if self.metrics and n:
            self.metrics.records_out(self.pipeline.sink_spec.topic, n)  # type: ignore[union-attr]

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: tuple[tuple[str, bytes], ...], partition: int | None = None) -> None:
        self._produce_many(topic, [(key, value)], headers, partition)

    def _produce_many(self, topic: str, records: list[tuple[bytes | None, bytes | None]],
                      headers: tuple[tuple[str, bytes], ...], partition: int | None = None) -> None:
        if records:
            if not self._produced:
                self._produced, self._first_output = True, time.monotonic()
            self.sink.produce_many(topic, records, headers, partition)

    def headers(self) -> tuple[tuple[str, bytes], ...]:
        """Headers of every output record: the application, the epoch and the transaction."""
        if not self._headers:
            self._headers = (("stream.app", self.app_id.encode()),
                             ("stream.epoch", str(self.epoch).encode()),
                             ("stream.txn", self.transactional_id.encode()))
        return self._headers

    # -- emit and commit ------------------------------------------------------------------
    def watermark(self) -> int:
        """The pipeline watermark, for dashboards: the lowest partition event time, minus the
        out-of-orderness, over the partitions that have had records (-1: none yet)."""
        times = [st.plan.clock.now for st in self.parts.values() if st.plan.clock.now != NEVER]
        return min(times) - self.out_of_order_ms if times else -1

    def emit(self, event_time: int | None = None) -> list[WindowResult]:
        """Move every partition's event time to `event_time` (FOREVER: the end of bounded input)
        and emit what closes; by default only the opted-in wall-clock advance moves it."""
        results: list[WindowResult] = []
        for st in self.parts.values():
            target = event_time if event_time is not None else self._quiet_advance(st)
            if st.store is not None and target is not None:
                results += advance(st.store, st.plan.clock, target, self.out_of_order_ms)
        return self._emitted(results)

    def _quiet_advance(self, st: PartitionState) -> int | None:
        """With `advance_after_ms`: a partition confirmed quiet (a read that started after its
        last records reached its end and found nothing) moves on in event time by the quiet
        time beyond `advance_after_ms`, measured up to that read's start. A slow or stalled
        read confirms nothing, so it never moves time."""
        plan = st.plan
        if self.advance_after_ms is None or plan.clock.event_time == NEVER or plan.quiet_ms < plan.data_ms:
            return None
        beyond = plan.quiet_ms - plan.data_ms - self.advance_after_ms
        return plan.clock.event_time + beyond if beyond > 0 else None

    def _emitted(self, results: list[WindowResult]) -> list[WindowResult]:
        """Write closed windows to the sink (final results)."""
        if not results:
            return results
        t0 = time.perf_counter()
        written = self._write_results(results, b"final")
        self.stats.windows += len(results)
        if self.metrics:
            self._closed.append((time.monotonic(), max(w.end for w in results)))
            self.metrics.windows(len(results))
            self.metrics.stage("produce", time.perf_counter() - t0)
        self._count_out(written)
        return results

    def _write_results(self, results: list[WindowResult], kind: bytes) -> int:
        """Run the result operators, encode and produce; header `stream.result` says final or
        partial. Returns the number of records written."""
        sink = self.pipeline.sink_spec
        topic = sink.topic  # type: ignore[union-attr]
        headers = self.headers() + (("stream.result", kind),)
        scored: dict[tuple[str, str], int] = {}

        def failed(w: WindowResult, exc: BaseException, reason: str = "operator_error",
                   record: Any = None) -> None:
            self._failed((topic, -1), result_failure(w, exc, reason, record))
        ready = encode_results(self.pipeline, results, failed, scored)
        self._produce_many(topic, ready, headers)
        if scored and self.metrics:
            self.metrics.scored(scored)
        return len(ready)

    def emit_early(self) -> list[WindowResult]:
        """Partial results of the open windows that changed since the last early emission."""
        self._last_early = time.monotonic()
        results = [r for st in self.parts.values() if st.store is not None for r in st.store.early_results()]
        if results:
            written = self._write_results(results, b"partial")
            self.stats.partial += len(results)
            self._count_out(written)
        return results

    def _write_changelog(self, tp: TP, st: PartitionState, known: tuple[int, ...]) -> bool:
        """Write a partition's deltas, tombstones and meta entry; True if state changed."""
        cl, topic = self.topics.changelog, tp[0]
        changed, dropped = st.store.take_changes() if st.store is not None else ({}, [])
        for pane, entries in changed.items():
            msgs = deltas(topic, pane, self.epoch, entries)
            for m in msgs:
                self.sink.produce(cl, m.key, m.value, m.headers, tp[1])
            st.written.setdefault(pane, []).append((self.epoch, len(msgs)))
            st.state_bytes[pane] = st.state_bytes.get(pane, 0) + sum(len(m.value or b"") for m in msgs)
        faults.point("changelog")
        for pane in dropped:
            st.state_bytes.pop(pane, None)
            for m in delta_tombstones(topic, pane, st.written.pop(pane, []), self.epoch):
                self.sink.produce(cl, m.key, None, m.headers, tp[1])
        st.live_committed &= {e for entries in st.written.values() for e, _ in entries}
        known = tuple(sorted(set(known) | st.live_committed))  # this entry alone survives compaction
        meta = encode_meta(Meta(topic, self.epoch, known,
                                st.store.emitted_through if st.store is not None else NEVER,
                                None if st.plan.clock.now == NEVER else st.plan.clock.now, st.plan.merged))
        self.sink.produce(cl, meta.key, meta.value, meta.headers, tp[1])
        return bool(changed or dropped)

    def commit(self) -> None:
        """End the epoch: changelog and meta entries, then offsets, committed with the outputs."""
        self._last_commit = time.monotonic()
        offsets = {tp: st.plan.merged for tp, st in self.parts.items() if st.plan.merged >= 0}
        dirty = any(st.store is not None and st.store.has_changes() for st in self.parts.values())
        moved = any(self._committed.get(tp) != o for tp, o in offsets.items())
        if not (self._produced or dirty or moved):
            return
        t0 = time.monotonic()
        missing = set(self.parts) - set(self.session.assigned())
        if missing:
            self.sink.abort()
            raise FatalError(f"partitions {sorted(missing)} are no longer assigned to this driver; "
                             f"epoch {self.epoch} was aborted")
        if self._produced:
            faults.point("after_produce")  # an epoch that wrote results, none committed yet
        known = tuple(sorted(self._known_committed))
        for tp, st in self.parts.items():
            self._write_changelog(tp, st, known)
        for p in {tp[1] for tp in self.parts}:
            offsets[(self.topics.changelog, p)] = self.epoch
        self.sink.commit_epoch(offsets, self.session)
        for st in self.parts.values():  # this epoch's deltas are committed now
            if any(entries and entries[-1][0] == self.epoch for entries in st.written.values()):
                st.live_committed.add(self.epoch)
        closed, self._closed = self._closed, []
        self._known_committed = {self.epoch}
        self._committed.update({tp: o for tp, o in offsets.items() if tp in self.parts})
        self.epoch = next_epoch(self.epoch, self.replica, _now_ms())
        self._headers = ()
        self._produced = False
        self.stats.commits += 1
        if self.stats.commits == 1:
            log.info("first epoch committed since start")
        if self.metrics:
            self.metrics.committed(time.monotonic() - t0, getattr(self.sink, "transactional", False))
            self.metrics.results_acknowledged(closed)

    # -- the loop -------------------------------------------------------------------------
    def step(self) -> None:
        """One turn: serve the group, plan, collect, merge, emit, maybe commit."""
        if self.metrics:
            self.metrics.alive()
        self._serve_group(0.0 if self.inflight else 0.05)
        self._plan()
        if self.inflight:
            self._collect(0.05)
        self._merge_ready()
        self.emit()
        now = time.monotonic()
        if self._early_s is not None and now - self._last_early >= self._early_s:
            self.emit_early()
        if (now - self._last_commit >= self.commit_interval_s
                or (self._produced and now - self._first_output >= self.result_commit_s)):
            self.commit()

    def caught_up(self) -> bool:
        """True when every assigned partition has been merged up to the end its last read saw."""
        return bool(self.parts) and all(st.plan.settled() for st in self.parts.values())

    def lag(self) -> int:
        return sum(st.plan.lag() for st in self.parts.values())

    def state_bytes(self) -> int:
        """Window state as serialized in the changelog: what a restore of these partitions reads."""
        return sum(sum(st.state_bytes.values()) for st in list(self.parts.values()))

    def open_windows(self) -> int:
        return sum(st.store.open_windows() for st in self.parts.values() if st.store is not None)

    def run(self, until: Callable[["Driver"], bool] = lambda d: False,
            should_stop: Callable[[], bool] = lambda: False, drain: bool = False,
            on_step: Callable[["Driver"], None] | None = None) -> DriverStats:
        """Loop until `until(self)` or `should_stop()`; with `drain`, close every window at the end.

        Drain is for bounded input (the demo, the benchmark): it treats the input as ended.
        """
        try:
            while not should_stop() and not until(self):
                self.step()
                if on_step is not None:
                    on_step(self)
            self._wait_inflight()
            self._merge_ready()
            self.emit(FOREVER if drain else None)
            self.commit()
        except BaseException:
            self.failed = True
            raise
        return self.stats

    def _wait_inflight(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.inflight and time.monotonic() < deadline:
            self._collect(0.1)


def _now_ms() -> int:
    return int(time.time() * 1000)
