"""Broker checks and topic management: reachability, existence, explicit creation.

The embedded broker creates unknown topics with 4 partitions on produce and accepts bad
configs, so topics are created explicitly and checked at start.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from stream.errors import BrokerUnavailable, StreamError, TopicMissing


def admin(config: dict[str, Any]) -> AdminClient:
    return AdminClient({k: v for k, v in config.items() if not k.startswith(("fetch.", "session.", "heartbeat."))})


def wait_for_broker(config: dict[str, Any], timeout_s: float = 10.0) -> ClusterMetadata:
    """Metadata from the cluster, or BrokerUnavailable naming the address after `timeout_s`."""
    address = config["bootstrap.servers"]
    client = AdminClient({"bootstrap.servers": address, "log_level": 0,
                          **{k: v for k, v in config.items() if k.startswith(("security.", "sasl.", "ssl."))}})
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        try:
            return client.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            last = str(exc.args[0].str() if exc.args else exc)
        if time.monotonic() >= deadline:
            raise BrokerUnavailable(address, timeout_s, last)
        time.sleep(0.2)


def check_topics(md: ClusterMetadata, topics: list[str], role: str = "input") -> dict[str, int]:
    """Partition counts of `topics`; TopicMissing naming the first absent one."""
    existing = [t for t in md.topics if not t.startswith("__")]
    counts = {}
    for t in topics:
        meta = md.topics.get(t)
        if meta is None or meta.error is not None or not meta.partitions:
            raise TopicMissing(t, existing, role)
        counts[t] = len(meta.partitions)
    return counts


def ensure_topic(config: dict[str, Any], name: str, partitions: int,
                 settings: dict[str, str] | None = None) -> None:
    """Create `name` if it does not exist; fail if it exists with another partition count."""
    client = admin(config)
    md = client.list_topics(timeout=10)
    if name in md.topics and md.topics[name].partitions:
        have = len(md.topics[name].partitions)
        if have != partitions:
            raise StreamError(f"topic {name!r} exists with {have} partitions, expected {partitions}")
        return
    futures = client.create_topics([NewTopic(name, partitions, 1, config=settings or {})])
    for fut in futures.values():
        try:
            fut.result(timeout=15)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == 36:  # TOPIC_ALREADY_EXISTS: a race, fine
                continue
            raise StreamError(f"could not create topic {name!r}: {exc}") from exc
