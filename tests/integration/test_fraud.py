"""The fraud-detection application on the embedded broker and Dask: training, the three
pipelines end to end against the generator's labels, and a model file replaced mid-stream."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer
from scoring import save_joblib

from examples.fraud.demo import PARTITIONS, run_fraud_app
from examples.fraud.generator import FraudGenerator
from examples.fraud.pipelines import PAYMENT_FEATURES, payment_scores
from examples.fraud.train import train
from operators import Features
from stream.app.admin import ensure_topic
from stream.app.generator import partition_of
from stream.app.run import PipelineRun
from stream.config import RunConfig
from stream.sources.kafka import read_all

pytestmark = pytest.mark.slow

# Floors the app must clear on a held-out stream (the demo itself measures about 0.9 precision
# and 0.7-0.85 recall); below them the features, the windows or the scoring are broken.
PRECISION_FLOOR, RECALL_FLOOR = 0.8, 0.6


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("fraud-models")
    reports = train(60_000, model_dir, out=io.StringIO())
    return model_dir, reports


def test_training_prints_held_out_quality_and_saves_three_models(models):
    model_dir, reports = models
    assert [r.name for r in reports] == ["payment", "window-1m", "window-10m"]
    for r in reports:
        assert r.auc > 0.95 and r.precision > PRECISION_FLOOR and r.positives > 50, r.line()
    assert sorted(p.name for p in model_dir.iterdir()) == ["payment.joblib", "window-10m.joblib", "window-1m.joblib"]


def test_the_fraud_app_scores_every_payment_once_and_its_alerts_beat_the_floors(
        kafka, dask_executor, topic_name, models):
    model_dir, _ = models
    topics = (topic_name("pay"), topic_name("scores"), topic_name("alerts"))
    for t in topics:
        ensure_topic(kafka.client(), t, PARTITIONS)
    run = run_fraud_app(kafka, dask_executor, 30_000, model_dir, topics=topics,
                        app_prefix=topic_name("app") + "-")
    assert run.failures == []
    ids = [s["payment_id"] for s in run.scores]
    assert len(ids) == len(set(ids)) == len(run.payments) == 30_000
    version = hashlib.sha256((model_dir / "payment.joblib").read_bytes()).hexdigest()[:12]
    assert {s["model_version"] for s in run.scores} == {version}
    keys = [(a["user_id"], a["window_start"], a["window_end"]) for a in run.alerts]
    assert len(keys) == len(set(keys))
    measured = run.measure()
    for name, (flagged, precision, recall) in measured.items():
        assert flagged > 20 and precision >= PRECISION_FLOOR and recall >= RECALL_FLOOR, (name, measured)


def test_stream_demo_app_fraud_runs_the_application_and_prints_precision_and_recall(models):
    model_dir, _ = models
    out = subprocess.run([sys.executable, "-m", "stream", "demo", "--app", "fraud", "--records", "12000",
                          "--metrics-port", "0"], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2], env={**os.environ, "FRAUD_MODEL_DIR": str(model_dir)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"models: {model_dir}" in out.stdout
    table = out.stdout[out.stdout.index("measured against the generator's labels"):]
    for row in ("payments", "alerts 1m", "alerts 10m"):
        assert row in table
    assert "12,000 payments" in out.stdout and "12,000 scores" in out.stdout


def _quick_model(payments, labels, C):
    from sklearn.linear_model import LogisticRegression
    return LogisticRegression(C=C, max_iter=2_000).fit(Features(PAYMENT_FEATURES).matrix(payments), labels)


def _produce(kafka, topic, payments, codec):
    p = Producer(kafka.producer())
    for r in payments:
        p.produce(topic, codec.encode(r), r["user_id"].encode(), partition=partition_of(r["user_id"], PARTITIONS))
    assert p.flush(30) == 0


def test_a_replaced_model_file_takes_over_mid_stream_with_no_record_lost_or_scored_twice(
        kafka, dask_executor, topic_name, tmp_path):
    src, out = topic_name("pay"), topic_name("scores")
    for t in (src, out):
        ensure_topic(kafka.client(), t, PARTITIONS)
    rows = list(FraudGenerator(users=300, seed=5).payments(16_000))
    payments, labels = [p for p, _ in rows], np.array([bad for _, bad in rows])
    first, second = payments[:8_000], payments[8_000:]
    old, new = _quick_model(payments, labels, 1.0), _quick_model(payments, labels, 0.001)
    path = save_joblib(old, tmp_path / "payment.joblib")
    v_old = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    pipeline = payment_scores(model=path, source=src, sink=out, check_every_s=0.2)
    codec = pipeline.source_spec.codec
    _produce(kafka, src, first, codec)
    swapped: list[str] = []

    def swap(d):
        if not swapped and d.stats.records_in >= len(first) and d.caught_up():
            save_joblib(new, path)  # atomically, as a user should
            swapped.append(hashlib.sha256(path.read_bytes()).hexdigest()[:12])
            time.sleep(1.0)  # every worker looks at the file again within 0.2 s
            _produce(kafka, src, second, codec)

    config = RunConfig(app_id=topic_name("app"), kafka=kafka)
    with PipelineRun(pipeline, config, dask_executor) as run:
        run.driver.run(until=lambda d: bool(swapped) and d.stats.records_in >= len(payments) and d.caught_up(),
                       on_step=swap)
        sample = run.metrics.registry.get_sample_value
        counted = {v: sample("stream_model_scored_records_total", {
            "pipeline": pipeline.name, "model": "payment.joblib", "version": v}) for v in (v_old, swapped[0])}
    out_codec = pipeline.sink_spec.codec
    scores = [out_codec.decode(m.value) for p in range(PARTITIONS)
              for m in read_all(kafka.consumer({"group.id": "verify"}), out, p)]
    by_id = {s["payment_id"]: s for s in scores}
    assert len(scores) == len(by_id) == len(payments)  # none lost, none scored twice
    v_new = swapped[0]
    assert v_new != v_old and counted == {v_old: 8_000.0, v_new: 8_000.0}
    for part, model, version in ((first, old, v_old), (second, new, v_new)):
        want = model.predict_proba(Features(PAYMENT_FEATURES).matrix(part))[:, 1]
        got = [by_id[p["payment_id"]] for p in part]
        assert {g["model_version"] for g in got} == {version}
        assert np.allclose([g["score"] for g in got], want)
