"""Test a pipeline without a broker: feed records, read what closed and what was late.

`TestDriver` runs the same pure code the workers and the driver run (operators, the
event-time pass, partial aggregation, window state) on records you give it. Each partition's
event time moves record by record, as in the engine: feeding a record closes the windows it
moves past. `advance_watermark` moves time on without records, as the end of input or the
opted-in wall-clock advance would.

>>> from operators import Count
>>> from stream.pipeline import Pipeline, Tumbling
>>> schema = {"type": "record", "name": "R", "fields": [
...     {"name": "k", "type": "string"}, {"name": "ts", "type": "long"}]}
>>> p = (Pipeline("t").source("in", schema, timestamp="ts").key_by("k")
...      .window(Tumbling(seconds=10), aggregate={"n": Count()}).sink("out", schema={
...      "type": "record", "name": "O", "fields": [{"name": "k", "type": "string"},
...      {"name": "window_start", "type": "long"}, {"name": "window_end", "type": "long"},
...      {"name": "n", "type": "long"}]}))
>>> td = TestDriver(p)
>>> td.feed([{"k": "a", "ts": 1_000}, {"k": "a", "ts": 2_000}, {"k": "b", "ts": 12_000}])
[{'k': 'a', 'window_start': 0, 'window_end': 10000, 'n': 2}]
>>> td.feed([{"k": "a", "ts": 3_000}]); [(r["ts"], w) for r, w in td.late]
[]
[(3000, ((0, 10000),))]
>>> td.advance_watermark(20_000)
[{'k': 'b', 'window_start': 10000, 'window_end': 20000, 'n': 1}]
"""

from __future__ import annotations

import zlib
from typing import Any, Iterable

from stream.pipeline import Pipeline
from stream.records import Failure, RawMessage
from stream.windows.eventtime import NEVER, PartitionClock
from stream.windows.keying import KeyHomes
from stream.windows.merge import advance, merge_range
from stream.windows.repartition import (
    OriginClocks,
    all_origins,
    decode as decode_envelope,
    heartbeat,
    origin_id,
    repartition_topic,
    stamp,
)
from stream.windows.store import WindowResult, WindowResults
from stream.worker.rows import _finder, aggregate_records, process_messages, result_records


class TestDriver:
    """Runs a pipeline's pure logic over fed records; the watermark moves only when told."""

    __test__ = False  # not a pytest test class

    def __init__(self, pipeline: Pipeline, advance_after_ms: int | None = None, *,
                 input_partitions: int = 1, repartition_partitions: int = 4) -> None:
        """A re-keyed pipeline (`key_by(..., repartition=True)`, or a source keyed_by another
        field) runs both stages: `feed` writes through an in-memory repartition topic of
        `repartition_partitions`, and stage 2 reads it at once; windows close when every one of
        the `input_partitions` has moved past them."""
        self.pipeline = pipeline
        self.now_ms = 0  # the scripted wall clock (advance_wall_clock moves it)
        self.out_of_order_ms = pipeline.source_spec.out_of_order_ms if pipeline.source_spec else 0
        self.advance_after_ms = advance_after_ms
        self.stores: dict[int, Any] = {}
        self.clocks: dict[int, PartitionClock] = {}
        self._fed_ms: dict[int, int] = {}  # partition: wall clock of its last records
        self._offsets: dict[int, int] = {}
        self._floor = NEVER  # event time every partition was advanced to
        self.homes = KeyHomes(pipeline.key_label)  # a key on two partitions: NotKeyedError
        self._topic = pipeline.source_spec.topics[0] if pipeline.source_spec else "input"
        self.emitted: list[dict[str, Any]] = []
        self.outputs: list[tuple[bytes | None, bytes]] = []
        self.failures: list[Failure] = []
        self.scored: dict[tuple[str, str], int] = {}  # (model, version) -> records scored
        self.late: list[tuple[dict[str, Any], tuple[tuple[int, int], ...]]] = []  # (record, closed windows)
        self._rekey = None
        if pipeline.rekey:
            self._rekey = _Rekeyed(pipeline, input_partitions, repartition_partitions)
            self.stores = self._rekey.stores

    def _partition(self, partition: int) -> tuple[Any, PartitionClock]:
        clock = self.clocks.setdefault(partition, PartitionClock(advanced=self._floor))
        stage = self.pipeline.window_stage
        if stage is not None and partition not in self.stores:
            self.stores[partition] = stage.new_store(early=True)
        return self.stores.get(partition), clock

    def feed(self, records: Iterable[dict[str, Any]], partition: int = 0,
             kafka_timestamps: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """Process records as the next range of `partition`, in order; returns the windows
        they closed. Kafka timestamps default to each record's event time field (as if
        produced when it happened), else 0."""
        records = list(records)
        field = self.pipeline.source_spec.timestamp if self.pipeline.source_spec else None
        stamps = list(kafka_timestamps) if kafka_timestamps is not None else [
            r[field] if field and type(r.get(field)) is int else 0 for r in records]
        first = self._offsets.get(partition, 0)
        rows = [(first + i, r, ts) for i, (r, ts) in enumerate(zip(records, stamps))]
        self._offsets[partition] = first + len(rows)
        self._fed_ms[partition] = self.now_ms
        if self._rekey is not None:
            clock = self.clocks.setdefault(partition, PartitionClock())
            results, missed, failures = self._rekey.feed(rows, partition, clock)
            self.failures += failures
            self.late += missed
            return self._closed(results)
        store, clock = self._partition(partition)
        raw = _finder([RawMessage(o, None, None, ts) for o, _, ts in rows])
        partial = aggregate_records(self.pipeline, rows, raw=raw, carry=clock.now)
        self.failures += partial.failures
        for slot, n in partial.scored.items():
            self.scored[slot] = self.scored.get(slot, 0) + n
        self.outputs += partial.outputs
        if store is None:
            clock.observe(partial.max_ts)
            return []
        self.homes.check_partial((self._topic, partition), partial)
        results, late = merge_range(store, clock, partial, self.out_of_order_ms)
        self.late += [(rows[rec.offset - first][1], rec.windows) for rec in late]
        return self._closed(results)

    def advance_wall_clock(self, ms: int) -> list[dict[str, Any]]:
        """Let `ms` of wall-clock time pass. With `advance_after_ms`, a partition quiet for
        longer moves on in event time by the quiet time beyond it, as the engine's opted-in
        wall-clock advance does. Returns the results it closes."""
        self.now_ms += ms
        if self.advance_after_ms is None:
            return []
        results: list[WindowResult] = []
        for p, store in self.stores.items():
            clock, beyond = self.clocks[p], self.now_ms - self._fed_ms.get(p, 0) - self.advance_after_ms
            if beyond > 0 and clock.event_time != NEVER:
                results += advance(store, clock, clock.event_time + beyond, self.out_of_order_ms)
        return self._closed(results)

    def early_results(self) -> list[dict[str, Any]]:
        """Partial results of the open windows changed since the last call (what
        `window(..., early=...)` emits periodically before the final result)."""
        results = [w for store in self.stores.values() for w in store.early_results()]
        return self._rows(results)

    def _rows(self, results: list[WindowResult]) -> list[dict[str, Any]]:
        """Window results as output records, after the operators that follow window()."""
        def failed(w: Any, exc: BaseException) -> None:
            self.failures.append(Failure(w.start, "operator_error", type(exc).__name__, str(exc)[:500]))
        items = result_records(self.pipeline, sorted(results, key=lambda w: w.start), failed, self.scored)
        return [record for _, _, record in items]

    def _closed(self, results: WindowResults | list[WindowResult]) -> list[dict[str, Any]]:
        out = self._rows(list(results))
        for store in self.stores.values():
            store.check_invariants()
        self.emitted += out
        return out

    def advance_watermark(self, watermark_ms: int) -> list[dict[str, Any]]:
        """Move every partition's watermark (event time minus the out-of-orderness) to at least
        `watermark_ms`, as the end of input would; returns the window results it closes."""
        target = watermark_ms + self.out_of_order_ms
        self._floor = max(self._floor, target)
        clocks = self._rekey.clocks if self._rekey is not None else self.clocks
        results = [w for p, store in self.stores.items()
                   for w in advance(store, clocks[p], target, self.out_of_order_ms)]
        return self._closed(results)


class _Rekeyed:
    """Both stages of a re-keyed window in memory: stage 1 writes envelopes and heartbeats
    to the repartition partitions as the driver does, and stage 2 reads what is new at once."""

    def __init__(self, pipeline: Pipeline, input_partitions: int, repartition_partitions: int) -> None:
        self.first, self.second = pipeline.stages(repartition_topic(pipeline.name))
        self.ooo = pipeline.checked_source().out_of_order_ms
        self.n = repartition_partitions
        origins = all_origins({"input": input_partitions}, ("input",))
        self.logs: dict[int, list[RawMessage]] = {r: [] for r in range(self.n)}
        self.read: dict[int, int] = {r: 0 for r in range(self.n)}
        self.origins = {r: OriginClocks(origins) for r in range(self.n)}
        self.clocks = {r: PartitionClock() for r in range(self.n)}
        stage = pipeline.window_stage
        assert stage is not None
        self.stores: dict[int, Any] = {r: stage.new_store(early=True) for r in range(self.n)}

    def feed(self, rows: list[Any], partition: int, clock: PartitionClock) -> tuple[
            WindowResults, list[tuple[dict[str, Any], tuple[tuple[int, int], ...]]], list[Failure]]:
        raw = _finder([RawMessage(o, None, None, ts) for o, _, ts in rows])
        partial = aggregate_records(self.first, rows, raw=raw, carry=clock.now)
        origin, carry = origin_id(0, partition), clock.now
        for key, value in partial.outputs:
            r = zlib.crc32(key or b"") % self.n
            self.logs[r].append(RawMessage(len(self.logs[r]), key, stamp(value, origin, carry), 0))
        clock.observe(partial.max_ts)
        if clock.now != carry:
            for r in range(self.n):
                self.logs[r].append(RawMessage(len(self.logs[r]), None, heartbeat(origin, clock.now), 0))
        by_offset = {offset: record for offset, record, _ in rows}
        late = [(by_offset[rec.offset], rec.windows) for rec in partial.late]
        results, failures = WindowResults(), list(partial.failures)
        for r in range(self.n):
            new = self.logs[r][self.read[r]:]
            self.read[r] = len(self.logs[r])
            p = process_messages(self.second, new)
            failures += p.failures
            self.origins[r].heard(p)
            closed, missed = merge_range(self.stores[r], self.clocks[r], p, self.ooo)
            results.extend(closed)
            late += [(decode_envelope(rec.value).record, rec.windows) for rec in missed if rec.value]
        return results, late, failures
