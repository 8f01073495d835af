"""`stream status` and `stream reset` as a user runs them, against a real application on the
embedded broker: offsets, lag, state; refusing while the application runs; a reset that
replays the input from the start with empty state."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from helpers import diff_windows, payment_pipeline, recompute
from payments import produce_into, read_windows, run_to_end

from stream.app.admin import ensure_topic
from stream.app.manage import plan_reset
from stream.app.run import PipelineRun
from stream.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.kafka


def cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "stream", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_status_then_reset_refused_while_running_then_reset_to_earliest_recomputes_everything(
        kafka, dask_executor, topic_name):
    src, out = topic_name("in"), topic_name("out")
    ensure_topic(kafka.client(), src, 2)
    ensure_topic(kafka.client(), out, 2)
    first = produce_into(kafka, src, 4_000, partitions=2)
    app = topic_name("app")
    pipeline = payment_pipeline(app, src, out)
    config = RunConfig(app_id=app, kafka=kafka, commit_interval_s=0.2, range_records=500)
    with PipelineRun(pipeline, config, dask_executor) as run:
        run.driver.run(until=lambda d: d.stats.records_in >= 4_000)
    # the second half arrives after the stop, so some input is uncommitted however fast the run was
    records = first + produce_into(kafka, src, 4_000, skip=4_000, partitions=2)
    status = cli("status", "--app", app, "--bootstrap", kafka.bootstrap)
    assert status.returncode == 0, status.stderr[-2000:]
    rows = {m.group(1): (int(m.group(2).replace(",", "")), int(m.group(3).replace(",", "")),
                         int(m.group(4).replace(",", "")))
            for m in re.finditer(r"(\S+\[\d\])\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)", status.stdout)}
    assert set(rows) == {f"{src}[0]", f"{src}[1]"}
    assert sum(end for _, end, _ in rows.values()) == 8_000
    assert all(lag == end - committed for committed, end, lag in rows.values())
    assert 0 < sum(c for c, _, _ in rows.values()) <= 4_000
    assert "last commit:" in status.stdout and re.search(r"state: [1-9][\d,]* bytes", status.stdout)

    stop = threading.Event()
    with PipelineRun(pipeline, config, dask_executor) as run:  # running again: reset must refuse
        t = threading.Thread(target=run.driver.run, kwargs={"until": lambda d: stop.is_set()})
        t.start()
        try:
            while not run.driver.parts:
                stop.wait(0.2)
            refused = cli("reset", "--app", app, "--to-earliest", "--bootstrap", kafka.bootstrap)
        finally:
            stop.set()
            t.join(60)
    assert refused.returncode == 2 and "is running" in refused.stderr, refused.stderr
    first_run = len(read_windows(kafka, out))

    done = cli("reset", "--app", app, "--to-earliest", "--bootstrap", kafka.bootstrap)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{src}[0] -> 0" in done.stdout and f"delete '{app}.changelog'" in done.stdout
    stats = run_to_end(pipeline, config, dask_executor, records)
    assert stats.records_in == 8_000 and stats.restored == 0  # from the start, with empty state
    windows = read_windows(kafka, out)
    assert len(windows) == first_run + stats.windows
    latest = {(w["user_id"], w["window_start"]): w for w in windows}  # keys tell re-emitted ones apart
    assert diff_windows(recompute(records, 10_000), list(latest.values())) == []


def test_reset_to_a_time_finds_the_first_record_at_or_after_it_without_trusting_list_offsets(kafka, topic_name):
    topic, app = topic_name("in"), topic_name("app")
    ensure_topic(kafka.client(), topic, 2)
    p = Producer(kafka.producer())
    # a day ago: Apache Kafka 4 refuses timestamps over an hour ahead (log.message.timestamp.after.max.ms)
    base = (int(time.time()) - 86_400) * 1000
    refused = []
    for i in range(400):  # partition 0: 10 ms apart; partition 1: 20 ms apart
        p.produce(topic, b"x", partition=i % 2, timestamp=base + i * 10,
                  on_delivery=lambda err, msg: err and refused.append(err))
    assert p.flush(30) == 0 and refused == []
    c = Consumer(kafka.consumer({"group.id": app}))  # an application that committed and stopped
    c.commit(offsets=[TopicPartition(topic, 0, 200), TopicPartition(topic, 1, 200)], asynchronous=False)
    c.close()
    plan = plan_reset(kafka, app, base + 1_000)  # record 100: offset 50 of each partition
    assert plan.offsets == {(topic, 0): 50, (topic, 1): 50} and plan.changelog is None
    dry = cli("reset", "--app", app, "--to-time", str(base + 3_995), "--dry-run", "--bootstrap", kafka.bootstrap)
    assert dry.returncode == 0 and "would reset" in dry.stdout
    assert f"{topic}[0] -> 200" in dry.stdout and f"{topic}[1] -> 200" in dry.stdout  # 3,995 ms: none after
