"""The driver's decision core alone, under random schedules: events in, instructions out.

No loop, no executor, no sink: this harness plays the world around `DriverCore`. It keeps
the tasks the core submits and, as hypothesis steers it, finishes them in any order, fails
them, reads them short, lets the clock jump past the task timeout (the core gives the task
up and submits it again; the old read may still report back, and is ignored), revokes and
re-assigns a partition, and crashes the driver: the open epoch's outputs are lost, its
changelog entries stay readable as an aborted transaction's would, and a fresh core restores
from what was committed. At the end the committed output equals the sequential reference,
every window once, and the late topic holds exactly the late records, once each.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from test_schedules import PARTITIONS, SPECS, ShortReader, assert_sequential, payments_topic, pipeline, records_st

from stream.codecs.avro import AvroCodec
from stream.driver.core import (
    Assigned,
    BeginCommit,
    Cancel,
    Commit,
    DriverCore,
    EndEpoch,
    Finish,
    Mark,
    Produce,
    RangeDone,
    RangeFailed,
    Revoked,
    Submit,
    Tick,
    Topics,
)
from stream.records import RawMessage
from stream.sources.memory import MemoryTopic
from stream.worker.task import RangeTask, run_range

TOPICS = Topics("core.changelog", "core.dlq", "core.late")
TIMEOUT_MS = 1_000


class World:
    """Kafka and Dask as the core sees them: committed offsets, a changelog, output topics
    that show only what committed, and tasks that finish when the schedule says so."""

    def __init__(self, p, topic: MemoryTopic, rng: random.Random, range_records: int, inflight: int):
        self.p, self.topic, self.rng = p, topic, rng
        self.range_records, self.inflight = range_records, inflight
        self.reader = ShortReader(topic.reader(), rng)
        self.tps = [("in", i) for i in range(PARTITIONS)]
        self.offsets: dict = {}                     # the group's committed offsets
        self.seen_offsets: list[dict] = [{}]        # as they were after each commit
        self.changelog: dict[int, list[RawMessage]] = defaultdict(list)
        self.out: dict[str, list] = defaultdict(list)  # committed records per topic
        self.now = 1_800_000_000_000
        self.failures: dict = defaultdict(int)
        self.start()

    def start(self, stale: bool = False) -> None:
        """A fresh driver: restores every partition from what was committed. With `stale`,
        it reads the group's offsets as they were some commits ago (the embedded broker hides
        committed offsets while another transaction is open on a shared partition)."""
        self.core = DriverCore(self.p, TOPICS, range_records=self.range_records,
                               max_inflight=self.inflight, commit_interval_s=0.0,
                               task_timeout_s=TIMEOUT_MS / 1000, **getattr(self, "core_kw", {}))
        self.tasks: dict[int, Submit] = {}  # submitted, not reported back (expired ones too)
        self.open: list[Produce] = []
        self.assigned = set(self.tps)
        self.assign(self.tps, self.rng.choice(self.seen_offsets) if stale else None)

    def assign(self, tps, offsets: dict | None = None) -> None:
        offsets = dict(self.offsets if offsets is None else offsets)
        self.send(Assigned(tps, offsets, {p: list(log) for p, log in self.changelog.items()}))

    def send(self, event) -> None:
        self.now += self.rng.randint(0, 20)
        for ins in self.core.handle(event, self.now):
            if isinstance(ins, Submit):
                self.tasks[ins.task_id] = ins
            elif isinstance(ins, Cancel):
                pass  # a cancelled read may still report back: the core must ignore it
            elif isinstance(ins, Produce):
                self.open.append(ins)
            elif isinstance(ins, BeginCommit):
                assert set(ins.partitions) <= self.assigned
            elif isinstance(ins, Commit):
                self.publish(self.open, committed=True)
                self.open = []
                self.offsets.update(ins.offsets)
                self.seen_offsets.append(dict(self.offsets))
            else:
                assert isinstance(ins, Mark)

    def publish(self, produced: list[Produce], committed: bool) -> None:
        for pr in produced:
            if pr.topic == TOPICS.changelog:  # read_uncommitted: aborted entries stay visible
                log = self.changelog[pr.partition]
                log.extend(RawMessage(len(log) + i, k, v, 0, pr.headers) for i, (k, v) in enumerate(pr.records))
            elif committed:
                self.out[pr.topic].extend((k, v, pr.headers) for k, v in pr.records)

    def finish_one(self, fail_p: float) -> None:
        task_id = self.rng.choice(list(self.tasks))
        s = self.tasks.pop(task_id)
        key = (s.tp, s.planned.start, s.planned.end)
        if self.rng.random() < fail_p and self.failures[key] < 3:
            self.failures[key] += 1
            self.send(RangeFailed(task_id, ConnectionError("injected")))
            return
        task = RangeTask(s.tp[0], s.tp[1], s.planned.start, s.planned.end, self.range_records,
                         self.reader, self.p, carry=s.planned.carry, tail_wait_s=0.0)
        self.send(RangeDone(task_id, run_range(task)))

    def crash(self, stale: bool = False) -> None:
        self.publish(self.open, committed=False)
        self.start(stale)

    def revoke_and_reassign(self, tp) -> None:
        self.send(Revoked([tp]))
        self.send(EndEpoch())
        self.assign([tp])


def run(kind, raw, seed, range_records, inflight, steps, fail_p, stalls, crashes, revokes, stale=0):
    p = pipeline(*SPECS[kind])
    topic, parts = payments_topic(p, raw)
    rng = random.Random(seed)
    w = World(p, topic, rng, range_records, inflight)
    faults = ["stall"] * stalls + ["crash"] * crashes + ["revoke"] * revokes + ["stale"] * stale
    for _ in range(steps):
        roll = rng.random()
        if faults and roll < 0.05:
            fault = faults.pop(rng.randrange(len(faults)))
            if fault == "stall":  # every read in flight outlives the task timeout
                w.now += TIMEOUT_MS + 1
            elif fault in ("crash", "stale"):
                w.crash(stale=fault == "stale")
            else:
                w.revoke_and_reassign(rng.choice(w.tps))
        elif w.tasks and roll < 0.7:
            w.finish_one(fail_p)
        else:
            w.send(Tick())
    while not w.core.caught_up():  # then the schedule settles
        if w.tasks:
            w.finish_one(0.0)
        w.send(Tick())
    while w.tasks:  # the reads in flight come back; without ticks none starts
        w.finish_one(0.0)
    w.send(Finish(drain=True))
    for part in w.core.parts.values():
        part.store.check_invariants()
    # offsets read stale bring windows back that a later epoch had emitted: the same values
    assert_sequential(kind, parts, w.out["out"], w.out["core.late"], repeats=stale > 0)


schedule = dict(seed=st.integers(0, 2**32), range_records=st.integers(1, 40), inflight=st.integers(1, 8),
                steps=st.integers(0, 300), fail_p=st.sampled_from([0.0, 0.1, 0.3]),
                stalls=st.integers(0, 3), crashes=st.integers(0, 2), revokes=st.integers(0, 2))
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(kind=st.sampled_from(["tumbling", "hopping"]), raw=records_st(40_000), **schedule)
def test_the_core_alone_gives_the_sequential_windows_under_any_schedule(**kw):
    run(**kw)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=records_st(8_000), **schedule)
def test_the_core_alone_gives_the_sequential_sessions_under_any_schedule(**kw):
    run("session", **kw)


@SETTINGS
@given(kind=st.sampled_from(["tumbling", "session"]), raw=records_st(8_000), stale=st.integers(1, 2),
       **schedule)
def test_a_restart_that_reads_the_groups_offsets_stale_never_counts_a_record_twice(**kw):
    """State and offset restored from one epoch: a window may come again, never different."""
    run(**kw)


@pytest.mark.parametrize("kw", [
    # a meta entry named an epoch of another partition's line: a record counted twice
    dict(raw=[(1, 0, 1), (1, 0, 1), (1, 0, 1), (3, 0, 1)], seed=2_260_752_215, range_records=7, inflight=3,
         steps=86, fail_p=0.3, stalls=2, crashes=2, revokes=2),
    # the epoch restored had merged nothing yet (offset BEGINNING): resumed at an older offset, a record lost
    dict(raw=[(0, 0, 1)], seed=465602059, range_records=1, inflight=2, steps=139, fail_p=0.0, stalls=0,
         crashes=2, revokes=2),
])
def test_stale_restarts_found_by_the_property_test(kw):
    run(kind="tumbling", stale=2, **kw)


def test_an_epoch_a_crash_left_open_is_counted_aborted_once_at_the_next_restore():
    """init_transactions aborts what a dead driver left open, silently: the epoch's first
    output marks it begun in the changelog, so the next restore finds it and counts it."""
    class Aborts:
        n = 0

        def aborted(self):
            self.n += 1

        def __getattr__(self, name):  # every other metric: ignored
            return lambda *a, **k: None

    p = pipeline(*SPECS["tumbling"])
    topic, _ = payments_topic(p, [(0, 1_000, 1), (0, 20_000, 2)])  # the second closes the first's window
    metrics = Aborts()
    World.core_kw = {"transactional": True, "metrics": metrics}
    try:
        w = World(p, topic, random.Random(3), 10, 4)
        while not any(pr.topic == "out" for pr in w.open):  # a window result, not committed yet
            if w.tasks:
                w.finish_one(0.0)
            else:
                w.send(Tick())
            assert not w.out["out"], "committed before the test could crash it"
        w.crash()
        assert metrics.n == 1
        committed = len(w.seen_offsets)
        while len(w.seen_offsets) == committed:  # the restarted driver commits an epoch
            w.finish_one(0.0) if w.tasks else w.send(Tick())
        w.crash()  # the aborted epoch is still in the log, below the restored one: not again
        assert metrics.n == 1
    finally:
        del World.core_kw


def test_a_read_that_reports_back_after_its_task_timeout_is_ignored():
    p = pipeline(*SPECS["tumbling"])
    topic, _ = payments_topic(p, [(0, 1_000, 1)])
    w = World(p, topic, random.Random(0), 10, 4)
    first = min(t for t, s in w.tasks.items() if s.tp == ("in", 0))
    old = w.tasks[first]
    w.now += TIMEOUT_MS + 1
    w.send(Tick())  # given up: cancelled, submitted again
    assert first not in w.core.inflight
    again = [t for t, s in w.tasks.items() if s.tp == ("in", 0) and t != first]
    assert again and w.tasks[again[0]].planned.attempt == 1
    task = RangeTask("in", 0, old.planned.start, old.planned.end, 10, topic.reader(), p, tail_wait_s=0.0)
    w.send(RangeDone(first, run_range(task)))  # the old read comes back late
    assert w.core.stats.records_in == 0


def test_a_bounded_run_as_replay_runs_it_dead_letters_a_failing_result_and_retries_like_the_driver():
    """Replay's configuration (no changelog, no epoch headers, a window filter, an output
    topic of its own): an operator after the window that fails for one key dead-letters that
    result; a range that fails seven times in a row is still read (the eighth read works)."""
    from helpers import PAYMENT
    from test_schedules import OUT

    from operators import Count, Sum
    from stream.pipeline import Pipeline
    from stream.windows.specs import Tumbling

    def boom(r):
        if r["user_id"] == "a":
            raise ValueError("no a")
        return r
    p = (Pipeline("bounded").source("in", schema=PAYMENT, timestamp="ts").key_by("user_id")
         .window(Tumbling(5_000), aggregate={"n": Count(), "total": Sum("amount")}).map(boom)
         .sink("out", schema=OUT))
    topic, _ = payments_topic(p, [(0, 1_000, 1), (1, 2_000, 1), (0, 6_000, 1), (1, 12_000, 1)])
    core = DriverCore(p, Topics(None, "replay.dlq"), range_records=100, stamp=False, output="replay.out",
                      keep=lambda w: w.end <= 10_000)
    out = core.handle(Assigned([("in", 0), ("in", 1)], {("in", 0): 0, ("in", 1): 0}, {},
                               stops={("in", 0): 2, ("in", 1): 2}), 1)
    produced: list[Produce] = []
    attempts = 0
    while not core.finished():
        for ins in out:
            if isinstance(ins, Produce):
                produced.append(ins)
            assert not isinstance(ins, (BeginCommit, Commit)), "a bounded run commits nothing"
        subs = [ins for ins in out if isinstance(ins, Submit)]
        out = []
        for s in subs:
            if s.tp == ("in", 0) and attempts < 7:
                attempts += 1
                out += core.handle(RangeFailed(s.task_id, ConnectionError("flaky")), 2)
            else:
                task = RangeTask(s.tp[0], s.tp[1], s.planned.start, s.planned.end, 100, topic.reader(), p,
                                 carry=s.planned.carry, tail_wait_s=0.0)
                out += core.handle(RangeDone(s.task_id, run_range(task)), 2)
        out += core.handle(Tick(), 3)
    produced += [ins for ins in out + core.handle(Finish(drain=True), 4) if isinstance(ins, Produce)]
    assert attempts == 7 and core.stats.task_failures == 7
    assert all(pr.headers == () for pr in produced if pr.topic == "replay.out")
    written = [AvroCodec(OUT).decode(v) for pr in produced if pr.topic == "replay.out" for _, v in pr.records]
    assert [(r["user_id"], r["window_start"], r["n"]) for r in written] == [("b", 0, 1)]
    dead = [dict(pr.headers) for pr in produced if pr.topic == "replay.dlq"]
    assert [d["dlq.reason"] for d in dead] == [b"operator_error", b"operator_error"]
    assert core.stats.outside == 1  # b's window [10 s, 15 s) is cut by the range's end
