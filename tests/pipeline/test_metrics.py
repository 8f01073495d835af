"""Metrics without a broker: what a driver run on in-memory topics reports, the health and
readiness endpoints, and the restart counts the supervisor hands to a new driver."""

import time
from urllib.error import HTTPError
from urllib.request import urlopen

import pytest
from helpers import payment_pipeline
from prometheus_client import CollectorRegistry
from test_executors import make_topic, run

from stream.execution.local import LocalExecutor
from stream.metrics import ENV_RESTARTS, ENV_WATCHDOG_EXITS, Metrics
from stream.sources.memory import MemorySession


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, {"pipeline": m.pipeline, **labels})


def get(url: str) -> tuple[int, str]:
    try:
        with urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except HTTPError as e:
        return e.code, e.read().decode()


def test_a_driver_run_reports_stages_latency_state_and_rebalances():
    topic, records = make_topic()
    pipeline = payment_pipeline("mem", "payments", "out")
    m = Metrics(pipeline.name, CollectorRegistry())
    ex = LocalExecutor()
    d, sink = run(pipeline, MemorySession([topic]), ex, metrics=m)
    seen: dict[str, float] = {}

    def sample(d):  # state is dropped once windows close: look while the run is under way
        seen["state"] = max(seen.get("state", 0), value(m, "stream_state_size_bytes") or 0)
        seen["ready"] = max(seen.get("ready", 0), value(m, "stream_ready") or 0)

    stats = d.run(until=lambda d: d.caught_up(), drain=True, on_step=sample)
    ex.close()
    assert value(m, "stream_records_in_total", topic="payments") == len(records)
    assert value(m, "stream_windows_emitted_total") == stats.windows > 0
    for stage in ("read_decode", "merge", "produce", "commit"):
        assert value(m, "stream_stage_duration_seconds_count", stage=stage) > 0, stage
    assert value(m, "stream_commits_total") == stats.commits
    assert value(m, "stream_transactions_committed_total") == 0  # the memory sink has no transactions
    assert value(m, "stream_result_latency_seconds_count") > 0
    assert value(m, "stream_event_time_latency_seconds_count") > 0
    assert value(m, "stream_rebalances_total", event="assigned") == 1
    assert value(m, "stream_assigned_partitions") == 3
    assert seen["state"] > 0 and seen["ready"] == 1
    assert value(m, "stream_open_windows") == 0  # drained: every window emitted
    assert value(m, "stream_last_commit_timestamp_seconds") > time.time() - 60
    lags = [value(m, "stream_consumer_lag_records", topic="payments", partition=str(p)) for p in range(3)]
    assert lags == [0, 0, 0]


def test_dead_letters_are_counted_by_reason():
    topic, _ = make_topic(n=500)
    topic.append(0, b"\x00garbage", b"k", 0)
    pipeline = payment_pipeline("mem", "payments", "out")
    m = Metrics(pipeline.name, CollectorRegistry())
    ex = LocalExecutor()
    d, _ = run(pipeline, MemorySession([topic]), ex, metrics=m)
    d.run(until=lambda d: d.caught_up(), drain=True)
    ex.close()
    assert value(m, "stream_records_dead_lettered_total", reason="decode_failed") == 1


def test_health_and_readiness_follow_the_driver_loop():
    m = Metrics("p", CollectorRegistry(), health_timeout_s=0.2)
    port = m.serve(0)
    try:
        url = f"http://127.0.0.1:{port}"
        assert get(url + "/healthz") == (200, "ok\n")
        assert get(url + "/readyz")[0] == 503
        m.probes.ready = lambda: True
        assert get(url + "/readyz") == (200, "ready\n")
        time.sleep(0.3)  # the loop has not turned since: not live
        status, text = get(url + "/healthz")
        assert status == 503 and "has not turned" in text
        m.alive()
        assert get(url + "/healthz")[0] == 200
        status, text = get(url + "/metrics")
        assert status == 200 and "stream_ready" in text
    finally:
        m.close()


def test_restart_counts_from_the_supervisor_continue_in_a_new_driver(monkeypatch):
    monkeypatch.setenv(ENV_RESTARTS, "3")
    monkeypatch.setenv(ENV_WATCHDOG_EXITS, "2")
    m = Metrics("p", CollectorRegistry())
    assert value(m, "stream_driver_restarts_total") == 3
    assert value(m, "stream_watchdog_exits_total") == 2


def test_a_revoked_partition_stops_reporting_lag():
    m = Metrics("p", CollectorRegistry())
    m.lag("t", 0, 5, 1.5)
    assert value(m, "stream_consumer_lag_seconds", topic="t", partition="0") == 1.5
    m.forget_partition("t", 0)
    assert value(m, "stream_consumer_lag_records", topic="t", partition="0") is None


def _stateless(name: str, source: str, sink: str):
    from helpers import PAYMENT

    from stream.pipeline import Pipeline

    return (Pipeline(name).source(source, schema=PAYMENT, timestamp="ts")
            .filter(lambda r: r["amount"] > 0).map(lambda r: {**r, "amount": r["amount"] * 2})
            .sink(sink, schema=PAYMENT))


def _pipelines():
    from helpers import count_pipeline, session_pipeline

    return {"record path": lambda: payment_pipeline("mem", "payments", "out"),
            "columnar": lambda: payment_pipeline("mem", "payments", "out", last=False),
            "hopping": lambda: payment_pipeline("mem", "payments", "out", slide_ms=5_000),
            "session": lambda: session_pipeline("mem", "payments", "out", gap_ms=500, grace_ms=500),
            "count": lambda: count_pipeline("mem", "payments", "out"),
            "stateless": lambda: _stateless("mem", "payments", "out")}


@pytest.mark.parametrize("kind", list(_pipelines()))
def test_the_record_accounting_closes_from_the_metrics(kind):
    """in = windowed (or out) + dead letters + late + skipped + filtered, read from /metrics,
    on both worker paths, with refunds filtered, undecodable values, tombstones and late copies."""
    from stream.codecs.avro import AvroCodec
    from stream.codecs.schemas import load_schema

    topic, records = make_topic(n=3_000)
    codec = AvroCodec(load_schema("schemas/payment.avsc"))
    for p in range(3):
        topic.append(p, b"\x00garbage", b"k", 0)
        topic.append(p, None, b"tombstone", 0)
    for r in records[:40:4]:  # an hour-old copy of a few payments, after everything: late
        old = {**r, "ts": r["ts"] - 3_600_000, "amount": abs(r["amount"]) + 1}
        topic.append(records.index(r) % 3, codec.encode(old), r["user_id"].encode(), r["ts"])
    pipeline = _pipelines()[kind]()
    m = Metrics(pipeline.name, CollectorRegistry())
    ex = LocalExecutor()
    port = m.serve(0)
    try:
        d, _ = run(pipeline, MemorySession([topic]), ex, metrics=m)
        stats = d.run(until=lambda d: d.caught_up(), drain=True)
        _, text = get(f"http://127.0.0.1:{port}/metrics")
    finally:
        ex.close()
        m.close()
    total = _scrape(text)
    inside = total["stream_records_in_total"]
    assert inside == stats.records_in == sum(len(log) for log in topic.data.values())
    accounted = (total["stream_records_windowed_total"] + total.get("stream_records_out_total", 0) * (kind == "stateless")
                 + total["stream_records_dead_lettered_total"] + total["stream_records_late_total"]
                 + total["stream_records_skipped_total"] + total["stream_records_filtered_total"])
    assert accounted == inside, total  # hour-old copies are late in every window: counted in none
    assert total["stream_records_filtered_total"] == sum(r["amount"] <= 0 for r in records) > 0
    assert total["stream_records_dead_lettered_total"] == 3 and total["stream_records_skipped_total"] == 3
    assert kind in ("count", "stateless") or total["stream_records_late_total"] > 0


def _scrape(text: str) -> dict[str, float]:
    """Each sample name's sum over its labels."""
    total: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("{")[0].split(" ")[0], float(line.rsplit(" ", 1)[1])
            total[name] = total.get(name, 0.0) + value
    return total


def test_status_json_reports_partitions_epochs_and_the_pipeline_graph():
    import json

    topic, records = make_topic(n=2_000)
    topic.append(1, b"\x00garbage", b"k", 0)
    pipeline = payment_pipeline("mem", "payments", "out")
    m = Metrics(pipeline.name, CollectorRegistry())
    ex = LocalExecutor()
    port = m.serve(0)
    try:
        d, _ = run(pipeline, MemorySession([topic]), ex, metrics=m)
        d.run(until=lambda d: d.caught_up())
        code, body = get(f"http://127.0.0.1:{port}/status.json")
        page_code, page = get(f"http://127.0.0.1:{port}/")
    finally:
        ex.close()
        m.close()
    s = json.loads(body)
    assert code == 200 and page_code == 200 and "status.json" in page
    assert [(p["topic"], p["partition"]) for p in s["partitions"]] == [("payments", i) for i in range(3)]
    assert sum(p["merged"] for p in s["partitions"]) == s["totals"]["records_in"] == len(records) + 1
    assert all(p["lag_records"] == 0 and p["event_time_ms"] > 0 for p in s["partitions"])
    assert s["graph"] == {"sources": ["payments"], "steps": ["filter", "key_by(user_id)"], "after": [], "sink": "out",
                          "window": s["graph"]["window"]} and s["graph"]["window"].startswith("Tumbling(10 s)")
    assert s["epochs"] and sum(e["records_in"] for e in s["epochs"]) <= len(records) + 1
    assert s["dead_letters"]["by_reason"] == {"decode_failed": 1}
    assert s["dead_letters"]["latest"][0]["partition"] == 1 and s["ready"] is True
    assert set(s["stages"]) >= {"read_decode", "merge", "commit"}
