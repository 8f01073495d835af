"""Test a pipeline without a broker: feed records, advance the watermark, read results.

`TestDriver` runs the same pure code the workers and the driver run (operators, partial
aggregation, window state) on records you give it, with a scripted watermark.

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
>>> td.advance_watermark(10_000)
[{'k': 'a', 'window_start': 0, 'window_end': 10000, 'n': 2}]
>>> td.feed([{"k": "a", "ts": 3_000}]); [(r["ts"], w) for r, w in td.late]
[(3000, [(0, 10000)])]
"""

from __future__ import annotations

from typing import Any, Iterable

from stream.compute import aggregate_records, result_records
from stream.pipeline import Pipeline
from stream.records import Failure
from stream.windows.store import WindowStore
from stream.windows.watermark import NEVER, Watermarks


class TestDriver:
    """Runs a pipeline's pure logic over fed records; the watermark moves only when told."""

    __test__ = False  # not a pytest test class

    def __init__(self, pipeline: Pipeline, idle_timeout_ms: int = 5_000,
                 advance_after_ms: int | None = None) -> None:
        self.pipeline = pipeline
        self.now_ms = 0  # the scripted wall clock (advance_wall_clock moves it)
        ooo = pipeline.source_spec.out_of_order_ms if pipeline.source_spec else 0
        self.watermarks = Watermarks(ooo, idle_timeout_ms, advance_after_ms=advance_after_ms)
        self.stores: dict[int, WindowStore] = {}
        self._offsets: dict[int, int] = {}
        self._watermark = NEVER
        self.emitted: list[dict[str, Any]] = []
        self.outputs: list[tuple[bytes | None, bytes]] = []
        self.failures: list[Failure] = []
        self.scored: dict[tuple[str, str], int] = {}  # (model, version) -> records scored
        self.late: list[tuple[dict[str, Any], list[tuple[int, int]]]] = []  # (record, closed windows)

    def _store(self, partition: int) -> WindowStore | None:
        stage = self.pipeline.window_stage
        if stage is None:
            return None
        store = self.stores.get(partition)
        if store is None:
            store = self.stores[partition] = stage.new_store(early=True)
            store.advance(self._watermark)
        return store

    def feed(self, records: Iterable[dict[str, Any]], partition: int = 0,
             kafka_timestamps: Iterable[int] | None = None) -> None:
        """Process records as one batch of `partition` (event time from the pipeline's field)."""
        records = list(records)
        stamps = list(kafka_timestamps) if kafka_timestamps is not None else [0] * len(records)
        first = self._offsets.get(partition, 0)
        rows = [(first + i, r, ts) for i, (r, ts) in enumerate(zip(records, stamps))]
        self._offsets[partition] = first + len(rows)
        partial = aggregate_records(self.pipeline, rows)
        self.watermarks.observe(partition, partial.max_ts, self.now_ms, caught_up=True)
        self.failures += partial.failures
        for slot, n in partial.scored.items():
            self.scored[slot] = self.scored.get(slot, 0) + n
        self.outputs += partial.outputs
        store = self._store(partition)
        if store is not None:
            late = store.merge(partial.partials, partial.pane_counts)
            spec = self.pipeline.window_stage.spec  # type: ignore[union-attr]
            field = self.pipeline.source_spec.timestamp  # type: ignore[union-attr]
            failed = {f.offset for f in partial.failures}
            for (offset, r, ts) in rows if late else ():
                if offset in failed:
                    continue
                pane = spec.pane_of(r[field] if field else ts)
                if pane in late:
                    self.late.append((r, store.closed_windows(pane)))

    def advance_wall_clock(self, ms: int) -> list[dict[str, Any]]:
        """Let `ms` of wall-clock time pass: the watermark moves as the engine's would (per
        partition max event time minus out-of-orderness; idle partitions stop holding it back;
        with `advance_after_ms`, a quiet stream follows the clock). Returns the results it closes."""
        self.now_ms += ms
        return self.advance_watermark(self.watermarks.current(self.now_ms))

    def early_results(self) -> list[dict[str, Any]]:
        """Partial results of the open windows changed since the last call (what
        `window(..., early=...)` emits periodically before the final result)."""
        results = [w for store in self.stores.values() for w in store.early_results()]
        return self._rows(results)

    def _rows(self, results: list) -> list[dict[str, Any]]:
        """Window results as output records, after the operators that follow window()."""
        def failed(w: Any, exc: BaseException) -> None:
            self.failures.append(Failure(w.start, "operator_error", type(exc).__name__, str(exc)[:500]))
        items = result_records(self.pipeline, sorted(results, key=lambda w: w.start), failed, self.scored)
        return [record for _, _, record in items]

    def advance_watermark(self, watermark_ms: int) -> list[dict[str, Any]]:
        """Move the watermark; returns the window results it closes (also kept in `emitted`)."""
        self._watermark = max(self._watermark, watermark_ms)
        results = [w for store in self.stores.values() for w in store.advance(watermark_ms)]
        out = self._rows(results)
        for store in self.stores.values():
            store.check_invariants()
        self.emitted += out
        return out
