"""An existing Dask cluster: real `dask scheduler` and `dask worker` processes (distributed's
command-line tools), a pipeline run with a scheduler address, a worker added and another
removed mid-stream, and every window still correct."""

from __future__ import annotations

import threading

import pytest
from daskkit import start_scheduler, start_worker, stop_all
from helpers import diff_windows, payment_pipeline, recompute
from payments import produce_into, read_windows, run_to_end

from stream.app.admin import ensure_topic
from stream.app.broker import free_port
from stream.app.run import make_executor
from stream.config import RunConfig

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_a_worker_joins_and_another_leaves_mid_stream_and_every_window_is_correct(kafka, topic_name, tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [start_scheduler(port, tmp_path)]
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
                executor.client.wait_for_workers(2, timeout=60)  # joins before the input runs out
            if churn["added"] and not churn["removed"] and len(executor._workers) == 2:
                churn["removed"] = True
                threading.Thread(target=procs[1].terminate, daemon=True).start()  # the first one goes

        stats = run_to_end(pipeline, config, executor, records, on_step=on_step)
        assert churn == {"added": True, "removed": True}
        assert len(seen_workers) == 2 and executor.refresh_workers() != [] and procs[1].wait(30) is not None
        rows = read_windows(kafka, out)
        assert stats.records_in == len(records) and stats.failed == 0
        assert diff_windows(recompute(records), rows) == []
    finally:
        if executor is not None:
            executor.close()
        stop_all(procs)


def test_a_task_submitted_while_no_worker_is_connected_waits_for_one(tmp_path):
    """Every worker gone (a restart of all of them): the driver's next task queues at the
    scheduler and runs when a worker comes back, instead of failing the run."""
    from distributed import LocalCluster

    from stream.execution.dask import DaskExecutor

    cluster = LocalCluster(n_workers=0, processes=False, dashboard_address=None)
    executor = DaskExecutor(scheduler=cluster.scheduler_address)
    try:
        assert executor.workers == 0
        future = executor.submit(sum, [1, 2, 3], pin=1)
        cluster.scale(1)
        assert future.result(timeout=60) == 6
    finally:
        executor.close()
        cluster.close()
