"""Faults against the broker under test (embedded or Apache Kafka), each ending with the
exactly-once verifier; on Apache Kafka it also reads the output read_committed (faultkit.STRICT).

Every test runs `stream run` as a user would (supervised, its own process), feeds input at a
steady pace while faults happen, appends one sentinel per partition that closes every window,
and then checks every committed (key, window) against a recomputation: none missing, none
wrong, none twice. Output of aborted epochs is counted, never accepted.
"""

import re
import time
from datetime import datetime

import pytest
from faultkit import STRICT, Feeder, StreamProcess, verify, wait_for, wait_verified

from stream.app.admin import ensure_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def topics(kafka, topic_name):
    src, out, app = topic_name("in"), topic_name("out"), topic_name("app")
    ensure_topic(kafka.client(), src, 4)
    ensure_topic(kafka.client(), out, 2)
    return src, out, app


def recovery_times(log: str) -> list[float]:
    """Seconds from each injected kill until the restarted driver had restored its state and
    resumed (its partitions assigned)."""
    kills = [float(t) for t in re.findall(r"SIGKILL at \w+ at ([\d.]+)", log)]
    stamp = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO stream.driver.core: assigned"
    resumed = [datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp()
               for t in re.findall(stamp, log, re.M)]
    return [round(min(r for r in resumed if r > k) - k, 1) for k in kills if any(r > k for r in resumed)]


# row: the record path; columnar: the columnar path; rekey: windows by merchant over an input
# partitioned by user, through a repartition topic (tests/support/fault_app.py)
PATHS = pytest.mark.parametrize("path", ["row", "columnar", "rekey"])


@PATHS
def test_driver_killed_at_every_transaction_step_loses_and_repeats_nothing(kafka, topic_name, tmp_path, path):
    src, out, app = topics(kafka, topic_name)
    steps = ["after_produce", "changelog", "after_offsets", "before_commit", "after_commit"]
    # the first kill comes in the first epoch that wrote window results (~16 s in), so an
    # aborted epoch holds results the verifier must set aside; the others a few seconds
    # after each restart
    faults = [steps[0]] + [f"{s}:15" for s in steps[1:]]
    feeder = Feeder(kafka, src, 40_000, rate=200)
    proc = StreamProcess(kafka, app, src, out, tmp_path, faults=faults, path=path)
    feeder.start()
    try:
        wait_for(lambda: not proc.faults_left(), 200, "every fault to fire")
        time.sleep(3)
        feeder.finish()
        feeder.join(60)
        assert feeder.error is None
        verdict = wait_verified(kafka, app, out, feeder.records, feeder=feeder, procs=[proc],
                                last=path == "row", rekey=path == "rekey")
    finally:
        code = proc.stop()
    log = proc.log()
    # nothing more written at the stop. Polled for a while: once (loaded run 2 of 2026-12-03)
    # one epoch's windows, verified before the stop, read as missing right after it on the
    # embedded broker; cause not found. A real loss or repeat stays and fails here.
    after = wait_verified(kafka, app, out, feeder.records, timeout=30, feeder=feeder, settle_s=0,
                          last=path == "row", rekey=path == "rekey")
    assert after.problems == [], after.problems[:10]
    assert proc.faults_left() == [], log[-4000:]
    assert verdict.problems == [], (verdict.problems[:10], log[-4000:])
    assert code == 0, log[-4000:]
    times = recovery_times(log)
    assert len(times) == len(steps), log[-4000:]
    assert verdict.aborted > 0  # aborted epochs' results were there, and were told apart
    print(f"\nkilled at {steps}; recovery seconds {times}; {verdict}")


def test_second_driver_with_the_same_transactional_id_fences_the_first(kafka, topic_name, tmp_path):
    src, out, app = topics(kafka, topic_name)
    feeder = Feeder(kafka, src, 6_000, rate=300)
    first = StreamProcess(kafka, app, src, out, tmp_path, supervise=False, name="first")
    feeder.start()
    second = None
    try:
        wait_for(lambda: "first epoch committed" in first.log(), 60, "the first driver to commit")
        second = StreamProcess(kafka, app, src, out, tmp_path, supervise=False, name="second",
                               extra=["--takeover"])  # as a zombie's successor on another host
        t0 = time.monotonic()
        code = first.proc.wait(90)
        fenced_after = time.monotonic() - t0
        feeder.join(120)
        assert feeder.error is None
        verdict = wait_verified(kafka, app, out, feeder.records, feeder=feeder, procs=[second])
    finally:
        first.stop()
        if second is not None:
            second.stop()
    errors = [line for line in first.log().splitlines() if line.startswith("error:")]
    assert code == 3 and len(errors) == 1 and "fenced" in errors[0], first.log()[-3000:]
    assert verdict.problems == [], (verdict.problems[:10], second.log()[-3000:])
    print(f"\nfirst driver exited {fenced_after:.1f} s after the second started: {errors[0]}; {verdict}")


@PATHS
def test_dask_workers_killed_mid_range_repeatedly(kafka, topic_name, tmp_path, path):
    import psutil

    src, out, app = topics(kafka, topic_name)
    feeder = Feeder(kafka, src, 8_000, rate=250)
    proc = StreamProcess(kafka, app, src, out, tmp_path, local=False, extra=["--workers", "2"], path=path)
    feeder.start()
    killed = []
    try:
        wait_for(lambda: "first epoch committed" in proc.log(), 90, "the driver to commit")
        for _ in range(3):
            time.sleep(4)
            workers = [p for p in psutil.Process(proc.child_pid()).children(recursive=True)
                       if "spawn_main" in " ".join(p.cmdline())]
            assert workers, "no Dask worker process found"
            workers[0].kill()
            killed.append(workers[0].pid)
        feeder.join(120)
        assert feeder.error is None
        verdict = wait_verified(kafka, app, out, feeder.records, feeder=feeder, procs=[proc],
                                last=path == "row", rekey=path == "rekey")
    finally:
        code = proc.stop()
    log = proc.log()
    assert len(killed) == 3 and "restarting in" not in log, log[-3000:]
    assert verdict.problems == [], (verdict.problems[:10], log[-3000:])
    assert code == 0, log[-3000:]
    print(f"\nkilled Dask workers {killed}; {verdict}")


def verified_through_a_broker_outage(kafka, topic_name, tmp_path, outage):
    """Feed a supervised run, let it commit, call `outage()` (it returns once the broker serves
    again), then verify every window and a clean stop. Returns (seconds from the outage's start
    to the verdict, driver restarts, the verdict)."""
    src, out, app = topics(kafka, topic_name)
    feeder = Feeder(kafka, src, 8_000, rate=250)
    proc = StreamProcess(kafka, app, src, out, tmp_path)
    feeder.start()
    try:
        wait_for(lambda: "first epoch committed" in proc.log(), 90, "the driver to commit")
        time.sleep(3)
        began = time.monotonic()
        outage()
        feeder.join(180)
        assert feeder.error is None
        verdict = wait_verified(kafka, app, out, feeder.records, feeder=feeder, procs=[proc], timeout=240)
        recovered = time.monotonic() - began
    finally:
        code = proc.stop()
    log = proc.log()
    assert verdict.problems == [], (verdict.problems[:10], log[-3000:])
    assert code == 0, log[-3000:]
    return recovered, log.count("restarting in"), verdict


def test_broker_unreachable_for_ten_seconds(tmp_path, topic_name):
    from conftest import broker_class
    from faultkit import TcpProxy

    from stream.app.broker import free_port
    from stream.config import KafkaConfig

    proxy_port = free_port()
    broker = broker_class()(advertised_port=proxy_port)
    proxy = TcpProxy(proxy_port, broker.port)
    broker.start()

    def cut():
        proxy.cut()
        time.sleep(10)
        proxy.restore()

    try:
        recovered, restarts, verdict = verified_through_a_broker_outage(
            KafkaConfig(broker.bootstrap), topic_name, tmp_path, cut)
    finally:
        proxy.close()
        broker.stop()
    print(f"\nbroker cut for 10 s; every window verified {recovered:.0f} s after the cut; "
          f"driver restarts: {restarts}; {verdict}")


@pytest.mark.skipif(not STRICT, reason="the embedded broker keeps nothing across a restart")
def test_apache_kafka_broker_killed_and_restarted_loses_nothing(tmp_path, topic_name):
    """Apache Kafka keeps its log on disk: after a SIGKILL of the broker and a restart on the
    same log directory and port, the pipeline resumes, and every window is there once."""
    import os
    import signal

    from stream.app.kafka_broker import KafkaBroker
    from stream.config import KafkaConfig

    broker = KafkaBroker(data_dir=tmp_path / "kafka").start()
    back_in = []

    def kill_and_restart():
        os.killpg(broker.process.pid, signal.SIGKILL)
        broker.process.wait()
        killed_at = time.monotonic()
        time.sleep(2)
        broker.start()
        back_in.append(time.monotonic() - killed_at)

    try:
        recovered, restarts, verdict = verified_through_a_broker_outage(
            KafkaConfig(broker.bootstrap), topic_name, tmp_path, kill_and_restart)
    finally:
        broker.stop()
    print(f"\nbroker SIGKILLed, answering again {back_in[0]:.0f} s later; every window verified "
          f"{recovered:.0f} s after the kill; driver restarts: {restarts}; {verdict}")


def assignments(proc):
    """(partitions, window entries restored) of each 'assigned' line of a process's log."""
    lines = [line for line in proc.log().splitlines() if "stream.driver.core: assigned" in line]
    return [(line.partition("assigned [")[2].partition("]:")[0].count("', "),
             int(re.search(r"(\d+) window entries restored", line).group(1))) for line in lines]


def owned(proc):
    """Partitions the latest 'assigned' line of a process names (its current share)."""
    shares = assignments(proc)
    return shares[-1][0] if shares else 0


@pytest.mark.parametrize("path", ["row", "rekey"])
def test_replicas_split_partitions_and_a_killed_one_is_taken_over(kafka, topic_name, tmp_path, path):
    # a re-keyed pipeline's replicas share the repartition topic's partitions too
    every = 8 if path == "rekey" else 4
    src, out, app = topics(kafka, topic_name)
    feeder = Feeder(kafka, src, 40_000, rate=250)
    first = StreamProcess(kafka, app, src, out, tmp_path, replica=0, name="first", path=path)
    feeder.start()
    second = again = back = None
    try:
        wait_for(lambda: "first epoch committed" in first.log(), 60, "the first replica to commit")
        second = StreamProcess(kafka, app, src, out, tmp_path, replica=1, name="second", path=path)
        wait_for(lambda: "first epoch committed" in second.log(), 60, "the second replica to commit")
        split = (owned(first), owned(second))
        time.sleep(3)
        assert second.stop() == 0                        # leaves gracefully: the first takes all
        wait_for(lambda: owned(first) == every, 60, "the first replica to own every partition")
        again = StreamProcess(kafka, app, src, out, tmp_path, replica=1, name="again", path=path)
        wait_for(lambda: "first epoch committed" in again.log(), 60, "the second replica to rejoin")
        time.sleep(3)
        first.kill()                                      # SIGKILL: supervisor and driver
        killed_at = time.monotonic()
        # the killed driver may have died between sending its offsets and committing: on Apache
        # Kafka the group's offsets then stay unstable until transaction.timeout.ms (60 s)
        # aborts it, and the survivor restarts until then (docs/brokers.md)
        wait_for(lambda: owned(again) == every, 120, "the survivor to take over every partition")
        takeover = time.monotonic() - killed_at
        time.sleep(3)
        # As an orchestrator would, start replica 0 again: its transactional id fences what
        # the killed one left open, which on the embedded broker would otherwise hold back
        # the group's offset commits for good (see the open-transaction test below).
        back = StreamProcess(kafka, app, src, out, tmp_path, replica=0, name="back", path=path)
        feeder.finish()
        feeder.join(60)
        assert feeder.error is None
        verdict = wait_verified(kafka, app, out, feeder.records, feeder=feeder, procs=[again, back],
                                last=path == "row", rekey=path == "rekey")
    finally:
        for p in (first, second, again, back):
            if p is not None:
                p.stop()
    assert split == (every // 2, every // 2), (first.log()[-2000:], second.log()[-2000:])
    # the survivor restored the killed replica's windows when it took every partition over (its
    # last assignment, once replica 0 came back, can find none open: the sentinels may have
    # closed them all by then)
    restored = [n for parts, n in assignments(again) if parts == every]
    assert restored and max(restored) > 0, again.log()[-3000:]
    assert verdict.problems == [], (verdict.problems[:10], verdict.explain(), again.log()[-3000:])
    print(f"\nsplit {split}; survivor owned every partition {takeover:.1f} s after the SIGKILL, "
          f"restoring {max(restored)} window entries; {verdict}")


@pytest.mark.skipif(not STRICT, reason="on the embedded broker a replica's open transaction hides "
                    "the other replicas' commits (docs/brokers.md)")
def test_a_replica_stopped_mid_transaction_for_fifteen_seconds_changes_no_window(kafka, topic_name, tmp_path):
    """Two replicas share the input; once both commit, replica 0 stops itself (SIGSTOP) right
    after writing window results into an open transaction, for 15 s. The group hands its
    partitions to replica 1; when replica 0 runs again its transaction cannot commit. A
    read_committed reader of the output sees every window exactly once."""
    import os
    import signal

    src, out, app = topics(kafka, topic_name)
    feeder = Feeder(kafka, src, 16_000, rate=300)
    first = StreamProcess(kafka, app, src, out, tmp_path, replica=0, name="first")
    feeder.start()
    second = None
    try:
        wait_for(lambda: "first epoch committed" in first.log(), 60, "replica 0 to commit")
        second = StreamProcess(kafka, app, src, out, tmp_path, replica=1, name="second")
        wait_for(lambda: "first epoch committed" in second.log() and owned(first) == 2, 90,
                 "replica 1 to commit its share")
        first.faults.write_text("after_produce stop\n")  # the next epoch that writes results
        wait_for(lambda: "SIGSTOP at after_produce" in first.log(), 120, "replica 0 to stop itself")
        stopped = first.child_pid()
        time.sleep(15)
        os.kill(stopped, signal.SIGCONT)
        feeder.join(180)
        assert feeder.error is None
        verdict = wait_verified(kafka, app, out, feeder.records, feeder=feeder, procs=[first, second],
                                timeout=240)
    finally:
        for p in (first, second):
            if p is not None:
                p.stop()
    assert verdict.problems == [], (verdict.problems[:10], verdict.explain(), first.log()[-3000:])
    print(f"\nreplica 0 stopped 15 s mid-transaction; second owned {owned(second)} partitions after; {verdict}")


class SlowSink:
    """Wraps the real sink: every produce and commit takes a while (a slow broker)."""

    def __init__(self, inner, delay_s):
        self.inner, self.delay_s = inner, delay_s

    def produce(self, *args, **kw):
        time.sleep(self.delay_s)
        self.inner.produce(*args, **kw)

    def produce_many(self, topic, records, headers=(), partition=None):
        for key, value in records:
            self.produce(topic, key, value, headers, partition)

    def commit_epoch(self, offsets, session):
        time.sleep(0.3)
        self.inner.commit_epoch(offsets, session)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_slow_sink_and_slow_tasks_pause_consumption_with_bounded_memory(kafka, topic_name):
    import psutil
    from helpers import payment_pipeline
    from payments import produce_into

    from stream.app.run import PipelineRun
    from stream.config import RunConfig
    from stream.execution.local import LocalExecutor

    src, out, app = topics(kafka, topic_name)
    records = produce_into(kafka, src, 12_000)
    slow_ids = {r["payment_id"] for r in records[::600]}

    def slow(r):
        if r["payment_id"] in slow_ids:
            time.sleep(0.5)     # a slow task: its range holds up every later range
        return r

    pipeline = payment_pipeline(app, src, out, map_fn=slow)
    config = RunConfig(app_id=app, kafka=kafka, commit_interval_s=0.2, range_records=500, max_inflight=4)
    seen = {"outstanding": 0, "lag": 0}
    rss = []

    def watch(d):
        seen["outstanding"] = max(seen["outstanding"], d.outstanding())
        seen["lag"] = max(seen["lag"], d.lag())
        rss.append(psutil.Process().memory_info().rss)

    ex = LocalExecutor(threads=2)
    with PipelineRun(pipeline, config, ex) as run:
        run.driver.sink = SlowSink(run.driver.sink, 0.0005)
        stats = run.driver.run(until=lambda d: d.caught_up() and d.stats.records_in >= len(records),
                               on_step=watch, drain=True)
    ex.close()
    assert stats.records_in == len(records)
    assert seen["outstanding"] <= 4                 # never more than max_inflight ranges held
    assert seen["lag"] > 3_000                      # the backlog waited in Kafka
    grown = (max(rss) - rss[len(rss) // 10]) / 2**20
    assert grown < 100, f"RSS grew {grown:.0f} MiB while the sink and tasks were slow"
    verdict = verify(kafka, app, out, records)
    assert verdict.problems == []
    print(f"\nmax outstanding ranges {seen['outstanding']}, max lag {seen['lag']}, RSS growth "
          f"{grown:.1f} MiB; {verdict}")


def test_a_replica_dead_with_results_in_an_open_transaction_is_taken_over(kafka, topic_name, tmp_path):
    """The replica takeover with the worst timing made certain: replica 0 dies (not
    supervised) right after writing window results in an epoch it never commits. Replica 1
    takes every partition over. On Apache Kafka nothing else is done: the broker aborts the
    dead replica's transaction after `transaction.timeout.ms`, and a read_committed reader then
    sees every window exactly once. On the embedded broker that transaction never times out,
    and holds back the group's transactional offset commits (and read_committed readers) until
    its transactional id comes back (docs/brokers.md); so there, as an orchestrator would, replica 0
    is started again, which fences and aborts it."""
    src, out, app = topics(kafka, topic_name)
    feeder = Feeder(kafka, src, 6_000, rate=400)
    first = StreamProcess(kafka, app, src, out, tmp_path, replica=0, supervise=False,
                          faults=["after_produce:2"], name="first")
    feeder.start()
    again = back = None
    try:
        wait_for(lambda: first.proc.poll() is not None, 120, "replica 0 to die at its fault point")
        assert "SIGKILL at after_produce" in first.log()
        again = StreamProcess(kafka, app, src, out, tmp_path, replica=1, name="again")
        # on Apache Kafka the takeover waits for the transaction timeout (60 s): the dead
        # replica's pending offsets keep the group's committed offsets unstable until then
        wait_for(lambda: owned(again) == 4 and "first epoch committed" in again.log(), 90 + 60 * STRICT,
                 "replica 1 to own every partition and commit")
        if not STRICT:
            back = StreamProcess(kafka, app, src, out, tmp_path, replica=0, name="back")
        feeder.join(120)
        assert feeder.error is None
        verdict = wait_verified(kafka, app, out, feeder.records, feeder=feeder,
                                procs=[p for p in (again, back) if p is not None], timeout=240)
    finally:
        for p in (first, again, back):
            if p is not None:
                p.stop()
    assert verdict.problems == [], (verdict.problems[:10], verdict.explain(), again.log()[-3000:])
