"""The performance targets (issue 18), judged against one `make bench` result.

Every figure is a ratio against the hand-written baseline of the same run, or an absolute
bound where the target is one (latency, memory, start-up). A target the run did not measure
is reported as such, never as met.

>>> rows = judge({"throughput": {"ratio": 0.86}})
>>> [(r["target"], r["met"]) for r in rows][:2]
[('windowed throughput, exactly-once (x hand-written)', False), ('stateless throughput, exactly-once (x hand-written)', None)]
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

Getter = Callable[[dict[str, Any]], float | None]


def _get(*path: str) -> Getter:
    """A getter for a nested key; None where any part is missing."""
    def get(result: dict[str, Any]) -> float | None:
        node: Any = result
        for part in path:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return None if node is None else float(node)
    return get


def _latency_p99(share: str) -> Getter:
    """The p99 of the latency run at `share` of the maximum rate ("1/2", "1/8")."""
    def get(result: dict[str, Any]) -> float | None:
        for point in result.get("latency", {}).get("curve", []):
            if point.get("share_of_max") == share and point.get("p99_s") is not None:
                return float(point["p99_s"])
        return None
    return get


def _startup_s(result: dict[str, Any]) -> float | None:
    """Median start-up of the exactly-once windowed runs (process start to partitions assigned)."""
    runs = result.get("throughput", {}).get("exactly_once", [])
    times = [r["startup_s"] for r in runs if r.get("startup_s") is not None]
    return statistics.median(times) if times else None


def _wall_ratio(result: dict[str, Any]) -> float | None:
    """Wall time of the exactly-once run, start-up included, over the baseline's for as many
    records (the baseline's own start-up is not in it, so the ratio errs against us)."""
    t = result.get("throughput", {})
    records, rps, base, startup = t.get("records"), t.get("exactly_once_median_rps"), t.get("baseline_median_rps"), _startup_s(result)
    if not (records and rps and base) or startup is None:
        return None
    return (records / rps + startup) / (records / base)


# (target, getter, comparison, goal, unit)
TARGETS: list[tuple[str, Getter, str, float, str]] = [
    ("windowed throughput, exactly-once (x hand-written)", _get("throughput", "ratio"), ">=", 1.0, "x"),
    ("stateless throughput, exactly-once (x hand-written)", _get("stateless", "ratio"), ">=", 1.0, "x"),
    ("model scoring throughput, exactly-once (x hand-written)", _get("scoring", "ratio"), ">=", 1.0, "x"),
    ("wall time with start-up (x hand-written)", _wall_ratio, "<=", 1.5, "x"),
    ("start-up: process start to partitions assigned", _startup_s, "<=", 2.0, "s"),
    ("latency p99 at 1/2 of the maximum rate, exactly-once", _latency_p99("1/2"), "<=", 0.5, "s"),
    ("latency p99 at 1/8 of the maximum rate, exactly-once", _latency_p99("1/8"), "<=", 0.25, "s"),
    ("peak RSS of driver and workers, 1M-record run", _get("throughput", "peak_rss_mib"), "<=", 400.0, "MiB"),
    ("driver state per open (key, window)", _get("memory", "bytes_per_entry"), "<=", 150.0, "B"),
    ("driver RSS slope in the soak", _get("memory", "soak", "driver_slope_mib_per_min"), "<", 1.0, "MiB/min"),
    ("workers RSS slope in the soak", _get("memory", "soak", "workers_slope_mib_per_min"), "<", 1.0, "MiB/min"),
    ("recovery: SIGKILL of the driver to the next commit", _get("recovery", "first_commit_s"), "<=", 3.0, "s"),
    ("metrics update interval while processing", _get("metrics", "update_interval_s"), "<=", 0.1, "s"),
]
_COMPARE = {">=": lambda v, g: v >= g, "<=": lambda v, g: v <= g, "<": lambda v, g: v < g}


def judge(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it is met (None: not measured)."""
    rows = []
    for name, get, op, goal, unit in TARGETS:
        value = get(result)
        met = None if value is None else _COMPARE[op](value, goal)
        rows.append({"target": name, "value": None if value is None else round(value, 3),
                     "goal": f"{op} {goal:g} {unit}", "met": met})
    return rows


def lines(rows: list[dict[str, Any]]) -> list[str]:
    """One printable line per target: MET, MISSED or `not measured`."""
    out = []
    for r in rows:
        state = "not measured" if r["met"] is None else "MET" if r["met"] else "MISSED"
        value = "" if r["value"] is None else f"{r['value']:g}"
        out.append(f"{state:12s} {r['target']}: {value} (target {r['goal']})")
    return out
