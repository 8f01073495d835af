"""What the status page at `/` on the metrics port shows, served as `/status.json`.

Counters forget their history, so a `StatusBoard` keeps the recent part of it: the last
epochs, the latest dead letters and late records, and each stage's recent durations. The
driver's own state (partitions, tasks in flight, the pipeline's shape) is read when the page
asks (`driver_status`). The page computes rates from two polls of the totals.

>>> b = StatusBoard()
>>> b.count("records_in", 10); b.failed("decode_failed", ("in", 0, 7), "bad bytes")
>>> b.committed(0.004, now_s=100.0)
>>> s = b.snapshot(now_s=101.0)
>>> s["epochs"][0]["records_in"], s["dead_letters"]["by_reason"], s["dead_letters"]["latest"][0]["offset"]
(10, {'decode_failed': 1}, 7)
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

KEEP_EPOCHS = 20
KEEP_LATEST = 10
KEEP_POINTS = 120
TOTALS = ("records_in", "records_out", "windows", "windowed", "filtered", "skipped", "late",
          "dead_letters", "commits", "aborted")


class StatusBoard:
    """The recent history the status page shows; fed by the metrics hooks."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter({name: 0 for name in TOTALS})
        self.epochs: deque[dict[str, Any]] = deque(maxlen=KEEP_EPOCHS)
        self.reasons: Counter[str] = Counter()
        self.latest_failures: deque[dict[str, Any]] = deque(maxlen=KEEP_LATEST)
        self.latest_late: deque[dict[str, Any]] = deque(maxlen=KEEP_LATEST)
        self.stages: dict[str, deque[tuple[float, float]]] = {}
        self._at_commit: Counter[str] = Counter()
        self.started_s = time.time()

    def count(self, name: str, n: int = 1) -> None:
        self.totals[name] += n

    def failed(self, reason: str, where: tuple[str, int, int] | None = None, message: str = "") -> None:
        self.totals["dead_letters"] += 1
        self.reasons[reason] += 1
        topic, partition, offset = where or ("", -1, -1)
        self.latest_failures.append({"time": time.time(), "topic": topic, "partition": partition,
                                     "offset": offset, "reason": reason, "message": message[:200]})

    def late(self, where: tuple[str, int, int], event_time_ms: int) -> None:
        self.latest_late.append({"time": time.time(), "topic": where[0], "partition": where[1],
                                 "offset": where[2], "event_time_ms": event_time_ms})

    def stage(self, stage: str, seconds: float) -> None:
        self.stages.setdefault(stage, deque(maxlen=KEEP_POINTS)).append((time.time(), seconds))

    def committed(self, seconds: float, now_s: float | None = None) -> None:
        """An epoch committed, taking `seconds`: what it holds is what the totals moved since the last."""
        moved = {name: self.totals[name] - self._at_commit[name] for name in ("records_in", "windows",
                                                                               "records_out", "dead_letters", "late")}
        self._at_commit = Counter(self.totals)
        self.totals["commits"] += 1
        self.epochs.append({"time": time.time() if now_s is None else now_s, "seconds": seconds, **moved})

    def snapshot(self, now_s: float | None = None) -> dict[str, Any]:
        return {"time": time.time() if now_s is None else now_s, "started": self.started_s,
                "totals": dict(self.totals), "epochs": list(self.epochs)[::-1],
                "dead_letters": {"by_reason": dict(self.reasons), "latest": list(self.latest_failures)[::-1]},
                "late": {"latest": list(self.latest_late)[::-1]},
                "stages": {name: [[round(t, 3), s] for t, s in points] for name, points in self.stages.items()}}


def pipeline_graph(pipeline: Any) -> dict[str, Any]:
    """The pipeline's shape: sources, the steps before and after the window, the window, the sink.

    >>> from stream.pipeline import Pipeline
    >>> from stream.windows.specs import Tumbling
    >>> from operators import Count
    >>> p = (Pipeline("g").source("in", {"type": "record", "name": "R", "fields": [{"name": "k", "type": "string"}]})
    ...      .key_by("k").window(Tumbling(1000), aggregate={"n": Count()}).sink("out", format="json"))
    >>> g = pipeline_graph(p); (g["sources"], g["steps"], g["window"], g["sink"])
    (['in'], ['key_by(k)'], 'Tumbling(1 s), grace 0 s: n=count()', 'out')
    """
    stage = pipeline.window_stage
    window = None
    if stage is not None:
        aggs = ", ".join(f"{name}={agg.name}" for name, agg in stage.aggregations.items())
        window = f"{stage.spec.describe()}, grace {stage.grace_ms / 1000:g} s: {aggs}"
    return {"sources": list(pipeline.source_spec.topics), "steps": [_step_name(op) for op in pipeline.steps],
            "window": window, "after": [_step_name(op) for op in pipeline.result_steps],
            "sink": pipeline.sink_spec.topic}


def _step_name(op: Any) -> str:
    name = getattr(op, "name", None) or type(op).__name__.lower()
    field = getattr(op, "field", None)
    return f"{name}({field})" if isinstance(field, str) and "(" not in name else str(name)


def driver_status(core: Any, workers: int, now_ms: int | None = None) -> dict[str, Any]:
    """Each assigned partition's progress, the tasks in flight and the pipeline's shape."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    parts = []
    for (topic, partition), st in sorted(list(core.parts.items())):
        plan = st.plan
        event_time = None if plan.clock.now < 0 else plan.clock.now
        behind = plan.lag()
        parts.append({
            "topic": topic, "partition": partition, "committed": core._committed.get((topic, partition)),
            "merged": plan.merged, "end": plan.high, "lag_records": behind,
            "lag_seconds": (now - st.last_ts) / 1000 if behind and st.last_ts >= 0 else 0.0,
            "event_time_ms": event_time,
            "event_time_behind_s": None if event_time is None else (now - event_time) / 1000,
            "worker": st.pin % workers if workers else st.pin,
            "open_windows": st.store.open_windows() if st.store is not None else 0})
    return {"partitions": parts, "inflight": len(core.inflight), "epoch": core.epoch,
            "watermark_ms": core.watermark(), "graph": pipeline_graph(core.pipeline),
            "repartition": getattr(core, "repartition", None)}
