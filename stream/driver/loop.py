"""The driver loop: carries out `DriverCore`'s instructions against Kafka and Dask.

Every decision (what to read next, in which order to merge, when windows close, what a
failed or stuck task means, what an epoch commits) is taken by the I/O-free core in
`stream.driver.core`. This module serves the consumer group, submits range tasks to the
executor and collects them, produces records, and commits epochs, feeding each outcome
back to the core as an event. Only offsets go to workers and only small results come back.

`TaskLoop` is the part a bounded run (`stream replay`) shares: tasks and records.
`Driver` adds the consumer group, the changelog restore and the epoch commits.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from typing import Any, Callable

from stream import faults
from stream.driver.core import (
    Assigned,
    BeginCommit,
    Cancel,
    Commit,
    DriverCore,
    DriverStats,
    EndEpoch,
    Event,
    Finish,
    Instruction,
    Mark,
    PartitionState,
    Produce,
    RangeDone,
    RangeFailed,
    Revoked,
    Submit,
    Tick,
    Topics,
)
from stream.errors import FatalError
from stream.pipeline import Pipeline
from stream.protocols import Changelog, Executor, Reader, Session, Sink
from stream.records import TP, Limits
from stream.status import driver_status
from stream.worker.task import RangeTask, run_range

log = logging.getLogger(__name__)
__all__ = ["Driver", "DriverStats", "PartitionState", "TaskLoop", "Topics"]


class TaskLoop:
    """Carries out a core's task and record instructions and feeds the tasks' outcomes back.

    `reader()` gives the reader each range task reads with; `sink` takes the records.
    """

    def __init__(self, core: DriverCore, executor: Executor, sink: Sink, reader: Callable[[], Reader],
                 limits: Limits) -> None:
        self.core, self.executor, self.sink = core, executor, sink
        self.reader, self.limits = reader, limits
        self.futures: dict[int, Future[Any]] = {}  # task id -> the executor's future

    @property
    def stats(self) -> DriverStats:
        return self.core.stats

    def handle(self, event: Event) -> None:
        """Give the core one event and carry out its instructions."""
        self.carry_out(self.core.handle(event, _now_ms()))

    def carry_out(self, instructions: list[Instruction]) -> None:
        for ins in instructions:
            self._ACTIONS[type(ins)](self, ins)

    def _submit(self, s: Submit) -> None:
        task = RangeTask(s.tp[0], s.tp[1], s.planned.start, s.planned.end, self.core.range_records,
                         self.reader(), self.core.pipeline_for(s.tp[0]), self.limits, carry=s.planned.carry,
                         marks=s.marks)
        self.futures[s.task_id] = self.executor.submit(run_range, task, pin=s.pin)

    def _cancel(self, c: Cancel) -> None:
        fut = self.futures.pop(c.task_id, None)
        cancel = getattr(self.executor, "cancel", None)
        if fut is not None and cancel is not None:
            cancel(fut)

    def _produce(self, p: Produce) -> None:
        self.sink.produce_many(p.topic, p.records, p.headers, p.partition)

    def _mark(self, m: Mark) -> None:
        faults.point(m.point, before=self.sink.flush)

    def _begin_commit(self, b: BeginCommit) -> None:
        raise AssertionError("this loop does not commit")

    def _commit(self, c: Commit) -> None:
        raise AssertionError("this loop does not commit")

    _ACTIONS: dict[type, Callable[["TaskLoop", Any], None]] = {
        Submit: _submit, Cancel: _cancel, Produce: _produce, Mark: _mark,
        BeginCommit: lambda self, b: self._begin_commit(b), Commit: lambda self, c: self._commit(c)}

    def collect(self, timeout: float) -> None:
        """Wait up to `timeout` s for tasks; report each finished one to the core."""
        by_future = {fut: task_id for task_id, fut in self.futures.items()}
        for fut in self.executor.wait(list(by_future), timeout):
            outcome = self.executor.outcome(fut)
            if outcome is None:
                continue  # went back to pending (its worker left): still in flight
            task_id = by_future[fut]
            self.futures.pop(task_id, None)
            result, exc = outcome
            self.handle(RangeFailed(task_id, exc) if exc is not None else RangeDone(task_id, result))

    def wait_inflight(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.futures and time.monotonic() < deadline:
            self.collect(0.1)


class Driver(TaskLoop):
    """Runs one pipeline over the partitions a session assigns, on an executor."""

    def __init__(self, pipeline: Pipeline, session: Session, sink: Sink, executor: Executor,
                 changelog: Changelog, topics: Topics, *, range_records: int = 50_000,
                 max_inflight: int = 6, commit_interval_s: float = 1.0,
                 limits: Limits = Limits(), metrics: Any = None,
                 app_id: str | None = None, transactional_id: str | None = None,
                 replica: int = 0, result_commit_s: float = 0.1,
                 advance_after_ms: int | None = None, task_timeout_s: float = 60.0,
                 input_partitions: dict[str, int] | None = None, repartition_partitions: int = 0) -> None:
        core = DriverCore(pipeline, topics, range_records=range_records, max_inflight=max_inflight,
                          input_partitions=input_partitions, repartition_partitions=repartition_partitions,
                          commit_interval_s=commit_interval_s, result_commit_s=result_commit_s,
                          advance_after_ms=advance_after_ms, task_timeout_s=task_timeout_s,
                          app_id=app_id, transactional_id=transactional_id, replica=replica,
                          metrics=metrics, transactional=getattr(sink, "transactional", False))
        super().__init__(core, executor, sink, session.reader, limits)
        self.pipeline, self.session, self.changelog, self.metrics = pipeline, session, changelog, metrics
        self.failed = False            # set when the loop died: no further commits
        self._commit_started = 0.0
        session.on_revoke = self._on_revoked
        if metrics is not None:
            metrics.probes.watermark_ms = core.watermark
            metrics.probes.open_windows = core.open_windows
            metrics.probes.state_bytes = core.state_bytes
            metrics.probes.partitions = lambda: len(core.parts)
            metrics.probes.ready = lambda: bool(core.parts) and not self.failed
            workers = getattr(executor, "connected_workers", lambda: 0)
            metrics.probes.status = lambda: driver_status(core, workers())
            plan = pipeline.validate()
            metrics.topics(list(plan.source.topics), plan.sink.topic)

    # views the tools and tests use
    @property
    def parts(self) -> dict[TP, PartitionState]:
        return self.core.parts

    def outstanding(self) -> int:
        return self.core.outstanding()

    def caught_up(self) -> bool:
        return self.core.caught_up()

    def lag(self) -> int:
        return self.core.lag()

    def watermark(self) -> int:
        return self.core.watermark()

    def open_windows(self) -> int:
        return self.core.open_windows()

    def state_bytes(self) -> int:
        return self.core.state_bytes()

    # -- group membership -----------------------------------------------------------------
    def _on_assigned(self, tps: list[TP]) -> None:
        """End the open epoch (assignment renumbers epochs), read the committed offsets and
        the changelog of the new partitions, and let the core restore them."""
        if not self.failed:
            self.handle(EndEpoch())
        cl = self.core.topics.changelog
        state_tps = [] if cl is None else [(cl, p) for p in sorted({tp[1] for tp in tps})]
        committed = self.session.committed(tps + state_tps)
        logs = self.changelog.load(sorted({tp[1] for tp in tps}))
        self.handle(Assigned(tps, committed, logs))

    def _on_revoked(self, tps: list[TP]) -> None:
        """Commit the open epoch while the partitions are still ours (unless the loop died:
        after a fatal error nothing more is committed); the core drops their state."""
        self.handle(Revoked(tps, commit=not self.failed))

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

    # -- commits --------------------------------------------------------------------------
    def _begin_commit(self, b: BeginCommit) -> None:
        self._commit_started = time.monotonic()
        missing = set(b.partitions) - set(self.session.assigned())
        if missing:
            self.sink.abort()
            raise FatalError(f"partitions {sorted(missing)} are no longer assigned to this driver; "
                             f"epoch {b.epoch} was aborted")

    def _commit(self, c: Commit) -> None:
        self.sink.commit_epoch(c.offsets, self.session)
        self.stats.commits += 1
        if self.stats.commits == 1:
            log.info("first epoch committed since start")
        if self.metrics:
            self.metrics.committed(time.monotonic() - self._commit_started,
                                   getattr(self.sink, "transactional", False))
            self.metrics.results_acknowledged(c.closed)

    def commit(self) -> None:
        """End the epoch now (it commits only if it holds outputs, state or moved offsets)."""
        self.handle(EndEpoch())

    # -- the loop -------------------------------------------------------------------------
    def step(self) -> None:
        """One turn: serve the group, collect finished tasks, then let time pass (merge, emit,
        plan, maybe commit)."""
        if self.metrics:
            self.metrics.alive()
        self._serve_group(0.0 if self.futures else 0.05)
        if self.futures:
            self.collect(0.05)
        self.handle(Tick())

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
            self.wait_inflight()
            self.handle(Finish(drain))
        except BaseException:
            self.failed = True
            raise
        return self.stats


def _now_ms() -> int:
    return int(time.time() * 1000)
