"""Configuration: frozen dataclasses validated at construction, naming the bad setting.

librdkafka settings pass through in one mapping (`KafkaConfig.extra`); the defaults here
suit both real Kafka and the embedded broker (see DESIGN.md for why each is set).

>>> KafkaConfig("127.0.0.1:9092").client({"group.id": "g"})["group.id"]
'g'
>>> RunConfig(app_id="x", kafka=KafkaConfig("h:1"), workers=0)
Traceback (most recent call last):
...
stream.errors.ConfigError: configuration setting 'workers': must be >= 1, got 0
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from stream.errors import ConfigError

# Why: the embedded broker answers fetches with very large batches and librdkafka then waits
# fetch.queue.backoff.ms (1 s by default) before the next fetch; a group join takes half the
# session timeout.
GUARANTEES = ("exactly_once", "at_least_once")
DEAD_LETTER_MAX_BYTES = 64 * 1024 * 1024
CONSUMER_DEFAULTS = {
    "fetch.queue.backoff.ms": 10,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1000,
}


@dataclass(frozen=True)
class KafkaConfig:
    """Where the brokers are, plus librdkafka settings passed to every client."""

    bootstrap: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    max_record_bytes: int = 1_048_576

    def __post_init__(self) -> None:
        if not self.bootstrap or any(not h.rpartition(":")[2].isdigit()
                                     for h in self.bootstrap.split(",")):
            raise ConfigError("bootstrap", f"expected HOST:PORT[,HOST:PORT...], got {self.bootstrap!r}")
        if not 1024 <= self.max_record_bytes <= DEAD_LETTER_MAX_BYTES:
            raise ConfigError("max_record_bytes", f"must be 1024..{DEAD_LETTER_MAX_BYTES}, "
                                                  f"got {self.max_record_bytes}")

    def client(self, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A fresh librdkafka config dict: bootstrap, passthrough, then `settings`."""
        return {"bootstrap.servers": self.bootstrap, **self.extra, **(settings or {})}

    def consumer(self, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self.client({**CONSUMER_DEFAULTS, **(settings or {})})

    def producer(self, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
        # dead letters keep an oversized record's original bytes, so the producer (and the
        # dead-letter and late topics) accept records up to DEAD_LETTER_MAX_BYTES
        # A bounded local queue: when the broker is slow, produce() blocks and the driver
        # stops planning, instead of buffering up to librdkafka's default 1 GB.
        return self.client({"enable.idempotence": True, "linger.ms": 5,
                            "message.max.bytes": DEAD_LETTER_MAX_BYTES,
                            "queue.buffering.max.kbytes": 2 * DEAD_LETTER_MAX_BYTES // 1024,
                            **(settings or {})})


def _positive(name: str, value: float, minimum: float = 1) -> None:
    if value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class RunConfig:
    """How one pipeline runs: application id, Kafka, Dask, metrics and pacing."""

    app_id: str
    kafka: KafkaConfig
    scheduler: str | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"  # loopback by default; 0.0.0.0 in a container
    commit_interval_s: float = 1.0
    range_records: int = 50_000  # a task of about 100-200 ms on the columnar path
    max_inflight: int = 0  # 0: three per worker
    idle_timeout_ms: int = 5_000
    connect_timeout_s: float = 10.0
    guarantee: str = "exactly_once"
    replica: int = 0
    max_future_ms: int = 86_400_000
    step_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        _positive("workers", self.workers)
        _positive("range_records", self.range_records)
        _positive("commit_interval_s", self.commit_interval_s, 0.01)
        _positive("idle_timeout_ms", self.idle_timeout_ms, 0)
        _positive("connect_timeout_s", self.connect_timeout_s, 0.1)
        _positive("max_inflight", self.max_inflight, 0)
        if self.guarantee not in GUARANTEES:
            raise ConfigError("guarantee", f"must be one of {', '.join(GUARANTEES)}, got {self.guarantee!r}")
        if not 0 <= self.replica < 1000:
            raise ConfigError("replica", f"must be 0..999, got {self.replica}")
        _positive("max_future_ms", self.max_future_ms, 0)
        _positive("step_timeout_s", self.step_timeout_s, 1)
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise ConfigError("metrics_port", f"must be 0..65535, got {self.metrics_port}")
        if self.scheduler is not None and "://" not in self.scheduler:
            raise ConfigError("scheduler", f"expected an address like tcp://host:8786, got {self.scheduler!r}")

    @property
    def inflight(self) -> int:
        return self.max_inflight or 3 * self.workers

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.app_id}.dlq"

    @property
    def late_topic(self) -> str:
        return f"{self.app_id}.late"

    @property
    def changelog_topic(self) -> str:
        return f"{self.app_id}.changelog"

    @property
    def transactional_id(self) -> str:
        """Stable per application and replica, so a restarted driver fences its predecessor."""
        return f"{self.app_id}.{self.replica}"

    @property
    def exactly_once(self) -> bool:
        return self.guarantee == "exactly_once"
