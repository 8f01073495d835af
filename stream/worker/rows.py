"""The per-batch work a worker does: decode, operators, event time, partial aggregation.

Pure: no Kafka, Dask or Prometheus. A record that fails to decode or makes an operator
raise becomes a Failure; the rest of the batch goes on.

>>> from operators import Count
>>> from stream.pipeline import Pipeline, Tumbling
>>> p = (Pipeline("t").source("in", {"type": "record", "name": "R", "fields": [
...      {"name": "k", "type": "string"}, {"name": "ts", "type": "long"}]}, timestamp="ts")
...      .key_by("k").window(Tumbling(seconds=10), aggregate={"n": Count()}))
>>> aggregate_records(p, [(0, {"k": "a", "ts": 1}, 0), (1, {"k": "a", "ts": 2}, 0)]).partials
{('a', 0): [2]}
"""

from __future__ import annotations

import json
from bisect import bisect_left
from typing import Any, Callable, Iterable, Mapping, Sequence

from operators.base import BatchOperator, Operator, OperatorUnavailable
from operators.transform import KeyBy
from stream.codecs.avro import encode_all
from stream.codecs.state import StateFormatError
from stream.errors import DecodeError, EncodeError
from stream.pipeline import Pipeline
from stream.records import Failure, Late, Limits, Partial, RawMessage, Single, column
from stream.windows.eventtime import FOREVER, NEVER, Judge
from stream.windows.repartition import EnvelopeCodec, decode as decode_envelope, encode_record
from stream.windows.store import WindowResults

Row = tuple[int, dict[str, Any], int]  # (offset, record, kafka timestamp ms)
# Below these many records a batch takes the row path, as the columnar passes have a fixed
# cost (docs/performance.md, "Batch-size thresholds", has the measurements).
COLUMNAR_MIN_RECORDS = 200
BLOCK_DECODE_MIN_RECORDS = 1_500


class TooLarge(ValueError):
    """A record larger than the configured maximum."""


class FutureEventTime(ValueError):
    """An event time further ahead of the wall clock than the allowed bound."""


def result_records(pipeline: Pipeline, results: Iterable[Any],
                   failed: Callable[[Any, BaseException], None],
                   tallies: dict[tuple[str, str], int] | None = None) -> list[Item]:
    """Window results as output records, after the operators that follow window().

    Returns (result, Kafka key, record) items; the key is `<key>@<window_start>`, so
    duplicates can be recognised. A result that makes an operator raise goes to
    `failed(result, error)`.
    """
    key_field = pipeline.result_key
    items = [(w, f"{w.key}@{w.start}".encode(),
              {**({key_field: w.key} if key_field else {}), "window_start": w.start, "window_end": w.end,
               **w.values})
             for w in results]
    return run_steps(pipeline.result_steps, items, failed, tallies) if pipeline.result_steps else items


def result_failure(w: Any, exc: BaseException, reason: str = "operator_error", record: Any = None) -> Failure:
    """The dead letter of a window result (it has no input record): its Kafka key, and as
    value the result record, or the window's key, bounds and values, in JSON.

    >>> from stream.windows.store import WindowResult
    >>> result_failure(WindowResult("u1", 0, 10, {"n": 2}), ValueError("no")).value
    b'{"key": "u1", "window_start": 0, "window_end": 10, "n": 2}'
    """
    body = record if record is not None else {"key": w.key, "window_start": w.start, "window_end": w.end,
                                              **w.values}
    return Failure(w.start, reason, type(exc).__name__, str(exc)[:500], f"{w.key}@{w.start}".encode(),
                   json.dumps(body, default=str).encode())


def encode_results(pipeline: Pipeline, results: WindowResults, failed: Callable[..., None],
                   tallies: dict[tuple[str, str], int] | None = None) -> list[tuple[bytes, bytes]]:
    """Window results as encoded (Kafka key, value) pairs for the sink; a result an operator
    raises on goes to `failed(result, error)`, one that does not fit the sink schema to
    `failed(result, error, "encode_failed", record)`.

    Without operators after window(), a codec that encodes columns (`encode_columns`) takes
    the results' columns as they are: no record is built per result.
    """
    codec = pipeline.validate().sink.codec
    by_columns = getattr(codec, "encode_columns", None)
    if by_columns is not None and not pipeline.result_steps and results:
        keyed = {pipeline.result_key: results.keys} if pipeline.result_key else {}
        columns = {**keyed, "window_start": results.starts, "window_end": results.ends, **results.values}
        try:
            values = by_columns(columns, len(results))
        except Exception:  # noqa: BLE001 - record by record below, each bad result gets its error
            values = None
        if values is not None:
            return [(f"{k}@{s}".encode(), v) for k, s, v in zip(results.keys, results.starts, values)]
    items = result_records(pipeline, results, failed, tallies)
    ready = []
    for (w, key, record), value in zip(items, encode_all(codec, [r for _, _, r in items])):
        if isinstance(value, Exception):
            if not isinstance(value, EncodeError):
                raise value
            failed(w, value, "encode_failed", record)
            continue
        ready.append((key, value))
    return ready


def _failure(offset: int, reason: str, exc: BaseException, msg: RawMessage | None) -> Failure:
    text = str(exc)
    return Failure(offset, reason, type(exc).__name__, text[:500],
                   msg.key if msg else None, msg.value if msg else None, msg.headers if msg else (),
                   getattr(exc, "schema_id", None))


def decode_messages(pipeline: Pipeline, messages: Iterable[RawMessage], out: Partial,
                    limits: Limits = Limits()) -> list[Row]:
    """Decode values with the source codec; failures and tombstones are recorded in `out`."""
    codec = pipeline.checked_source().codec
    rows: list[Row] = []
    for m in messages:
        out.records_in += 1
        if m.value is None:
            out.skipped += 1
            continue
        out.bytes_in += len(m.value)
        size = len(m.value) + (len(m.key) if m.key is not None else 0)
        if size > limits.max_record_bytes:
            exc = TooLarge(f"record of {size} bytes exceeds max_record_bytes={limits.max_record_bytes}")
            out.failures.append(_failure(m.offset, "too_large", exc, m))
            continue
        try:
            rows.append((m.offset, codec.decode(m.value), m.timestamp_ms))
        except DecodeError as exc:
            out.failures.append(_failure(m.offset, exc.reason, exc, m))
    return rows


Item = tuple[Any, Any, dict[str, Any]]  # (tag, key, record); the tag says where it came from


def run_steps(steps: Iterable[Operator], items: list[Item],
              failed: Callable[[Any, BaseException], None],
              tallies: dict[tuple[str, str], int] | None = None) -> list[Item]:
    """Apply operators, step by step, to a batch of (tag, key, record) items.

    A record-at-a-time operator runs per record; a `BatchOperator` gets the whole batch in one
    call, and when that raises, one record at a time. A record that makes an operator raise is
    reported to `failed(tag, error)` and dropped; the rest go on.

    >>> from operators import Filter
    >>> run_steps([Filter(lambda r: r["x"] > 0)], [(0, None, {"x": 1}), (1, None, {"x": -1})],
    ...           failed=print)
    [(0, None, {'x': 1})]
    """
    for op in steps:
        if isinstance(op, BatchOperator):
            items = _run_batch(op, items, failed, tallies)
            continue
        out: list[Item] = []
        for tag, key, record in items:
            try:
                if isinstance(op, KeyBy):
                    out.append((tag, op.key_of(record), record))
                else:
                    out.extend((tag, key, r2) for r2 in op.process(record))
            except OperatorUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - an operator raised: this record fails, the batch goes on
                failed(tag, exc)
        items = out
    return items


def _run_batch(op: BatchOperator, items: list[Item], failed: Callable[[Any, BaseException], None],
               tallies: dict[tuple[str, str], int] | None) -> list[Item]:
    done = _batch_or_halves(op, items, failed) if items else items
    if tallies is not None:
        op.tally([r for _, _, r in done], tallies)
    return done


def _batch_or_halves(op: BatchOperator, items: list[Item],
                     failed: Callable[[Any, BaseException], None]) -> list[Item]:
    """`op` over `items` in one call; if it raises, over each half, down to the records that
    fail on their own (about 2·log2(n) calls for one bad record in n, never n calls)."""
    try:
        outputs = op.process_batch([r for _, _, r in items])
        if len(outputs) != len(items):
            raise ValueError(f"{op.name}: process_batch returned {len(outputs)} records for "
                             f"{len(items)}; a batch operator returns one per input")
        return [(tag, key, r) for (tag, key, _), r in zip(items, outputs)]
    except OperatorUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - an operator raised on a batch: retried record by record
        if len(items) == 1:
            failed(items[0][0], exc)
            return []
    half = len(items) // 2
    return _batch_or_halves(op, items[:half], failed) + _batch_or_halves(op, items[half:], failed)


def _event_time(pipeline: Pipeline, record: dict[str, Any], kafka_ts: int) -> int:
    field = pipeline.checked_source().timestamp
    if field is None:
        return kafka_ts
    ts = record[field]
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise TypeError(f"event time field {field!r} must be integer epoch ms, got {ts!r}")
    return ts


def _check_future(ts: int, kafka_ts: int, limits: Limits) -> None:
    if ts > kafka_ts + limits.max_future_ms:
        raise FutureEventTime(f"event time {ts} is more than {limits.max_future_ms} ms after the "
                              f"record's Kafka timestamp ({kafka_ts}); raise max_future_ms if "
                              "producers stamp records before their events happen")


def aggregate_records(pipeline: Pipeline, rows: Iterable[Row], out: Partial | None = None,
                      raw: Callable[[int], RawMessage | None] = lambda offset: None,
                      limits: Limits = Limits(), carry: int = NEVER,
                      befores: Mapping[int, int] | None = None) -> Partial:
    """Run operators and partial aggregation over decoded rows (in offset order).

    `raw(offset)` finds the original message, so failures and late records keep their
    bytes; `carry` is the partition's event time before the first row. A re-keyed window
    (`stream.windows.repartition`) gives `befores` instead: each record's own origin's event
    time before it, by offset.
    """
    out = out if out is not None else Partial()
    out.carry = carry
    stage = pipeline.window_stage
    items: list[Item] = []
    for offset, record, kafka_ts in rows:
        try:
            ts = _event_time(pipeline, record, kafka_ts)
            _check_future(ts, kafka_ts, limits)
        except (TypeError, KeyError, FutureEventTime) as exc:
            reason = "future_event_time" if isinstance(exc, FutureEventTime) else "bad_event_time"
            out.failures.append(_failure(offset, reason, exc, raw(offset)))
            continue
        if limits.event_time_range is not None and not limits.event_time_range[0] <= ts < limits.event_time_range[1]:
            out.outside += 1  # a replay outside its time range
            continue
        items.append(((offset, ts), None, record))
    tags, failed_tags = {tag for tag, _, _ in items}, set()

    def failed(tag: tuple[int, int], exc: BaseException) -> None:
        failed_tags.add(tag)
        out.failures.append(_failure(tag[0], "operator_error", exc, raw(tag[0])))
    items = run_steps(pipeline.steps, items, failed, out.scored)
    out.filtered += len(tags - failed_tags - {tag for tag, _, _ in items})
    if stage is None:
        if items:
            out.max_ts = max(ts for (_, ts), _, _ in items)
        _encode_passthrough(pipeline, items, out, raw)
    else:
        ooo = pipeline.checked_source().out_of_order_ms
        _group(stage, _extract(stage, items, out, raw), out, raw, stage.judge(ooo), befores)
    out.failures.sort(key=lambda f: f.offset)
    return out


Extracted = tuple[int, int, Any, list[Any]]  # (offset, event time, key, each aggregation's input)


def _extract(stage: Any, items: list[Item], out: Partial,
             raw: Callable[[int], RawMessage | None]) -> list[Extracted]:
    """Each aggregation's input per record; a record an aggregation cannot read is dead-lettered."""
    aggs = stage.worker_aggregations
    rows: list[Extracted] = []
    for (offset, ts), key, record in items:
        try:
            rows.append((offset, ts, key, [a.extract(record, ts) for a in aggs]))
        except Exception as exc:  # noqa: BLE001 - an aggregation cannot read the record: dead-letter it
            out.failures.append(_failure(offset, "operator_error", exc, raw(offset)))
    return rows


def _group(stage: Any, rows: list[Extracted], out: Partial, raw: Callable[[int], RawMessage | None],
           judge: Judge, origin_befores: Mapping[int, int] | None = None) -> None:
    """The event-time pass, record by record in offset order, then a fold per (key, pane).

    Each record is judged at the partition's event time before it: `out.carry`, raised by the
    range's own records so far (a re-keyed window: its origin's, in `origin_befores`). Late
    records go to `out.late`; session keys with a doubtful record go to `out.singles`, all of
    that key's records, for the driver to place.
    """
    aggs = stage.worker_aggregations
    before, valid = out.carry, FOREVER
    befores: list[int] = []
    if origin_befores is not None:  # judged at their origins' event time: the carry plays no part
        befores = [origin_befores[offset] for offset, _, _, _ in rows]
    else:
        for _, ts, _, _ in rows:
            befores.append(before)
            before = max(before, ts)
    if rows:
        out.max_ts = max(ts for _, ts, _, _ in rows)
    doubts = [judge.doubtful(b, ts) for (_, ts, _, _), b in zip(rows, befores)]
    odd = {key for (_, _, key, _), doubtful in zip(rows, doubts) if doubtful}
    groups: dict[tuple[int, Any, int], tuple[list[int], list[list[Any]]]] = {}
    grouped = 0
    for (offset, ts, key, values), b, doubtful in zip(rows, befores, doubts):
        placed = judge.place(b, ts)
        if not doubtful and origin_befores is None:
            valid = min(valid, placed.valid_below)
        if placed.closed:
            m = raw(offset)
            out.late.append(Late(offset, ts, placed.closed, placed.pane is not None,
                                 m.key if m else None, m.value if m else None, m.headers if m else ()))
        if placed.pane is None:
            continue
        if key in odd:
            failures = len(out.failures)
            accs = _fold(aggs, [offset], [[v] for v in values], out, raw)
            if len(out.failures) == failures:  # else dead-lettered: an aggregation cannot add it
                out.singles.append(Single(offset, key, ts, b, accs, raw(offset) if doubtful else None))
            continue
        grouped += 1
        pane = offset if stage.by_count else placed.pane
        offsets, columns = groups.setdefault((placed.stage, key, pane), ([], [[] for _ in aggs]))
        offsets.append(offset)
        for values_of, value in zip(columns, values):
            values_of.append(value)
    out.valid_below = valid
    staged: dict[int, dict[tuple[Any, int], list[Any]]] = {}
    failures = len(out.failures)
    for (at, key, pane), (offsets, columns) in groups.items():
        target = out.partials if at == NEVER else staged.setdefault(at, {})
        target[(key, pane)] = _fold(aggs, offsets, columns, out, raw)
    out.windowed += grouped - (len(out.failures) - failures)  # less those an aggregation refused
    out.staged = sorted(staged.items(), key=lambda s: s[0])


def _fold(aggs: list[Any], offsets: list[int], columns: list[list[Any]], out: Partial,
          raw: Callable[[int], RawMessage | None]) -> list[Any]:
    """Add each column into a fresh accumulator; if a batch add raises, isolate the records."""
    try:
        return [a.add(a.create(), col) for a, col in zip(aggs, columns)]
    except Exception:  # noqa: BLE001 - a batch-wise add raised: fall back to one record at a time
        pass
    accs = [a.create() for a in aggs]
    for i, offset in enumerate(offsets):
        try:
            accs = [a.add(acc, [col[i]]) for a, acc, col in zip(aggs, accs, columns)]
        except Exception as exc:  # noqa: BLE001 - an aggregation raised on this record: dead-letter it
            out.failures.append(_failure(offset, "aggregation_error", exc, raw(offset)))
    return accs


def _encode_passthrough(pipeline: Pipeline, items: list[Item], out: Partial,
                        raw: Callable[[int], RawMessage | None]) -> None:
    codec = pipeline.validate().sink.codec
    if isinstance(codec, EnvelopeCodec):
        _encode_envelopes(items, out, raw, codec.judge, codec.carried)
        return
    values = encode_all(codec, [record for _, _, record in items])
    for ((offset, _), key, _), value in zip(items, values):
        if isinstance(value, Exception):  # the result does not fit the sink schema
            out.failures.append(_failure(offset, "encode_failed", value, raw(offset)))
        else:
            out.outputs.append((None if key is None else str(key).encode(), value))


def _encode_envelopes(items: list[Item], out: Partial, raw: Callable[[int], RawMessage | None],
                      judge: Judge, fields: tuple[str, ...] | None = None) -> None:
    """Stage 1 of a re-keyed window: each record in an envelope with its event time and the
    range's own event time before it (the driver raises that to the origin's, `stamp`).
    A record late at its place in the partition (judged at `out.carry` raised by the range's
    records, as `_group` does) goes to `out.late` with its original bytes instead."""
    local, valid = NEVER, FOREVER
    index, last = 0, None
    for (offset, ts), key, record in items:
        index = index + 1 if offset == last else 0  # a step may make several records of one
        last = offset
        placed = judge.place(max(out.carry, local), ts)
        valid = min(valid, placed.valid_below)
        if placed.pane is None:
            m = raw(offset)
            out.late.append(Late(offset, ts, placed.closed, False, m.key if m else None,
                                 m.value if m else None, m.headers if m else ()))
        else:
            try:
                out.outputs.append((None if key is None else str(key).encode(),
                                    encode_record(local, ts, (offset, index), record, fields)))
            except StateFormatError as exc:
                out.failures.append(_failure(offset, "encode_failed", exc, raw(offset)))
                continue
        local = max(local, ts)
    out.valid_below = valid


def decode_envelopes(messages: Iterable[RawMessage], out: Partial,
                     marks: Mapping[int, tuple[int, int]] | None = None) -> tuple[list[Row], dict[int, int]]:
    """Stage 2 of a re-keyed window: the records of a repartition range as rows (event time in
    the timestamp's place), each one's origin event time before it by offset; heartbeats go
    to `out.clocks` and are not records. A record at or below the highest position counted
    of its origin (`marks` before the range, then the range's own) is a copy of an aborted
    write and is skipped (`stream.windows.repartition`)."""
    rows: list[Row] = []
    befores: dict[int, int] = {}
    seen = dict(marks or {})
    for m in messages:
        if m.value is None:
            out.records_in += 1
            out.skipped += 1
            continue
        try:
            env = decode_envelope(m.value)
        except DecodeError as exc:
            out.records_in += 1
            out.failures.append(_failure(m.offset, exc.reason, exc, m))
            continue
        if env.record is None:
            if env.before > out.clocks.get(env.origin, NEVER):
                out.clocks[env.origin] = env.before
            continue
        out.records_in += 1
        if env.origin in seen and env.position <= seen[env.origin]:
            out.repeated += 1
            continue
        seen[env.origin] = out.marks[env.origin] = env.position
        out.firsts.setdefault(env.origin, env.position)
        out.bytes_in += len(m.value)
        rows.append((m.offset, env.record, env.ts))
        befores[m.offset] = env.before
    return rows, befores


def _finder(messages: Sequence[RawMessage]) -> Callable[[int], RawMessage | None]:
    """The message at an offset (for a failure's bytes); the offsets are read on first use."""
    offsets: list[int] = []

    def find(offset: int) -> RawMessage | None:
        if not offsets:
            offsets.extend(column(messages, "offset"))
        i = bisect_left(offsets, offset)
        return messages[i] if i < len(offsets) and offsets[i] == offset else None
    return find


def process_messages(pipeline: Pipeline, messages: Sequence[RawMessage],
                     limits: Limits = Limits(), carry: int = NEVER,
                     marks: Mapping[int, tuple[int, int]] | None = None) -> Partial:
    """Decode and process one batch of raw messages (in offset order).

    Batches of at least COLUMNAR_MIN_RECORDS take the columnar path (`stream.worker.columnar`)
    where the pipeline allows it; a batch it declines (bad input, an operator that raises)
    is processed here record by record, after one block decode if it is large enough.
    """
    from stream.worker.columnar import aggregate_batch, decode_rows  # polars loads only where batches run

    if isinstance(pipeline.checked_source().codec, EnvelopeCodec):  # stage 2 of a re-keyed window
        messages = list(messages)
        out = Partial()
        envelopes, befores = decode_envelopes(messages, out, marks)
        return aggregate_records(pipeline, envelopes, out, _finder(messages), limits, carry, befores)

    if len(messages) >= COLUMNAR_MIN_RECORDS:
        fast = aggregate_batch(pipeline, messages, limits, carry)
        if fast is not None:
            return fast
    if len(messages) >= BLOCK_DECODE_MIN_RECORDS:
        rows = decode_rows(pipeline, messages, limits)
        if rows is not None:  # decoded in one pass; operators and the rest record by record
            out = Partial(records_in=len(rows), bytes_in=sum(map(len, column(messages, "value"))))
            return aggregate_records(pipeline, rows, out, _finder(messages), limits, carry)
    messages = list(messages)  # a Kafka batch builds its RawMessages once, here
    out = Partial()
    rows = decode_messages(pipeline, messages, out, limits)
    return aggregate_records(pipeline, rows, out, _finder(messages), limits, carry)
