"""Reading a changelog partition back from Kafka (writes go through the pipeline's sink).

The restore reads `read_uncommitted`, on purpose and on every broker: the restore rule
(`stream.driver.checkpoint.restore`) keeps only entries of epochs known to be committed, so aborted or
still-open entries are skipped by the rule, not by the broker. A `read_committed` reader would
stop at the last stable offset: while another producer's transaction is open on the partition
(a stalled replica, a dead driver before `transaction.timeout.ms`), every entry committed after
that transaction began would be missing from the restored state.

>>> KafkaChangelog("spend.changelog", {"bootstrap.servers": "h:1"}).consumer_config["isolation.level"]
'read_uncommitted'
"""

from __future__ import annotations

from typing import Any

from stream.records import RawMessage


class KafkaChangelog:
    """Reads the changelog partitions a restore needs, to their end, `read_uncommitted`."""

    def __init__(self, topic: str, consumer_config: dict[str, Any], timeout_s: float = 60.0) -> None:
        self.topic = topic
        self.consumer_config = {**consumer_config, "isolation.level": "read_uncommitted"}
        self.timeout_s = timeout_s

    def load(self, partitions: list[int]) -> dict[int, list[RawMessage]]:
        """Every entry of each changelog partition, to the end the fetch reports."""
        from stream.sources.kafka import read_partitions  # the reader lives with the Kafka source

        return read_partitions(self.consumer_config, self.topic, partitions, self.timeout_s)
