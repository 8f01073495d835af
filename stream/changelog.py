"""Reading a changelog partition back from Kafka (writes go through the pipeline's sink).

>>> KafkaChangelog("spend.changelog", {"bootstrap.servers": "h:1"}).topic
'spend.changelog'
"""

from __future__ import annotations

from typing import Any

from stream.records import RawMessage


class KafkaChangelog:
    def __init__(self, topic: str, consumer_config: dict[str, Any], timeout_s: float = 60.0) -> None:
        self.topic = topic
        self.consumer_config = consumer_config
        self.timeout_s = timeout_s

    def load(self, partitions: list[int]) -> dict[int, list[RawMessage]]:
        """Every entry of each changelog partition, to the end the fetch reports."""
        from stream.sources.kafka import read_partitions  # the reader lives with the Kafka source

        return read_partitions(self.consumer_config, self.topic, partitions, self.timeout_s)
