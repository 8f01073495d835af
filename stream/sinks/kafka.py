"""The Kafka sink: an idempotent producer whose flush fails loudly on any lost record."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, Producer

from stream.errors import FatalError

log = logging.getLogger(__name__)


class KafkaSink:
    """Produce records; `flush` returns only when every one is acknowledged, or raises."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._producer = Producer(config)
        self._errors: list[str] = []
        self.address = config.get("bootstrap.servers", "?")

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    def produce(self, topic: str, key: bytes | None, value: bytes | None,
                headers: tuple[tuple[str, bytes], ...] = ()) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=list(headers) or None,
                                       on_delivery=self._delivered)
                return
            except BufferError:  # local queue full: serve deliveries, then try again
                self._producer.poll(0.1)

    def flush(self, timeout: float = 30.0) -> None:
        left = self._producer.flush(timeout)
        if left or self._errors:
            errors, self._errors = self._errors, []
            raise FatalError(f"{left} record(s) not acknowledged by {self.address} within "
                             f"{timeout:.0f} s; delivery errors: {errors[:5] or 'none'}. "
                             "Offsets were not committed; restart to resume from the last commit.")

    def close(self) -> None:
        self._producer.flush(5)
