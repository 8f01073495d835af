"""The driver loop: plan partition ranges, merge results in offset order, emit, commit.

Only offsets go to workers and only small results come back. Per partition the driver
keeps the contiguous merged prefix; a range that fails is re-planned with the same bounds;
offsets are committed only after outputs are flushed, and never past the first record an
open window still needs (at-least-once without a state store: a restart replays those).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from stream.checkpoint import Checkpoint
from stream.errors import EncodeError, FatalError
from stream.execution.task import RangeResult, RangeTask, run_range
from stream.pipeline import Pipeline
from stream.records import BEGINNING, Failure
from stream.windows.store import WindowResult, WindowStore
from stream.windows.watermark import NEVER, Watermarks

log = logging.getLogger(__name__)
TP = tuple[str, int]
FOREVER = 2**62
MAX_ATTEMPTS = 8


@dataclass
class PartitionState:
    """Planning and merge position of one assigned partition."""

    merged: int                    # next offset to merge: everything below is merged
    planned: int                   # next offset to plan
    replay_until: int              # below this, records were processed before a restart
    pin: int                       # worker index this partition prefers
    high: int | None = None        # end offset seen by the last fetch
    tail_busy: bool = False        # an open-ended read is in flight
    caught_up: bool = False        # the last merged range reached EOF
    done: dict[int, RangeResult] = field(default_factory=dict)


@dataclass
class DriverStats:
    records_in: int = 0
    records_out: int = 0
    windows: int = 0
    failed: int = 0
    late: int = 0
    skipped: int = 0
    commits: int = 0
    task_failures: int = 0


class Driver:
    """Runs one pipeline over the partitions a session assigns, on an executor."""

    def __init__(self, pipeline: Pipeline, session: Any, sink: Any, executor: Any,
                 checkpoints: Any, *, range_records: int = 20_000, max_inflight: int = 6,
                 commit_interval_s: float = 1.0, idle_timeout_ms: int = 5_000,
                 metrics: Any = None, app_id: str | None = None,
                 dead_letter_topic: str | None = None) -> None:
        pipeline.validate()
        self.pipeline = pipeline
        self.session, self.sink, self.executor, self.checkpoints = session, sink, executor, checkpoints
        self.range_records, self.max_inflight = range_records, max_inflight
        self.commit_interval_s = commit_interval_s
        self.metrics = metrics
        self.app_id = app_id or pipeline.name
        self.dead_letter_topic = dead_letter_topic
        stage = pipeline.window_stage
        self.store = WindowStore(stage.spec, stage.aggregations, stage.grace_ms) if stage else None
        ooo = pipeline.source_spec.out_of_order_ms  # type: ignore[union-attr]
        self.watermarks = Watermarks(ooo, idle_timeout_ms)
        self.parts: dict[TP, PartitionState] = {}
        self.inflight: dict[Any, tuple[RangeTask, int]] = {}
        self.stats = DriverStats()
        self._last_commit = time.monotonic()
        self._saved: dict[TP, Checkpoint] = {}
        self._headers = (("stream.app", self.app_id.encode()),)
        if metrics is not None:
            metrics.watch(lambda: self.watermarks.floor,
                          lambda: self.store.open_windows() if self.store else 0)

    # -- group membership -----------------------------------------------------------------
    def _on_assigned(self, tps: list[TP]) -> None:
        committed = self.session.committed(tps)
        saved = self.checkpoints.load(tps)
        now = _now_ms()
        for i, tp in enumerate(tps):
            start = committed.get(tp, BEGINNING)
            cp = saved.get(tp)
            replay = cp.processed if cp is not None and start >= 0 else start
            pin = sorted(set(self.parts) | set(tps)).index(tp)
            self.parts[tp] = PartitionState(start, start, replay, pin)
            self.watermarks.add(tp, now)
        if saved and self.store is not None and self.store.emitted_through == NEVER:
            through = min(cp.emitted_through for cp in saved.values())
            self.store.emitted_through = through
            self.watermarks.floor = max(self.watermarks.floor, min(through, FOREVER - 1))
        log.info("assigned %s (resuming at %s)", tps, {tp: self.parts[tp].merged for tp in tps})

    def _on_revoked(self, tps: list[TP]) -> None:
        for tp in tps:
            self.parts.pop(tp, None)
            self.watermarks.remove(tp)
            if self.store is not None:
                self.store.drop_partition(tp)
        log.info("revoked %s", tps)

    def _serve_group(self, timeout: float) -> None:
        for kind, tps in self.session.poll(timeout):
            (self._on_assigned if kind == "assigned" else self._on_revoked)(tps)

    # -- planning -------------------------------------------------------------------------
    def _submit(self, tp: TP, st: PartitionState, start: int, end: int | None, attempt: int = 0) -> None:
        task = RangeTask(tp[0], tp[1], start, end, self.range_records, self.session.reader(),
                         self.pipeline)
        fut = self.executor.submit(run_range, task, pin=st.pin)
        self.inflight[fut] = (task, attempt)

    def _plan_one(self, tp: TP, st: PartitionState) -> bool:
        """Plan the next range of one partition; False when it has nothing to plan now."""
        if st.tail_busy:
            return False
        known = st.high if st.high is not None and st.planned >= 0 else None
        if known is None or st.planned >= known:
            st.tail_busy = True
            self._submit(tp, st, st.planned, None)
            return True
        end = min(st.planned + self.range_records, known)
        if st.planned < st.replay_until:
            end = min(end, st.replay_until)
        self._submit(tp, st, st.planned, end)
        st.planned = end
        return True

    def _plan(self) -> None:
        progress = True
        while progress and len(self.inflight) < self.max_inflight:
            progress = False
            for tp, st in list(self.parts.items()):
                if len(self.inflight) >= self.max_inflight:
                    break
                progress |= self._plan_one(tp, st)

    # -- results --------------------------------------------------------------------------
    def _collect(self, timeout: float) -> None:
        for fut in self.executor.wait(list(self.inflight), timeout):
            outcome = self.executor.outcome(fut)
            if outcome is None:
                continue  # went back to pending (its worker left): still in flight
            task, attempt = self.inflight.pop(fut)
            result, exc = outcome
            if exc is not None:
                self._retry(task, attempt, exc)
                continue
            st = self.parts.get(task.tp)
            if st is None:
                continue  # revoked while in flight
            self._accept(task, st, result)

    def _retry(self, task: RangeTask, attempt: int, exc: BaseException) -> None:
        self.stats.task_failures += 1
        if self.metrics:
            self.metrics.task_failed()
        if attempt + 1 >= MAX_ATTEMPTS:
            raise FatalError(f"range {task.topic}[{task.partition}] {task.start}..{task.end} failed "
                             f"{MAX_ATTEMPTS} times; last error: {type(exc).__name__}: {exc}")
        log.warning("range %s[%d] %s..%s failed (%s: %s); re-planning it", task.topic,
                    task.partition, task.start, task.end, type(exc).__name__, exc)
        st = self.parts.get(task.tp)
        if st is not None:
            self._submit(task.tp, st, task.start, task.end, attempt + 1)

    def _accept(self, task: RangeTask, st: PartitionState, r: RangeResult) -> None:
        if r.high is not None:
            st.high = max(st.high or 0, r.high)
        if task.end is None:
            st.tail_busy = False
            st.planned = r.next_offset
        elif r.next_offset < task.end:  # the read stopped short: plan the rest, same bounds
            self._submit(task.tp, st, r.next_offset, task.end)
        st.done[task.start] = r
        if self.metrics:
            self.metrics.task_seconds(r.seconds)

    def _merge_ready(self) -> None:
        now = _now_ms()
        for tp, st in self.parts.items():
            while st.merged in st.done:
                r = st.done.pop(st.merged)
                self._merge(tp, st, r, now)
                st.merged = r.next_offset
                st.caught_up = r.eof
            if self.metrics and st.high is not None and st.merged >= 0:
                self.metrics.lag(tp[0], tp[1], max(0, st.high - st.merged))

    def _merge(self, tp: TP, st: PartitionState, r: RangeResult, now: int) -> None:
        p = r.partial
        self.stats.records_in += p.records_in
        self.stats.skipped += p.skipped
        if self.metrics:
            self.metrics.records_in(tp[0], p.records_in, p.bytes_in)
            if p.skipped:
                self.metrics.skipped("tombstone", p.skipped)
        for f in p.failures:
            self._failed(tp, f)
        if self.store is not None:
            late = self.store.merge(tp, p.partials, p.first_offsets, p.pane_counts)
            self._count_late(late, replayed=r.next_offset <= st.replay_until)
        else:
            for key, value in p.outputs:
                self.sink.produce(self.pipeline.sink_spec.topic, key, value, self._headers)  # type: ignore[union-attr]
            self._count_out(len(p.outputs))
        self.watermarks.observe(tp, p.max_ts, now, caught_up=r.eof)

    def _count_late(self, n: int, replayed: bool) -> None:
        if not n:
            return
        if replayed:  # windows emitted before a restart: not late, just not emitted twice
            self.stats.skipped += n
            if self.metrics:
                self.metrics.skipped("replayed", n)
        else:
            self.stats.late += n
            if self.metrics:
                self.metrics.late(n)

    def _failed(self, tp: TP, f: Failure) -> None:
        """Count, log and (when a dead-letter topic is set) write a failed record there."""
        self.stats.failed += 1
        if self.dead_letter_topic is not None:
            self.sink.produce(self.dead_letter_topic, f.key, f.value, f.dead_letter_headers(*tp))
        if self.metrics:
            self.metrics.failed(f.reason)
        if self.stats.failed <= 100 or self.stats.failed % 1000 == 0:
            log.warning("record %s[%d]@%d failed (%s): %s: %s (%d failed so far)", tp[0], tp[1],
                        f.offset, f.reason, f.error_type, f.message, self.stats.failed)

    def _count_out(self, n: int) -> None:
        self.stats.records_out += n
        if self.metrics and n:
            self.metrics.records_out(self.pipeline.sink_spec.topic, n)  # type: ignore[union-attr]

    # -- emit and commit ------------------------------------------------------------------
    def emit(self, watermark: int | None = None) -> list[WindowResult]:
        """Emit the windows the watermark (default: the current one) closes."""
        if self.store is None:
            return []
        wm = self.watermarks.current(_now_ms()) if watermark is None else watermark
        results = self.store.advance(wm)
        sink = self.pipeline.sink_spec
        for w in results:
            record = {self.pipeline.key_field: w.key, "window_start": w.start,
                      "window_end": w.end, **w.values}
            key = f"{w.key}@{w.start}".encode()
            try:
                value = sink.codec.encode(record)  # type: ignore[union-attr]
            except EncodeError as exc:
                failure = Failure(w.start, "encode_failed", "EncodeError", str(exc)[:500], key,
                                  repr(record).encode())
                self._failed((sink.topic, -1), failure)  # type: ignore[union-attr]
                continue
            self.sink.produce(sink.topic, key, value, self._headers)  # type: ignore[union-attr]
        self.stats.windows += len(results)
        if self.metrics and results:
            self.metrics.windows(len(results))
        self._count_out(len(results))
        return results

    def commit(self) -> None:
        """Flush outputs, save checkpoints, then commit offsets of still-assigned partitions."""
        t0 = time.monotonic()
        entries: dict[TP, Checkpoint] = {}
        through = self.store.emitted_through if self.store is not None else NEVER
        assigned = set(self.session.assigned())
        for tp, st in self.parts.items():
            if st.merged < 0 or tp not in assigned:
                continue
            first_open = self.store.first_open_offset(tp) if self.store is not None else None
            offset = st.merged if first_open is None else min(first_open, st.merged)
            entries[tp] = Checkpoint(offset, max(st.merged, st.replay_until), through)
        changed = {tp: cp for tp, cp in entries.items() if self._saved.get(tp) != cp}
        self._last_commit = time.monotonic()
        if not changed:
            return
        self.sink.flush()
        self.checkpoints.save(changed)
        self.session.commit({tp: cp.offset for tp, cp in changed.items()})
        self._saved.update(changed)
        self.stats.commits += 1
        if self.metrics:
            self.metrics.committed(time.monotonic() - t0)

    # -- the loop -------------------------------------------------------------------------
    def step(self) -> None:
        """One turn: serve the group, plan, collect, merge, emit, maybe commit."""
        self._serve_group(0.0 if self.inflight else 0.05)
        self._plan()
        if self.inflight:
            self._collect(0.05)
        self._merge_ready()
        self.emit()
        if time.monotonic() - self._last_commit >= self.commit_interval_s:
            self.commit()

    def caught_up(self) -> bool:
        """True when every assigned partition has been merged up to the end its last read saw."""
        return bool(self.parts) and all(st.caught_up and not st.done and st.merged >= (st.high or 0)
                                        for st in self.parts.values())

    def lag(self) -> int:
        return sum(max(0, (st.high or 0) - max(st.merged, 0)) for st in self.parts.values())

    def run(self, until: Callable[["Driver"], bool] = lambda d: False,
            should_stop: Callable[[], bool] = lambda: False, drain: bool = False,
            on_step: Callable[["Driver"], None] | None = None) -> DriverStats:
        """Loop until `until(self)` or `should_stop()`; with `drain`, close every window at the end.

        Drain is for bounded input (the demo, the benchmark): it treats the input as ended.
        """
        while not should_stop() and not until(self):
            self.step()
            if on_step is not None:
                on_step(self)
        self._wait_inflight()
        self._merge_ready()
        self.emit(FOREVER if drain else None)
        self.commit()
        self.sink.flush()
        return self.stats

    def _wait_inflight(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.inflight and time.monotonic() < deadline:
            self._collect(0.1)


def _now_ms() -> int:
    return int(time.time() * 1000)
