"""Build the Grafana dashboard for stream pipelines from a short list of rows and panels.

    .venv/bin/python deploy/grafana/dashboard.py   # rewrites deploy/grafana/dashboards/stream.json

The JSON is generated so that every panel is laid out the same way and every query is in one
readable list; tests/unit/deploy/test_monitoring_files.py checks the committed JSON matches this file and
tests/integration/test_prometheus.py runs every query against a real Prometheus.

>>> [p["title"] for p in build()["panels"] if p["type"] == "row"][0]
'Throughput'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "stream.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
P = 'pipeline=~"$pipeline"'

# (row title, [(panel title, unit, [(query, legend)], description)])
ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]], str]]]] = [
    ("Throughput", [
        ("Records in / out", "rps", [
            (f"sum by (pipeline) (rate(stream_records_in_total{{{P}}}[$__rate_interval]))", "{{pipeline}} in"),
            (f"sum by (pipeline) (rate(stream_records_out_total{{{P}}}[$__rate_interval]))", "{{pipeline}} out"),
        ], "Records read from the input topics and written to the output topic, per second."),
        ("Bytes in", "Bps", [
            (f"sum by (pipeline, topic) (rate(stream_bytes_in_total{{{P}}}[$__rate_interval]))", "{{topic}}"),
        ], "Value bytes read per second, by input topic."),
        ("Windows emitted", "ops", [
            (f"sum by (pipeline) (rate(stream_windows_emitted_total{{{P}}}[$__rate_interval]))", "{{pipeline}}"),
        ], "Window results emitted per second."),
    ]),
    ("Lag", [
        ("Consumer lag (records)", "short", [
            (f"sum by (pipeline, topic, partition) (stream_consumer_lag_records{{{P}}})", "{{topic}}[{{partition}}]"),
        ], "Records between the merged position and the end offset of the last fetch, per partition."),
        ("Consumer lag (seconds)", "s", [
            (f"max by (pipeline, topic, partition) (stream_consumer_lag_seconds{{{P}}})", "{{topic}}[{{partition}}]"),
        ], "Age of the last merged record while a partition lags; 0 when caught up."),
    ]),
    ("Latency", [
        ("Result latency (window close to committed)", "s", [
            (f"histogram_quantile(0.5, sum by (le, pipeline) (rate(stream_result_latency_seconds_bucket{{{P}}}[$__rate_interval])))", "p50"),
            (f"histogram_quantile(0.99, sum by (le, pipeline) (rate(stream_result_latency_seconds_bucket{{{P}}}[$__rate_interval])))", "p99"),
        ], "From the moment the watermark closes a window to the commit of its result."),
        ("Event-time latency (window end to committed)", "s", [
            (f"histogram_quantile(0.5, sum by (le, pipeline) (rate(stream_event_time_latency_seconds_bucket{{{P}}}[$__rate_interval])))", "p50"),
            (f"histogram_quantile(0.99, sum by (le, pipeline) (rate(stream_event_time_latency_seconds_bucket{{{P}}}[$__rate_interval])))", "p99"),
        ], "Wall clock at commit minus the window's end in event time: how far results trail reality."),
    ]),
    ("Watermark", [
        ("Watermark lag", "s", [
            (f"max by (pipeline) (stream_watermark_lag_seconds{{{P}}})", "{{pipeline}}"),
        ], "Wall clock minus the pipeline watermark. It grows when the watermark stalls."),
        ("Open windows", "short", [
            (f"sum by (pipeline) (stream_open_windows{{{P}}})", "{{pipeline}}"),
        ], "(key, window pane) entries held in window state."),
    ]),
    ("Errors", [
        ("Dead letters by reason", "rps", [
            (f"sum by (pipeline, reason) (rate(stream_records_dead_lettered_total{{{P}}}[$__rate_interval]))", "{{reason}}"),
        ], "Records sent to the dead-letter topic per second; the reason is also in each record's dlq.reason header."),
        ("Late records", "rps", [
            (f"sum by (pipeline) (rate(stream_records_late_total{{{P}}}[$__rate_interval]))", "{{pipeline}}"),
        ], "Records for windows already emitted, per second (written to the late topic)."),
        ("Task failures and retries", "ops", [
            (f"sum by (pipeline) (rate(stream_task_failures_total{{{P}}}[$__rate_interval]))", "failures"),
            (f"sum by (pipeline, why) (rate(stream_task_retries_total{{{P}}}[$__rate_interval]))", "retries ({{why}})"),
        ], "Range tasks that raised on a worker, and ranges planned again."),
    ]),
    ("Epoch stages", [
        ("Stage time p99", "s", [
            (f"histogram_quantile(0.99, sum by (le, pipeline, stage) (rate(stream_stage_duration_seconds_bucket{{{P}}}[$__rate_interval])))", "{{stage}}"),
        ], "read_decode: one range task on a worker; merge, produce and commit: in the driver."),
        ("Stage time share", "percentunit", [
            (f"sum by (pipeline, stage) (rate(stream_stage_duration_seconds_sum{{{P}}}[$__rate_interval]))", "{{stage}}"),
        ], "Seconds spent per second in each stage (read_decode summed over workers)."),
    ]),
    ("Workers and state", [
        ("Dask workers", "short", [
            (f"max by (pipeline) (stream_dask_workers{{{P}}})", "workers"),
            (f"max by (pipeline) (stream_assigned_partitions{{{P}}})", "assigned partitions"),
        ], "Workers connected to the scheduler, and input partitions this driver owns."),
        ("State size", "bytes", [
            (f"sum by (pipeline) (stream_state_size_bytes{{{P}}})", "{{pipeline}}"),
        ], "Window state as serialized in the changelog: what a restore reads."),
        ("Restarts", "short", [
            (f"max by (pipeline) (stream_driver_restarts_total{{{P}}})", "driver restarts"),
            (f"max by (pipeline) (stream_watchdog_exits_total{{{P}}})", "watchdog exits"),
            (f"sum by (pipeline, event) (increase(stream_rebalances_total{{{P}}}[$__rate_interval]))", "rebalance {{event}}"),
        ], "Restarts by the supervisor (watchdog exits among them) and consumer group rebalances."),
    ]),
    ("Transactions", [
        ("Transactions", "ops", [
            (f"sum by (pipeline) (rate(stream_transactions_committed_total{{{P}}}[$__rate_interval]))", "committed"),
            (f"sum by (pipeline) (rate(stream_transactions_aborted_total{{{P}}}[$__rate_interval]))", "aborted"),
        ], "Kafka transactions (one per epoch under exactly-once) per second."),
        ("Since last commit", "s", [
            (f"time() - max by (pipeline) (stream_last_commit_timestamp_seconds{{{P}}})", "{{pipeline}}"),
        ], "Seconds since the last committed epoch."),
    ]),
]


def _panel(pid: int, title: str, unit: str, queries: list[tuple[str, str]], description: str,
           x: int, y: int, w: int) -> dict[str, Any]:
    return {
        "id": pid, "type": "timeseries", "title": title, "description": description,
        "datasource": DATASOURCE, "gridPos": {"h": 8, "w": w, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": q,
                     "legendFormat": legend} for i, (q, legend) in enumerate(queries)],
    }


def build() -> dict[str, Any]:
    """The dashboard as a dict (Grafana's JSON model)."""
    panels: list[dict[str, Any]] = []
    y, pid = 0, 1
    for row, items in ROWS:
        panels.append({"id": pid, "type": "row", "title": row, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        w = 24 // len(items)
        for i, (title, unit, queries, description) in enumerate(items):
            panels.append(_panel(pid, title, unit, queries, description, i * w, y, w))
            pid += 1
        y += 8
    return {
        "uid": "stream-pipelines", "title": "Stream pipelines", "tags": ["stream", "kafka", "dask"],
        "timezone": "browser", "schemaVersion": 39, "version": 1, "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [{
            "name": "pipeline", "label": "Pipeline", "type": "query", "datasource": DATASOURCE,
            "query": {"query": "label_values(stream_records_in_total, pipeline)", "refId": "pipeline"},
            "definition": "label_values(stream_records_in_total, pipeline)",
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
            "current": {"text": "All", "value": "$__all"},
        }]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main() -> int:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
