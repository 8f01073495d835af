"""Helpers for tests: a payment pipeline and an independent recomputation of its windows."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from operators import Count, Last, Max, Mean, Min, Sum
from stream.pipeline import Pipeline
from stream.windows.specs import Hopping, Tumbling

PAYMENT = "schemas/payment.avsc"

OUT_SCHEMA = {
    "type": "record", "name": "Out", "fields": [
        {"name": "user_id", "type": "string"},
        {"name": "window_start", "type": "long"},
        {"name": "window_end", "type": "long"},
        {"name": "n", "type": "long"},
        {"name": "total", "type": "double"},
        {"name": "low", "type": ["null", "double"]},
        {"name": "high", "type": ["null", "double"]},
        {"name": "mean", "type": ["null", "double"]},
        {"name": "last_merchant", "type": ["null", "string"], "default": None},
    ]}


def payment_pipeline(name: str, source: str, sink: str, size_ms: int = 10_000,
                     slide_ms: int | None = None, grace_ms: int = 3_000,
                     map_fn: Any = None, last: bool = True, repartition: bool | None = None) -> Pipeline:
    """Payments per user and window. With `last` (the default) the `Last` aggregation sends
    every batch down the record path; without it, batches of 200 records or more take the
    columnar path (stream.worker.columnar), as the README's example does."""
    spec = Tumbling(size_ms) if slide_ms is None else Hopping(size_ms, slide=slide_ms)
    p = Pipeline(name).source(source, schema=PAYMENT, timestamp="ts")
    if map_fn is not None:
        p = p.map(map_fn)
    aggregate = {"n": Count(), "total": Sum("amount"), "low": Min("amount"), "high": Max("amount"),
                 "mean": Mean("amount")}
    if last:
        aggregate["last_merchant"] = Last("merchant_id")
    return (p.filter(lambda r: r["amount"] > 0)
            .key_by("user_id", repartition=repartition)
            .window(spec, grace=grace_ms, aggregate=aggregate)
            .sink(sink, schema=OUT_SCHEMA))


def recompute(payments: list[dict[str, Any]], size_ms: int = 10_000,
              slide_ms: int | None = None, last: bool = True) -> dict[tuple[str, int], dict[str, Any]]:
    """Windows computed the slow, obvious way: for each record, every window it falls in."""
    slide = slide_ms or size_ms
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for p in payments:
        if p["amount"] <= 0:
            continue
        start = p["ts"] - p["ts"] % slide
        while start > p["ts"] - size_ms:
            groups[(p["user_id"], start)].append(p)
            start -= slide
    out = {}
    for key, recs in groups.items():
        amounts = [r["amount"] for r in recs]
        latest = max(range(len(recs)), key=lambda i: (recs[i]["ts"], i))
        out[key] = {"n": len(recs), "total": sum(amounts), "low": min(amounts), "high": max(amounts),
                    "mean": sum(amounts) / len(amounts), "window_end": key[1] + size_ms}
        if last:
            out[key]["last_merchant"] = recs[latest]["merchant_id"]
    return out


def diff_windows(expected: dict[tuple[str, int], dict[str, Any]], rows: list[dict[str, Any]],
                 allow_duplicates: bool = False) -> list[str]:
    """Every (key, window) that is missing, wrong, unexpected or (unless allowed) duplicated."""
    problems, seen = [], {}
    for r in rows:
        k = (r["user_id"], r["window_start"])
        if k in seen and not allow_duplicates:
            problems.append(f"duplicate {k}")
        if k in seen and seen[k] != r:
            problems.append(f"conflicting duplicates for {k}: {seen[k]} vs {r}")
        seen[k] = r
    for k, want in expected.items():
        got = seen.get(k)
        if got is None:
            problems.append(f"missing {k}")
            continue
        for f, v in want.items():
            g = got[f]
            same = math.isclose(g, v, rel_tol=1e-9, abs_tol=1e-9) if isinstance(v, float) else g == v
            if not same:
                problems.append(f"{k}.{f}: got {g!r}, expected {v!r}")
    problems += [f"unexpected {k}" for k in seen if k not in expected]
    return problems


def session_pipeline(name: str, source: str, sink: str, gap_ms: int = 3_000, grace_ms: int = 6_000) -> Pipeline:
    """The payment pipeline over per-user sessions."""
    from stream.windows.specs import Session

    return (Pipeline(name).source(source, schema=PAYMENT, timestamp="ts")
            .filter(lambda r: r["amount"] > 0)
            .key_by("user_id")
            .window(Session(gap_ms), grace=grace_ms, aggregate={
                "n": Count(), "total": Sum("amount"), "low": Min("amount"), "high": Max("amount"),
                "mean": Mean("amount"), "last_merchant": Last("merchant_id")})
            .sink(sink, schema=OUT_SCHEMA))


def sessions(payments: list[dict[str, Any]], gap_ms: int) -> dict[tuple[str, int], dict[str, Any]]:
    """Sessions the obvious way: sort each user's records by time, split where the next
    record is `gap_ms` or more after the previous one."""
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in payments:
        if p["amount"] > 0:
            by_user[p["user_id"]].append(p)
    out = {}
    for user, recs in by_user.items():
        recs.sort(key=lambda r: r["ts"])
        group: list[dict[str, Any]] = []
        for r in recs + [None]:
            if group and (r is None or r["ts"] - group[-1]["ts"] >= gap_ms):
                amounts = [g["amount"] for g in group]
                out[(user, group[0]["ts"])] = {
                    "n": len(group), "total": sum(amounts), "low": min(amounts), "high": max(amounts),
                    "mean": sum(amounts) / len(amounts), "window_end": group[-1]["ts"] + gap_ms}
                group = []
            if r is not None:
                group.append(r)
    return out


def count_pipeline(name: str, source: str, sink: str, size: int = 5, slide: int | None = None) -> Pipeline:
    """The payment pipeline over windows of `size` payments per user."""
    from stream.windows.specs import CountWindow

    return (Pipeline(name).source(source, schema=PAYMENT, timestamp="ts")
            .filter(lambda r: r["amount"] > 0)
            .key_by("user_id")
            .window(CountWindow(size, slide=slide), aggregate={
                "n": Count(), "total": Sum("amount"), "low": Min("amount"), "high": Max("amount"),
                "mean": Mean("amount"), "last_merchant": Last("merchant_id")})
            .sink(sink, schema=OUT_SCHEMA))


def count_windows(payments: list[dict[str, Any]], size: int, slide: int, order: Any) -> list[dict[str, Any]]:
    """Count windows the obvious way: each user's payments in `order` (partition order), and a
    window of the last `size` of them after every `slide`-th one once there are `size`."""
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in sorted((p for p in payments if p["amount"] > 0), key=order):
        by_user[p["user_id"]].append(p)
    out = []
    for user, recs in by_user.items():
        for end in range(size, len(recs) + 1, slide):
            group = recs[end - size:end]
            amounts = [g["amount"] for g in group]
            out.append({"user_id": user, "window_start": min(g["ts"] for g in group),
                        "window_end": max(g["ts"] for g in group) + 1, "n": len(group),
                        "total": sum(amounts), "low": min(amounts), "high": max(amounts)})
    return out
