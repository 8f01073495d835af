"""A real Prometheus server scrapes a running pipeline on the embedded broker and Dask; every
dashboard query and every alert signal must parse and return series, the shipped rules must
evaluate, and stopping the pipeline must make the down and no-commit alerts true."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from urllib.error import HTTPError
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
from confluent_kafka import Producer
from helpers import payment_pipeline
from monitoring import (
    PROMETHEUS_DIR,
    alert_rules,
    concrete,
    dashboard_queries,
    need_prometheus,
    split_alert,
    with_threshold,
)

from stream.app.admin import ensure_topic
from stream.app.generator import PaymentGenerator, partition_of
from stream.app.run import PipelineRun
from stream.config import KafkaConfig, RunConfig

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
PARTITIONS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except HTTPError as e:
        return e.code, e.read().decode()


class Monitored:
    """A pipeline fed at a steady rate (with some bad and some late records), and a Prometheus
    server scraping it every second with the shipped alert rules loaded."""

    def __init__(self, broker, executor, tmp: Path) -> None:
        self.kafka = KafkaConfig(broker.bootstrap)
        tag = uuid.uuid4().hex[:8]
        self.src, self.out = f"mon-in-{tag}", f"mon-out-{tag}"
        for t in (self.src, self.out):
            ensure_topic(self.kafka.client(), t, PARTITIONS)
        self.pipeline = payment_pipeline(f"mon-{tag}", self.src, self.out, size_ms=1_000, grace_ms=500)
        self.stopping, self.pipeline_stopped = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        self.producer = threading.Thread(target=self._produce, daemon=True)
        self.producer.start()
        config = RunConfig(app_id=self.pipeline.name, kafka=self.kafka, metrics_port=0,
                           commit_interval_s=0.5, range_records=5_000)
        self.run = PipelineRun(self.pipeline, config, executor)
        self.metrics_url = f"http://127.0.0.1:{self.run.metrics_port}"
        self.driver_thread = threading.Thread(target=self._drive, daemon=True)
        self.driver_thread.start()
        self.prometheus = self._start_prometheus(tmp)

    def _produce(self) -> None:
        codec = self.pipeline.source_spec.codec
        p = Producer(self.kafka.producer())
        gen = PaymentGenerator(users=50, step_ms=1, disorder_ms=200, seed=5).records(10**9)
        i = 0
        try:
            while not self.stopping.is_set():
                now = int(time.time() * 1000)
                for _ in range(100):  # ~1,000 records/s in bursts of 100
                    r = next(gen)
                    r["ts"] = now - (60_000 if i % 250 == 0 else 0)  # a late record now and then
                    value = codec.encode(r) if i % 200 else b"\x00not avro"  # and a bad one
                    p.produce(self.src, value, r["user_id"].encode(),
                              partition=partition_of(r["user_id"], PARTITIONS))
                    i += 1
                p.poll(0)
                time.sleep(0.1)
            p.flush(10)
        except BaseException as exc:  # noqa: BLE001 - pragma: no cover; reported by the tests
            self.errors.append(exc)

    def _drive(self) -> None:
        try:
            self.run.driver.run(should_stop=self.pipeline_stopped.is_set)
        except BaseException as exc:  # noqa: BLE001 - pragma: no cover; reported by the tests
            self.errors.append(exc)

    def _start_prometheus(self, tmp: Path) -> subprocess.Popen:
        binary = need_prometheus("prometheus")
        shutil.copy(PROMETHEUS_DIR / "alerts.yml", tmp / "alerts.yml")
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            "  - job_name: stream\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{self.run.metrics_port}']}}]\n")
        port = _free_port()
        self.api = f"http://127.0.0.1:{port}/api/v1"
        proc = subprocess.Popen([binary, f"--config.file={tmp / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=subprocess.DEVNULL, stderr=open(tmp / "prometheus.log", "w"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(tmp / 'prometheus.log').read_text()[-2000:]}")
            try:
                if _get(f"http://127.0.0.1:{port}/-/ready", 1)[0] == 200:
                    return proc
            except OSError:
                pass
            time.sleep(0.2)
        proc.kill()
        raise RuntimeError("prometheus did not become ready within 30 s")

    def query(self, expr: str) -> list[dict]:
        status, body = _get(f"{self.api}/query?{urlencode({'query': expr})}")
        doc = json.loads(body)
        assert status == 200 and doc["status"] == "success", f"{expr}: {doc.get('error', body)}"
        return doc["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            assert not self.errors, self.errors
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)

    def stop_pipeline(self) -> None:
        if not self.pipeline_stopped.is_set():
            self.pipeline_stopped.set()
            self.driver_thread.join(60)
            self.run.close()

    def close(self) -> None:
        self.stopping.set()
        self.stop_pipeline()
        self.producer.join(30)
        self.prometheus.terminate()
        try:
            self.prometheus.wait(20)
        except subprocess.TimeoutExpired:
            self.prometheus.kill()


@pytest.fixture(scope="module")
def monitored(broker, dask_executor, tmp_path_factory):
    m = Monitored(broker, dask_executor, tmp_path_factory.mktemp("prometheus"))
    try:
        # enough scrapes for rates, and at least one of each event the panels show
        for expr in ('count_over_time(up{job="stream"}[1m]) >= 8',
                     "stream_records_dead_lettered_total > 0", "stream_records_late_total > 0",
                     "stream_result_latency_seconds_count > 0"):
            assert m.wait_for(expr, 90), f"no series for {expr} after 90 s"
        yield m
    finally:
        m.close()


def test_health_and_readiness_endpoints_answer_while_running(monitored):
    assert _get(f"{monitored.metrics_url}/healthz") == (200, "ok\n")
    assert _get(f"{monitored.metrics_url}/readyz") == (200, "ready\n")
    assert _get(f"{monitored.metrics_url}/nothing")[0] == 404


def test_every_dashboard_query_parses_and_returns_series(monitored):
    empty = [(title, q) for title, q in dashboard_queries() if not monitored.query(concrete(q))]
    assert not empty, f"dashboard queries with no series: {empty}"


def test_every_alert_signal_returns_series_and_every_rule_evaluates(monitored):
    for rule in alert_rules():
        for signal, _, _ in split_alert(rule["expr"]):
            assert monitored.query(signal), f"{rule['alert']}: no series for {signal}"
    monitored.wait_for("ALERTS or vector(1)")  # at least one rule evaluation has happened
    status, body = _get(f"{monitored.api}/rules")
    groups = json.loads(body)["data"]["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(rules) == {r["alert"] for r in alert_rules()}
    assert all(r["health"] == "ok" for r in rules.values()), \
        {n: r.get("lastError") for n, r in rules.items() if r["health"] != "ok"}
    # a healthy pipeline fires none of them
    firing = [a["labels"]["alertname"] for r in rules.values() for a in r.get("alerts", [])
              if a["state"] == "firing"]
    assert firing == [] or set(firing) <= {"StreamDeadLetterRate"}, firing  # 0.5% are bad on purpose


def test_the_pipeline_reports_what_flows(monitored):
    q = monitored.query
    assert float(q(f'sum(rate(stream_records_in_total{{topic="{monitored.src}"}}[30s]))')[0]["value"][1]) > 100
    reasons = {r["metric"]["reason"] for r in q("stream_records_dead_lettered_total")}
    assert reasons == {"decode_failed"}
    assert float(q("max(stream_dask_workers)")[0]["value"][1]) == 2
    assert float(q("max(stream_assigned_partitions)")[0]["value"][1]) == PARTITIONS
    assert float(q("max(stream_ready)")[0]["value"][1]) == 1
    assert float(q("sum(stream_transactions_committed_total)")[0]["value"][1]) > 0
    stages = {r["metric"]["stage"] for r in q("stream_stage_duration_seconds_count > 0")}
    assert stages == {"read_decode", "merge", "produce", "commit"}


def test_stopping_the_pipeline_makes_the_down_and_no_commit_alerts_true(monitored):
    rules = {r["alert"]: r for r in alert_rules()}
    down = rules["StreamDown"]["expr"]
    # StreamNoCommit waits 300 s; the same expression with a 5 s threshold shows it turning true
    no_commit = with_threshold(rules["StreamNoCommit"]["expr"], 300, 5)
    assert monitored.query(down) == [] and monitored.query(no_commit) == []
    monitored.stop_pipeline()
    assert monitored.wait_for(down, 30), "up == 0 never became true after the pipeline stopped"
    result = monitored.wait_for(no_commit, 30)
    assert [r["metric"]["pipeline"] for r in result] == [monitored.pipeline.name]
