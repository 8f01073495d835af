"""`stream status` and `stream reset`: look at an application, and move it back in time.

An application (`--app-id`) is a consumer group that commits its input offsets, plus the
`<app>.changelog` topic holding its window state. Status reads both; reset rewrites the
group's input offsets and deletes the changelog, and refuses while any member is active.

End offsets come from fetches, never from ListOffsets (the embedded broker answers it
wrongly; see docs/brokers.md), and the embedded broker does not list group members: status says
so rather than printing none.

>>> Offsets("payments", 0, committed=10, end=25).lag
15
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from stream.errors import StreamError

CHANGELOG = "{app}.changelog"
REPARTITION = "{app}.repartition.0"  # stream.windows.repartition.repartition_topic
ACTIVE = {"STABLE", "PREPARING_REBALANCE", "COMPLETING_REBALANCE"}


@dataclass(frozen=True)
class Offsets:
    """One input partition as `stream status` shows it: committed and end offsets, lag."""

    topic: str
    partition: int
    committed: int | None   # None: nothing committed
    end: int | None         # from a fetch; None: unknown

    @property
    def lag(self) -> int | None:
        if self.end is None:
            return None
        return self.end - (self.committed if self.committed is not None and self.committed >= 0 else 0)


@dataclass
class Status:
    """What `stream status` prints: the group's state, members and offsets."""

    app: str
    state: str
    members: list[tuple[str, str, list[str]]]   # (client id, host, "topic[p]" assigned)
    offsets: list[Offsets] = field(default_factory=list)
    changelog_partitions: int = 0
    last_epoch_ms: int | None = None             # time of the newest changelog entry
    state_bytes: int = 0                         # live changelog values (latest per key)
    state_entries: int = 0

    def render(self, now_ms: int | None = None) -> str:
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        lines = [f"application {self.app}: consumer group {self.state.lower()}, "
                 + (f"{len(self.members)} member(s)" if self.members else
                    "members not listed by the broker" if self.state in ACTIVE else "no members")]
        for client, host, parts in self.members:
            lines.append(f"  member {client} on {host}: {', '.join(parts) or '(no partitions)'}")
        lines.append(f"  {'partition':<28} {'committed':>12} {'end':>12} {'lag':>10}")
        for o in self.offsets:
            lines.append(f"  {o.topic + f'[{o.partition}]':<28} {_n(o.committed):>12} {_n(o.end):>12} {_n(o.lag):>10}")
        total = sum(o.lag or 0 for o in self.offsets)
        lines.append(f"  total lag {total:,} records")
        if self.last_epoch_ms is None:
            lines.append(f"  state: no changelog entries ({CHANGELOG.format(app=self.app)})")
        else:
            ago = (now_ms - self.last_epoch_ms) / 1000
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(self.last_epoch_ms / 1000))
            lines.append(f"  last commit: {when} UTC ({ago:,.0f} s ago)")
            lines.append(f"  state: {self.state_bytes:,} bytes in {self.state_entries:,} changelog "
                         f"entries over {self.changelog_partitions} partition(s)")
        return "\n".join(lines)


def _n(value: int | None) -> str:
    return "-" if value is None or value < 0 else f"{value:,}"


def _group(admin: Any, app: str) -> tuple[str, list[tuple[str, str, list[str]]]]:
    desc = list(admin.describe_consumer_groups([app]).values())[0].result()
    members = [(m.client_id, m.host, [f"{tp.topic}[{tp.partition}]" for tp in m.assignment.topic_partitions])
               for m in desc.members]
    return desc.state.name, members


def _committed(admin: Any, app: str) -> dict[tuple[str, int], int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    result = list(admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(app)]).values())[0].result()
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions}


def status(kafka: Any, app: str) -> Status:
    """The group's state and members, each input partition's committed offset, end and lag,
    and the changelog's newest entry time and live size."""
    from stream.app.admin import admin as make_admin, wait_for_broker
    from stream.app.replay import partition_bounds
    from stream.sources.kafka import KafkaReader, read_all

    md = wait_for_broker(kafka.client(), 30)
    admin = make_admin(kafka.client())
    state, members = _group(admin, app)
    committed = _committed(admin, app)
    changelog = CHANGELOG.format(app=app)
    inputs = sorted({t for t, _ in committed if t != changelog})
    if not committed and not members and state not in ACTIVE:
        raise StreamError(f"no application {app!r}: the consumer group has no members and no committed "
                          f"offsets at {kafka.bootstrap} (check --app-id; `stream run` uses the pipeline "
                          "name by default)")
    reader = KafkaReader.from_config(kafka.consumer({"group.id": f"{app}.status"}))
    out = Status(app, state, members)
    for t in inputs:
        for p in range(len(md.topics[t].partitions) if t in md.topics else 0):
            out.offsets.append(Offsets(t, p, committed.get((t, p)), partition_bounds(reader, t, p)[1]))
    if changelog in md.topics:
        out.changelog_partitions = len(md.topics[changelog].partitions)
        latest: dict[bytes | None, int] = {}
        for p in range(out.changelog_partitions):
            for m in read_all(kafka.consumer({"group.id": f"{app}.status"}), changelog, p):
                latest[m.key] = len(m.value) if m.value is not None else -1
                out.last_epoch_ms = max(out.last_epoch_ms or 0, m.timestamp_ms)
        live = [n for n in latest.values() if n >= 0]
        out.state_bytes, out.state_entries = sum(live), len(live)
    return out


@dataclass
class ResetPlan:
    """What `stream reset` will do: the new input offsets, and the changelog it deletes."""

    app: str
    offsets: dict[tuple[str, int], int]   # the new committed offset of each input partition
    changelog: str | None                 # deleted, when it exists


def plan_reset(kafka: Any, app: str, to_time_ms: int | None = None) -> ResetPlan:
    """New offsets: each input partition's first offset, or (with `to_time_ms`) the first at or
    after that Kafka timestamp; a repartition topic's end (stage 1 refills it). Raises when the
    group is active or unknown."""
    from stream.app.admin import admin as make_admin, wait_for_broker
    from stream.app.replay import partition_bounds, start_offset, time_hints
    from stream.sources.kafka import KafkaReader

    md = wait_for_broker(kafka.client(), 30)
    admin = make_admin(kafka.client())
    state, members = _group(admin, app)
    if state in ACTIVE or members:
        raise StreamError(f"application {app!r} is running (consumer group {state.lower()}): stop every "
                          f"`stream run` with --app-id {app} first, then reset")
    committed = _committed(admin, app)
    changelog = CHANGELOG.format(app=app)
    inputs = sorted({t for t, _ in committed if t != changelog and t in md.topics})
    if not inputs:
        raise StreamError(f"application {app!r} has no committed input offsets at {kafka.bootstrap}: "
                          "nothing to reset (check --app-id)")
    reader = KafkaReader.from_config(kafka.consumer({"group.id": f"{app}.reset"}))
    tps = [(t, p) for t in inputs for p in range(len(md.topics[t].partitions))]
    hints = {} if to_time_ms is None else time_hints(kafka, f"{app}.reset", tps, to_time_ms)
    offsets = {}
    repartition = REPARTITION.format(app=app)
    for t, p in tps:
        first, high = partition_bounds(reader, t, p)
        low = first if first is not None else (high or 0)
        if t == repartition:  # a re-keyed window: stage 1 writes its input again from the new offsets
            offsets[(t, p)] = high if high is not None else low
        elif to_time_ms is None:
            offsets[(t, p)] = low
        else:  # the broker's answer if it checks out, else scan from the first record
            offsets[(t, p)] = _first_at(reader, t, p, to_time_ms,
                                        start_offset(reader, hints.get((t, p)), t, p, to_time_ms, low),
                                        high)
    return ResetPlan(app, offsets, changelog if changelog in md.topics else None)


def _first_at(reader: Any, topic: str, partition: int, ts_ms: int, start: int, end: int | None) -> int:
    """The first offset from `start` whose Kafka timestamp is at or after `ts_ms` (else `end`)."""
    pos = start
    while end is not None and pos < end:
        batch = reader.read(topic, partition, pos, end, 10_000)
        for m in batch.messages:
            if m.timestamp_ms >= ts_ms:
                return m.offset
        if batch.next_offset <= pos:
            break
        pos = batch.next_offset
    return end if end is not None else start


def apply_reset(kafka: Any, plan: ResetPlan, timeout_s: float = 30.0) -> None:
    """Commit the planned offsets for the group and delete the changelog (window state)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

    from stream.app.admin import admin as make_admin

    admin = make_admin(kafka.client())
    state, members = _group(admin, plan.app)
    if state in ACTIVE or members:  # it may have started since the plan
        raise StreamError(f"application {plan.app!r} started while resetting; nothing was changed")
    request = ConsumerGroupTopicPartitions(plan.app, [TopicPartition(t, p, o) for (t, p), o in sorted(plan.offsets.items())])
    list(admin.alter_consumer_group_offsets([request]).values())[0].result()
    if plan.changelog is not None:
        list(admin.delete_topics([plan.changelog], operation_timeout=timeout_s).values())[0].result()
        deadline = time.monotonic() + timeout_s
        while plan.changelog in admin.list_topics(timeout=10).topics:
            if time.monotonic() > deadline:
                raise StreamError(f"the changelog {plan.changelog!r} was not deleted within {timeout_s:.0f} s")
            time.sleep(0.5)
