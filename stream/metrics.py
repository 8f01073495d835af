"""Every metric declared in one place, with the registry injected and base units in names.

The driver calls small hook methods; gauges that mirror state are read at scrape time
through callbacks.

>>> from prometheus_client import CollectorRegistry
>>> m = Metrics("demo", CollectorRegistry()); m.records_in("payments", 3)
>>> m.registry.get_sample_value("stream_records_in_total", {"pipeline": "demo", "topic": "payments"})
3.0
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from stream.errors import ConfigError


class Metrics:
    def __init__(self, pipeline: str, registry: CollectorRegistry | None = None) -> None:
        self.pipeline = pipeline
        self.registry = registry if registry is not None else CollectorRegistry()
        r, base = self.registry, ["pipeline"]
        self._in = Counter("stream_records_in", "Records read from input topics", base + ["topic"], registry=r)
        self._bytes = Counter("stream_bytes_in", "Value bytes read from input topics", base + ["topic"], registry=r)
        self._out = Counter("stream_records_out", "Records written to the output topic", base + ["topic"], registry=r)
        self._failed = Counter("stream_records_failed", "Records that failed to decode or process",
                               base + ["reason"], registry=r)
        self._late = Counter("stream_records_late", "Records that arrived for an emitted window", base, registry=r)
        self._skipped = Counter("stream_records_skipped", "Tombstones and replayed records skipped",
                                base + ["why"], registry=r)
        self._windows = Counter("stream_windows_emitted", "Window results emitted", base, registry=r)
        self._task_fail = Counter("stream_task_failures", "Range tasks that failed and were re-planned",
                                  base, registry=r)
        self._commits = Counter("stream_commits", "Offset commits", base, registry=r)
        self._task_s = Histogram("stream_task_duration_seconds", "Read+decode+aggregate time of a range task",
                                 base, registry=r, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self._commit_s = Histogram("stream_commit_duration_seconds", "Time to write the changelog, flush and commit one epoch",
                                   base, registry=r, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
        self._lag = Gauge("stream_consumer_lag_records", "Records between the merged position and the end "
                          "offset seen by the last fetch", base + ["topic", "partition"], registry=r)
        self._wm = Gauge("stream_watermark_seconds", "Pipeline watermark (event time, epoch seconds)", base, registry=r)
        self._open = Gauge("stream_open_window_panes", "(key, pane) entries held in window state", base, registry=r)

    def records_in(self, topic: str, n: int, nbytes: int = 0) -> None:
        self._in.labels(self.pipeline, topic).inc(n)
        self._bytes.labels(self.pipeline, topic).inc(nbytes)

    def records_out(self, topic: str, n: int) -> None:
        self._out.labels(self.pipeline, topic).inc(n)

    def failed(self, reason: str) -> None:
        self._failed.labels(self.pipeline, reason).inc()

    def late(self, n: int) -> None:
        self._late.labels(self.pipeline).inc(n)

    def skipped(self, why: str, n: int) -> None:
        self._skipped.labels(self.pipeline, why).inc(n)

    def windows(self, n: int) -> None:
        self._windows.labels(self.pipeline).inc(n)

    def task_failed(self) -> None:
        self._task_fail.labels(self.pipeline).inc()

    def task_seconds(self, s: float) -> None:
        self._task_s.labels(self.pipeline).observe(s)

    def committed(self, seconds: float) -> None:
        self._commits.labels(self.pipeline).inc()
        self._commit_s.labels(self.pipeline).observe(seconds)

    def lag(self, topic: str, partition: int, records: int) -> None:
        self._lag.labels(self.pipeline, topic, str(partition)).set(records)

    def watch(self, watermark_ms: Callable[[], int], open_panes: Callable[[], int]) -> None:
        """Mirror driver state, read at scrape time."""
        self._wm.labels(self.pipeline).set_function(lambda: max(watermark_ms(), 0) / 1000.0)
        self._open.labels(self.pipeline).set_function(open_panes)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve /metrics on `addr:port` (port 0: any free port); returns the port."""
        try:
            server, _ = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            raise ConfigError("metrics_port", f"cannot serve metrics on {addr}:{port}: {exc.strerror}; "
                              "pick another --metrics-port (0 takes any free port)") from exc
        return server.server_port
