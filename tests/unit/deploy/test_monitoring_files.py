"""The shipped monitoring files: the dashboard, the Prometheus configs and alert rules (checked
and unit-tested with promtool), and the metric names they use. docker-compose.yml, which
mounts them, is checked in test_compose.py."""

import json
import re

import yaml
from monitoring import (
    DASHBOARD,
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    alert_rules,
    dashboard_queries,
    generated_dashboard,
    promtool,
    split_alert,
    with_threshold,
)
from prometheus_client import CollectorRegistry

from stream.metrics import Metrics

_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}


def declared_metric_names() -> set[str]:
    registry = CollectorRegistry()
    Metrics("p", registry)
    return {fam.name + s for fam in registry.collect() for s in _SUFFIXES[fam.type]}


def used_metric_names() -> set[str]:
    exprs = [q for _, q in dashboard_queries()] + [r["expr"] for r in alert_rules()]
    return {name for e in exprs for name in re.findall(r"\bstream_[a-z_]+", e)}


def test_committed_dashboard_is_what_the_generator_writes():
    assert DASHBOARD.read_text() == generated_dashboard(), \
        "run `.venv/bin/python deploy/grafana/dashboard.py` and commit deploy/grafana/dashboards/stream.json"


def test_dashboard_panels_are_laid_out_and_use_the_provisioned_datasource():
    d = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert rows == ["Throughput", "Lag", "Latency", "Watermark", "Errors", "Epoch stages",
                    "Workers and state", "Transactions"]
    ds = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        if p["type"] != "row":
            assert p["datasource"]["uid"] == uid and p["targets"], p["title"]
            assert p["fieldConfig"]["defaults"]["unit"], p["title"]


def test_every_metric_in_the_dashboard_and_alerts_is_declared():
    missing = used_metric_names() - declared_metric_names()
    assert not missing, f"queries use metrics the driver does not export: {sorted(missing)}"


def test_metric_names_follow_prometheus_conventions():
    for name in declared_metric_names():
        assert name.startswith("stream_"), name
    registry = CollectorRegistry()
    Metrics("p", registry)
    for fam in registry.collect():
        if fam.type == "histogram":
            assert fam.name.endswith("_seconds"), fam.name  # base units in names
        for s in fam.samples:
            assert "key" not in s.labels  # never a record key


def test_promtool_accepts_the_configs_and_the_rules():
    for name in ("prometheus.yml", "prometheus.host.yml"):
        config = promtool("check", "config", name)
        assert config.returncode == 0, name + config.stdout + config.stderr
    rules = promtool("check", "rules", "alerts.yml")
    count = len(alert_rules())
    assert rules.returncode == 0 and f"{count} rules found" in rules.stdout, rules.stdout + rules.stderr


def test_promtool_unit_tests_cover_every_alert_and_pass():
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())
    firing = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
              if t.get("exp_alerts")}
    quiet = {t["alertname"] for case in tests["tests"] for t in case.get("alert_rule_test", [])
             if not t.get("exp_alerts")}
    names = {r["alert"] for r in alert_rules()}
    assert names <= firing, f"alerts never tested firing: {sorted(names - firing)}"
    assert names <= quiet, f"alerts never tested quiet: {sorted(names - quiet)}"
    out = promtool("test", "rules", "alerts.test.yml")
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_alert_expressions_split_into_signals_and_thresholds():
    for rule in alert_rules():
        parts = split_alert(rule["expr"])
        assert parts and all(s for s, _, _ in parts), rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    expr = next(r["expr"] for r in alert_rules() if r["alert"] == "StreamNoCommit")
    assert with_threshold(expr, 300, 5).endswith("> 5")
