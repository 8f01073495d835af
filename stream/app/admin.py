"""Broker checks and topic management: reachability, existence, explicit creation.

The embedded broker creates unknown topics with 4 partitions on produce and accepts bad
configs, so topics are created explicitly and checked at start.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from stream.errors import AuthenticationFailed, BrokerUnavailable, StreamError, TopicMissing
from stream.secrets import Secret, masked, reveal_config

VISIBLE_S = 10.0  # how long a topic just created may take to show in the metadata


def admin(config: dict[str, Any]) -> AdminClient:
    """An admin client for `config`, without the consumer-only settings it would warn about."""
    return AdminClient(reveal_config({k: v for k, v in config.items()
                                      if not k.startswith(("fetch.", "session.", "heartbeat."))}))


def wait_for_broker(config: dict[str, Any], timeout_s: float = 10.0,
                    refused_s: float | None = None) -> ClusterMetadata:
    """Metadata from the cluster, or BrokerUnavailable naming the address, the security
    protocol and SASL mechanism, and the client's last error (secrets masked) after `timeout_s`,
    or after `refused_s` already when every connection was refused (nothing listens there)."""
    address = config["bootstrap.servers"]
    security = {k: v for k, v in config.items() if k.startswith(("security.", "sasl.", "ssl."))}
    errors: list[str] = []  # the client's own error events: a TLS or SASL failure says why
    client = AdminClient(reveal_config({"bootstrap.servers": address, "log_level": 0, **security,
                                        "error_cb": lambda err: errors.append(err.str())}))
    start, last, try_s = time.monotonic(), "", 2.0 if refused_s is None else 0.5
    while True:
        try:
            return client.list_topics(timeout=min(try_s, max(0.1, start + timeout_s - time.monotonic())))
        except KafkaException as exc:
            last = str(exc.args[0].str() if exc.args else exc)
        client.poll(0)  # serve the error events that say why
        waited = time.monotonic() - start
        refused = bool(errors) and all("refused" in e or "down" in e for e in errors)
        if waited >= timeout_s or (refused_s is not None and refused and waited >= refused_s):
            secrets = [v for v in security.values() if isinstance(v, Secret)]
            cause = masked(_most_telling(errors) or last, secrets)
            if "sasl.mechanism" in security and _is_authentication(cause):
                raise AuthenticationFailed(address, security["sasl.mechanism"], security.get("sasl.username"), cause)
            protocol = security.get("security.protocol", "PLAINTEXT")
            how = protocol + (f", SASL mechanism {security['sasl.mechanism']}"
                              if "sasl.mechanism" in security else "")
            raise BrokerUnavailable(address, waited, f"over {how}: {cause}")
        time.sleep(0.2)


def _is_authentication(cause: str) -> bool:
    """True when a connection failed on SASL (a broker answered, and refused the client)."""
    return "SASL" in cause or "uthenticat" in cause


def _most_telling(errors: list[str]) -> str:
    """The error event that best explains a failed connection (TLS and SASL ones first)."""
    for words in (("SSL", "certificate"), ("SASL", "uthenticat")):
        for e in reversed(errors):
            if any(w in e for w in words):
                return e
    return errors[-1] if errors else ""


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
                 settings: dict[str, str] | None = None) -> int:
    """Create `name` if it does not exist; fail if it exists with another partition count.
    Returns its partition count.
    Returns once the metadata lists it: Apache Kafka may answer the creation before every
    broker knows the topic, and a check right after then found it missing."""
    client = admin(config)

    def listed() -> int:  # its partition count in the metadata, 0 when it is not there
        md = client.list_topics(timeout=10)
        return len(md.topics[name].partitions) if name in md.topics else 0
    have = listed()
    if have:
        if have != partitions:
            raise StreamError(f"topic {name!r} exists with {have} partitions, expected {partitions}")
        return have
    futures = client.create_topics([NewTopic(name, partitions, 1, config=settings or {})])
    for fut in futures.values():
        try:
            fut.result(timeout=15)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == 36:  # TOPIC_ALREADY_EXISTS: a race, fine
                continue
            raise StreamError(f"could not create topic {name!r}: {exc}") from exc
    deadline = time.monotonic() + VISIBLE_S
    while not listed() and time.monotonic() < deadline:
        time.sleep(0.1)
    return partitions
