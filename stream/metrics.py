"""Every metric declared in one place, with the registry injected and base units in names.

Counters end in `_total`; labels are low-cardinality (pipeline, topic, partition, reason,
stage), never a record key. The driver calls small hook methods; gauges that mirror state
(watermark, open windows, state size, workers, readiness) are read at scrape time through
callbacks. `serve` exposes `/metrics`, `/healthz` (the loop is alive) and `/readyz` (state
restored and partitions assigned) on one port.

>>> from prometheus_client import CollectorRegistry
>>> m = Metrics("demo", CollectorRegistry()); m.records_in("payments", 3)
>>> m.registry.get_sample_value("stream_records_in_total", {"pipeline": "demo", "topic": "payments"})
3.0
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from stream.errors import ConfigError
from stream.status import StatusBoard

# Restarts of the driver, counted by the supervisor and handed to each new driver process, so
# the counters below continue across restarts instead of starting again at zero.
ENV_RESTARTS = "STREAM_DRIVER_RESTARTS"
ENV_WATCHDOG_EXITS = "STREAM_WATCHDOG_EXITS"

STAGES = ("read_decode", "merge", "produce", "commit")
STATUS_PAGE = Path(__file__).with_name("status.html")  # the page at `/`: static, polls /status.json
_FAST = (.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10)
_SLOW = (.05, .1, .25, .5, 1, 2, 5, 10, 30, 60, 300)


@dataclass
class Probes:
    """Callbacks into the running driver, read at scrape time (defaults: nothing running)."""

    watermark_ms: Callable[[], int] = lambda: -1
    open_windows: Callable[[], int] = lambda: 0
    state_bytes: Callable[[], int] = lambda: 0
    partitions: Callable[[], int] = lambda: 0
    workers: Callable[[], int] = lambda: 0
    ready: Callable[[], bool] = lambda: False
    status: Callable[[], dict] = lambda: {}  # the driver's part of /status.json


class Metrics:
    """Every metric of a pipeline, in one registry; the runtime calls its hook methods."""

    def __init__(self, pipeline: str, registry: CollectorRegistry | None = None,
                 health_timeout_s: float = 60.0) -> None:
        self.pipeline = pipeline
        self.registry = registry if registry is not None else CollectorRegistry()
        self.probes = Probes()
        self.board = StatusBoard()
        self.health_timeout_s = health_timeout_s
        self._alive = time.monotonic()
        r, base, p = self.registry, ["pipeline"], pipeline

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, base + list(labels), registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, base + list(labels), registry=r)

        self._in = counter("stream_records_in", "Records read from input topics", ("topic",))
        self._bytes = counter("stream_bytes_in", "Value bytes read from input topics", ("topic",))
        self._out = counter("stream_records_out", "Records written to the output topic", ("topic",))
        self._dlq = counter("stream_records_dead_lettered", "Records that failed and went to the "
                            "dead-letter topic, by reason", ("reason",))
        self._late = counter("stream_records_late", "Records that came after a window they belong to had closed on their partition (written to the late topic)")
        self._skipped = counter("stream_records_skipped", "Records skipped: tombstones, and records of a "
                                "replay outside its time range", ("why",))
        self._filtered = counter("stream_records_filtered", "Records an operator dropped (a filter, "
                                 "a flat_map that returned nothing)")
        self._windowed = counter("stream_records_windowed", "Records added to window state")
        self._windows = counter("stream_windows_emitted", "Window results emitted")
        self._task_fail = counter("stream_task_failures", "Range tasks that raised on a worker")
        self._retries = counter("stream_task_retries", "Ranges planned again: after a failure, a "
                                "read that stopped short, or a range judged at too low an event "
                                "time (rejudged)", ("why",))
        self._commits = counter("stream_commits", "Epochs committed (results, state and offsets together)")
        self._txn_ok = counter("stream_transactions_committed", "Kafka transactions committed")
        self._txn_abort = counter("stream_transactions_aborted", "Kafka transactions aborted")
        self._rebalances = counter("stream_rebalances", "Consumer group rebalance events", ("event",))
        self._restarts = counter("stream_driver_restarts", "Times the supervisor restarted the driver")
        self._wd_exits = counter("stream_watchdog_exits", "Driver exits forced by the watchdog")
        self._scored = counter("stream_model_scored_records", "Records scored, by model and the "
                               "model version that scored them", ("model", "version"))
        self._model = gauge("stream_model_version_info", "1 for the model version that scored "
                            "last (a new version replaces the old series)", ("model", "version"))
        self._versions: dict[str, str] = {}
        self._last_commit = gauge("stream_last_commit_timestamp_seconds", "Unix time of the last committed "
                                  "epoch (the driver's start until its first commit)")
        self._lag = gauge("stream_consumer_lag_records", "Records between the merged position and the "
                          "end offset in the last fetch response", ("topic", "partition"))
        self._lag_s = gauge("stream_consumer_lag_seconds", "Age of the last merged record while the "
                            "partition lags (0 when caught up)", ("topic", "partition"))
        self._stage = Histogram("stream_stage_duration_seconds", "Time per stage of an epoch: read_decode "
                                "(one range task on a worker), merge, produce (encode and send results), "
                                "commit", base + ["stage"], registry=r, buckets=_FAST)
        self._result_latency = Histogram("stream_result_latency_seconds", "From a window closing to its "
                                         "result being acknowledged (committed) by Kafka", base,
                                         registry=r, buckets=_FAST)
        self._event_latency = Histogram("stream_event_time_latency_seconds", "From a window's end (event "
                                        "time) to its result being acknowledged", base, registry=r,
                                        buckets=_SLOW)
        wm = gauge("stream_watermark_seconds", "Pipeline watermark (event time, Unix seconds)")
        wm_lag = gauge("stream_watermark_lag_seconds", "Wall clock minus the watermark; negative when "
                       "the watermark is ahead of the wall clock")
        open_w = gauge("stream_open_windows", "(key, window pane) entries held in window state")
        state = gauge("stream_state_size_bytes", "Window state as serialized in the changelog "
                      "(what a restore reads)")
        parts = gauge("stream_assigned_partitions", "Input partitions assigned to this driver")
        workers = gauge("stream_dask_workers", "Dask workers connected to the scheduler")
        ready = gauge("stream_ready", "1 when state is restored and partitions are assigned")
        pr = self.probes
        wm.labels(p).set_function(_safe(lambda: max(pr.watermark_ms(), 0) / 1000.0))
        wm_lag.labels(p).set_function(_safe(lambda: _watermark_lag(pr.watermark_ms())))
        open_w.labels(p).set_function(_safe(lambda: pr.open_windows()))
        state.labels(p).set_function(_safe(lambda: pr.state_bytes()))
        parts.labels(p).set_function(_safe(lambda: pr.partitions()))
        workers.labels(p).set_function(_safe(lambda: pr.workers()))
        ready.labels(p).set_function(_safe(lambda: 1.0 if pr.ready() else 0.0))
        # series that exist before their first event, so rates and alerts see a zero, not nothing
        for c in (self._late, self._filtered, self._windowed, self._windows, self._task_fail, self._commits, self._txn_ok,
                  self._txn_abort, self._restarts, self._wd_exits):
            c.labels(p)
        for event in ("assigned", "revoked", "lost"):
            self._rebalances.labels(p, event)
        for why in ("failed", "short_read", "rejudged"):
            self._retries.labels(p, why)
        self._last_commit.labels(p).set(time.time())
        self._restarts.labels(p).inc(env_count(ENV_RESTARTS))
        self._wd_exits.labels(p).inc(env_count(ENV_WATCHDOG_EXITS))

    # -- hooks called by the driver -------------------------------------------------------
    def records_in(self, topic: str, n: int, nbytes: int = 0) -> None:
        self._in.labels(self.pipeline, topic).inc(n)
        self._bytes.labels(self.pipeline, topic).inc(nbytes)
        self.board.count("records_in", n)

    def topics(self, inputs: list[str], output: str) -> None:
        """Create the per-topic series at zero, so a quiet topic shows 0, not nothing."""
        for t in inputs:
            self._in.labels(self.pipeline, t)
            self._bytes.labels(self.pipeline, t)
        self._out.labels(self.pipeline, output)

    def records_out(self, topic: str, n: int) -> None:
        self._out.labels(self.pipeline, topic).inc(n)
        self.board.count("records_out", n)

    def scored(self, counts: dict[tuple[str, str], int]) -> None:
        """Records scored per (model, version); the latest version per model becomes the info series."""
        for (model, version), n in counts.items():
            self._scored.labels(self.pipeline, model, version).inc(n)
            previous = self._versions.get(model)
            if previous != version:
                if previous is not None:
                    self._model.remove(self.pipeline, model, previous)
                self._model.labels(self.pipeline, model, version).set(1)
                self._versions[model] = version

    def failed(self, reason: str, where: tuple[str, int, int] | None = None, message: str = "") -> None:
        """A dead letter; `where` (topic, partition, offset) and `message` feed the status page."""
        self._dlq.labels(self.pipeline, reason).inc()
        self.board.failed(reason, where, message)

    def late(self, n: int, latest: Iterable[tuple[str, int, int, int]] = ()) -> None:
        """`n` late records; `latest` (topic, partition, offset, event time) feed the status page."""
        self._late.labels(self.pipeline).inc(n)
        self.board.count("late", n)
        for topic, partition, offset, ts in latest:
            self.board.late((topic, partition, offset), ts)

    def skipped(self, why: str, n: int) -> None:
        self._skipped.labels(self.pipeline, why).inc(n)
        self.board.count("skipped", n)

    def filtered(self, n: int) -> None:
        self._filtered.labels(self.pipeline).inc(n)
        self.board.count("filtered", n)

    def windowed(self, n: int) -> None:
        self._windowed.labels(self.pipeline).inc(n)
        self.board.count("windowed", n)

    def windows(self, n: int) -> None:
        self._windows.labels(self.pipeline).inc(n)
        self.board.count("windows", n)

    def task_failed(self) -> None:
        self._task_fail.labels(self.pipeline).inc()

    def retried(self, why: str) -> None:
        self._retries.labels(self.pipeline, why).inc()

    def stage(self, stage: str, seconds: float) -> None:
        self._stage.labels(self.pipeline, stage).observe(seconds)
        self.board.stage(stage, seconds)

    def committed(self, seconds: float, transactional: bool = False) -> None:
        self._commits.labels(self.pipeline).inc()
        if transactional:
            self._txn_ok.labels(self.pipeline).inc()
        self._last_commit.labels(self.pipeline).set(time.time())
        self.stage("commit", seconds)
        self.board.committed(seconds)

    def aborted(self) -> None:
        self._txn_abort.labels(self.pipeline).inc()
        self.board.count("aborted")

    def results_acknowledged(self, closed_at: list[tuple[int, int]]) -> None:
        """Observe, per batch of results, (wall clock ms when closed, latest window end in ms)."""
        wall = time.time()
        for t_ms, end_ms in closed_at:
            self._result_latency.labels(self.pipeline).observe(max(0.0, wall - t_ms / 1000.0))
            self._event_latency.labels(self.pipeline).observe(max(0.0, wall - end_ms / 1000.0))

    def rebalanced(self, event: str) -> None:
        self._rebalances.labels(self.pipeline, event).inc()

    def lag(self, topic: str, partition: int, records: int, seconds: float = 0.0) -> None:
        self._lag.labels(self.pipeline, topic, str(partition)).set(records)
        self._lag_s.labels(self.pipeline, topic, str(partition)).set(seconds)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a revoked partition's series, so its last lag does not linger."""
        for g in (self._lag, self._lag_s):
            try:
                g.remove(self.pipeline, topic, str(partition))
            except KeyError:
                pass

    def status(self) -> dict[str, Any]:
        """`/status.json`: the board's history, the driver's state, health and readiness."""
        for attempt in range(3):  # the driver thread may change what is read under the read
            try:
                return {"pipeline": self.pipeline, **self.board.snapshot(), **self.probes.status(),
                        "workers": _safe(self.probes.workers)(), "ready": bool(self.probes.ready()),
                        "healthy": self.healthy()[0], "restarts": env_count(ENV_RESTARTS)}
            except RuntimeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def alive(self) -> None:
        """The driver loop turned; `/healthz` fails when it has not for `health_timeout_s`."""
        self._alive = time.monotonic()

    # -- serving --------------------------------------------------------------------------
    def healthy(self) -> tuple[bool, str]:
        idle = time.monotonic() - self._alive
        if idle > self.health_timeout_s:
            return False, f"the driver loop has not turned for {idle:.0f} s\n"
        return True, "ok\n"

    def ready(self) -> tuple[bool, str]:
        if self.probes.ready():
            return True, "ready\n"
        return False, "not ready: partitions not assigned or state not restored yet\n"

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve /metrics, /healthz and /readyz on `addr:port` (port 0: any free port); returns the port."""
        handler = type("Handler", (_Handler,), {"metrics": self})
        try:
            server = ThreadingHTTPServer((addr, port), handler)
        except OSError as exc:
            raise ConfigError("metrics_port", f"cannot serve metrics on {addr}:{port}: {exc.strerror}; "
                              "pick another --metrics-port (0 takes any free port)") from exc
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="stream-metrics", daemon=True).start()
        self._server: ThreadingHTTPServer | None = server
        return server.server_port

    def close(self) -> None:
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
            self._server = None


class _Handler(BaseHTTPRequestHandler):
    metrics: Metrics

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, ok, ctype = generate_latest(self.metrics.registry), True, CONTENT_TYPE_LATEST
        elif path == "/status.json":
            body, ok, ctype = json.dumps(self.metrics.status()).encode(), True, "application/json"
        elif path in ("/", "/index.html"):
            body, ok, ctype = STATUS_PAGE.read_bytes(), True, "text/html; charset=utf-8"
        elif path in ("/healthz", "/readyz"):
            ok, text = self.metrics.healthy() if path == "/healthz" else self.metrics.ready()
            body, ctype = text.encode(), "text/plain; charset=utf-8"
        else:
            body, ok, ctype = b"not found: try /, /status.json, /metrics, /healthz or /readyz\n", False, "text/plain"
            self.send_response(404)
        if path in ("/metrics", "/healthz", "/readyz", "/status.json", "/", "/index.html"):
            self.send_response(200 if ok else 503)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        pass


def _safe(read: Callable[[], float]) -> Callable[[], float]:
    """A scrape-time reading of state the driver thread is changing: if the state changed under
    it (a dict resized by a rebalance), read again; never fail the whole scrape."""
    def reading() -> float:
        for _ in range(3):
            try:
                return float(read())
            except RuntimeError:
                continue
        return float("nan")
    return reading


def _watermark_lag(watermark_ms: int) -> float:
    return 0.0 if watermark_ms < 0 else time.time() - watermark_ms / 1000.0


def env_count(name: str) -> int:
    """A non-negative count from an environment variable (0 when unset or not a number)."""
    try:
        return max(0, int(os.environ.get(name, "0")))
    except ValueError:
        return 0
