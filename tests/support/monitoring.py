"""Helpers for the monitoring tests: the shipped dashboard's and alerts' expressions, promtool."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "stream.json"

# `signal <comparison> number` and `... and on (labels) ...`, as alerts.yml writes them
_COMPARISON = re.compile(r"^(?P<signal>.*?)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<threshold>[-+]?[0-9.e]+)\s*$")
_AND = re.compile(r"\s+and(?:\s+on\s*\([^)]*\))?\s+")


def need_prometheus(tool: str = "promtool") -> str:
    """The path of `tool`; skips (or fails, under STREAM_REQUIRE_PROMETHEUS=1) when missing."""
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} not installed (Debian package `prometheus`; .ci/ensure-prometheus installs it)"
        if os.environ.get("STREAM_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([need_prometheus(), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def dashboard_queries(dashboard: dict | None = None) -> list[tuple[str, str]]:
    """(panel title, query) of every panel target."""
    d = dashboard if dashboard is not None else json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in d["panels"] for t in p.get("targets", [])]


def concrete(query: str, rate_interval: str = "1m") -> str:
    """A dashboard query with Grafana's variables replaced, as Grafana would send it."""
    return query.replace("$__rate_interval", rate_interval).replace('=~"$pipeline"', '=~".*"')


def alert_rules() -> list[dict]:
    doc = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def split_alert(expr: str) -> list[tuple[str, str, float]]:
    """The (signal, comparison, threshold) parts of an alert expression."""
    parts = []
    for piece in _AND.split(expr):
        m = _COMPARISON.match(piece.strip())
        assert m, f"alert expression part {piece!r} is not `signal <comparison> number`"
        parts.append((m["signal"], m["op"], float(m["threshold"])))
    return parts


def with_threshold(expr: str, old: float, new: float) -> str:
    """The expression with one comparison's threshold changed (to make an alert fire sooner)."""
    pattern = re.compile(r"(==|!=|>=|<=|>|<)\s*" + re.escape(_number(old)) + r"\s*$")
    out, n = pattern.subn(lambda m: f"{m[1]} {_number(new)}", expr.strip())
    assert n == 1, f"threshold {old} not found at the end of {expr!r}"
    return out


def _number(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def generated_dashboard() -> str:
    """What deploy/grafana/dashboard.py writes."""
    sys.path.insert(0, str(GRAFANA_DIR))
    try:
        import dashboard
        return dashboard.render()
    finally:
        sys.path.remove(str(GRAFANA_DIR))
