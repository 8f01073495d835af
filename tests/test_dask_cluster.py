"""An existing Dask cluster: real `dask scheduler` and `dask worker` processes (distributed's
command-line tools), a pipeline run with a scheduler address, a worker added and another
removed mid-stream, and every window still correct."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stream.admin import ensure_topic
from stream.broker import free_port
from stream.codecs.avro import AvroCodec
from stream.config import RunConfig
from stream.runner import make_executor, run_pipeline
from stream.sources.kafka import read_all

from helpers import OUT_SCHEMA, diff_windows, payment_pipeline, recompute
from tests_payments import produce_into

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
DASK = str(Path(sys.executable).with_name("dask"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}  # the tests' pipelines, for unpickling


def start_worker(address: str, name: str, log_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([DASK, "worker", address, "--nthreads", "1", "--no-dashboard", "--name", name],
                            cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=open(log_dir / f"{name}.log", "w"))


def test_a_worker_joins_and_another_leaves_mid_stream_and_every_window_is_correct(kafka, topic_name, tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "scheduler.log", "w"))]
    procs.append(start_worker(address, "first", tmp_path))
    executor = None
    try:
        src, out = topic_name("in"), topic_name("out")
        ensure_topic(kafka.client(), src, 4)
        ensure_topic(kafka.client(), out, 2)
        records = produce_into(kafka, src, 30_000)
        pipeline = payment_pipeline(topic_name("app"), src, out)
        config = RunConfig(app_id=pipeline.name, kafka=kafka, scheduler=address, commit_interval_s=0.2,
                           range_records=500, connect_timeout_s=30)
        executor = make_executor(config)
        executor.client.wait_for_workers(1, timeout=60)
        executor.refresh_workers()
        executor.refresh_s = 0.5
        seen_workers: set[str] = set()
        churn = {"added": False, "removed": False}

        def on_step(d):
            seen_workers.update(executor._workers)
            if not churn["added"] and d.stats.records_in >= 5_000:
                churn["added"] = True
                procs.append(start_worker(address, "second", tmp_path))
            if churn["added"] and not churn["removed"] and len(executor._workers) == 2:
                churn["removed"] = True
                threading.Thread(target=procs[1].terminate, daemon=True).start()  # the first one goes

        stats = run_pipeline(pipeline, config, executor=executor, drain=True, on_step=on_step,
                             until=lambda d: d.stats.records_in >= len(records) and d.caught_up())
        assert churn == {"added": True, "removed": True}
        assert len(seen_workers) == 2 and executor.refresh_workers() != [] and procs[1].wait(30) is not None
        codec = AvroCodec(OUT_SCHEMA)
        rows = [codec.decode(m.value) for p in range(2)
                for m in read_all(kafka.consumer({"group.id": "verify"}), out, p)]
        assert stats.records_in == len(records) and stats.failed == 0
        assert diff_windows(recompute(records), rows) == []
    finally:
        if executor is not None:
            executor.close()
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
