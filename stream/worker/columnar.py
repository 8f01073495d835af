"""The columnar fast path of a worker batch: block decode, vectorized filter and group-by.

A windowed pipeline whose source is plain Avro with a flat schema, whose steps are filters,
projections and a key by field, and whose aggregations are the built-in count, sum, min,
max and mean is computed on columns: the batch is decoded in one pass (`BlockDecoder`), a
filter's predicate runs over the rows, and partial aggregates come from one group-by on
(key, pane). The result is the same `Partial` the row path (`stream.worker.rows`) builds.

Anything unusual — a value that does not decode, a too-large record, an event time that is
missing, negative or too far ahead of its Kafka timestamp, a NaN in a float field, a null key,
a predicate or aggregation that raises, a record late on its partition — makes
`aggregate_batch` return None, and the caller runs the row path, which finds such records one
by one and decides what becomes of them. The fast path never decides what a failure is.

>>> from operators import Count, Sum
>>> from stream.pipeline import Pipeline, Tumbling
>>> from stream.records import RawMessage
>>> p = (Pipeline("t").source("in", {"type": "record", "name": "R", "fields": [
...      {"name": "k", "type": "string"}, {"name": "x", "type": "long"},
...      {"name": "ts", "type": "long"}]}, timestamp="ts")
...      .key_by("k").window(Tumbling(seconds=10), aggregate={"n": Count(), "s": Sum("x")}))
>>> codec = p.source_spec.codec
>>> msgs = [RawMessage(i, None, codec.encode({"k": "a", "x": i, "ts": i}), 0) for i in range(3)]
>>> aggregate_batch(p, msgs).partials
{('a', 0): [3, 3]}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence, cast

import polars as pl

from operators.aggregate import Count, Max, Mean, Min, Sum
from operators.expr import Expr
from operators.transform import Filter, KeyBy, Project
from stream.codecs.avro import AvroCodec
from stream.codecs.avro_block import BlockDecoder
from stream.pipeline import Pipeline
from stream.records import Limits, Partial, RawMessage, column
from stream.windows.eventtime import NEVER

_TS, _PANE, _KTS = "__stream_ts", "__stream_pane", "__stream_kafka_ts"
_INTEGER = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32)


@dataclass(frozen=True)
class ColumnarPlan:
    """What the fast path needs of a pipeline, found once per pipeline."""

    decoder: BlockDecoder
    steps: tuple[Any, ...]           # Filter and Project, in order
    key: str
    timestamp: str | None
    slide_ms: int
    on_time_ms: int                  # a record is on time in all its windows while the event
                                     # time before it is below its pane + this
    exprs: tuple[pl.Expr, ...]       # one or more columns per aggregation
    columns: tuple[Callable[[pl.DataFrame], list[Any]], ...]  # each aggregation's accumulators


_WIDE = {"int": pl.Int64, "float": pl.Float64}  # sum as Python would: 64-bit ints, doubles


def _aggregation(i: int, agg: Any, kinds: dict[str, str]
                 ) -> tuple[list[pl.Expr], Callable[[pl.DataFrame], list[Any]]] | None:
    """Expressions of one built-in aggregation, and how to read its accumulators back."""
    name = f"__agg{i}"

    def values(frame: pl.DataFrame) -> list[Any]:
        return frame.get_column(name).to_list()
    if type(agg) is Count:
        return [pl.len().alias(name)], values
    field = getattr(agg, "field", None)
    if field is None:
        return None
    col = pl.col(field)
    if field in kinds and kinds[field] in _WIDE:
        col = col.cast(_WIDE[kinds[field]])
    if type(agg) in (Sum, Min, Max):  # nulls are skipped, as in add()
        e = col.sum() if type(agg) is Sum else col.min() if type(agg) is Min else col.max()
        return [e.alias(name)], values
    if type(agg) is Mean:
        def pairs(frame: pl.DataFrame) -> list[Any]:
            return list(zip(frame.get_column(name).to_list(), frame.get_column(name + "n").to_list()))
        return [col.sum().cast(pl.Float64).alias(name), col.count().alias(name + "n")], pairs
    return None


def plan_for(pipeline: Pipeline) -> ColumnarPlan | None:
    """The fast-path plan of a pipeline, or None when it must take the row path."""
    src, stage = pipeline.source_spec, pipeline.window_stage
    if src is None or stage is None or type(src.codec) is not AvroCodec or src.codec.reader_schema:
        return None
    pane_ms = stage.spec.columnar_pane_ms()
    if pane_ms is None:  # sessions carry first and last event time, count windows offsets: row path
        return None
    decoder = BlockDecoder.for_schema(src.codec.schema)
    if decoder is None:
        return None
    steps, key = [], None
    for op in pipeline.steps:
        if isinstance(op, KeyBy) and op.field is not None:
            key = op.field
        elif isinstance(op, (Filter, Project)) and key is None:
            steps.append(op)
        else:
            return None
    if key is None:
        return None
    exprs: list[pl.Expr] = []
    columns = []
    kinds = {name: kind for name, kind, _ in decoder.fields}
    for i, agg in enumerate(stage.aggregations.values()):
        spec = _aggregation(i, agg, kinds)
        if spec is None:
            return None
        exprs += spec[0]
        columns.append(spec[1])
    on_time = pane_ms + stage.grace_ms + src.out_of_order_ms
    return ColumnarPlan(decoder, tuple(steps), key, src.timestamp, pane_ms, on_time,
                        tuple(exprs), tuple(columns))


def aggregate_batch(pipeline: Pipeline, messages: Sequence[RawMessage],
                    limits: Limits = Limits(), carry: int = NEVER) -> Partial | None:
    """The batch's `Partial` on columns, or None when the row path must do it (late records
    among them: the row path judges them one by one). `carry` is the partition's event time
    before the batch."""
    plan = plan_for(pipeline)
    if plan is None:
        return None
    out = Partial(records_in=len(messages), carry=carry)
    values = column(messages, "value")
    kafka_ts = column(messages, "timestamp_ms")
    if None in values:  # tombstones are counted and skipped
        kept = [i for i, v in enumerate(values) if v is not None]
        out.skipped = len(values) - len(kept)
        values = [values[i] for i in kept]
        kafka_ts = [kafka_ts[i] for i in kept]
    if not values:
        return out
    if _perhaps_too_large(values, column(messages, "key"), limits):
        return None  # the row path checks each record
    out.bytes_in = sum(map(len, values))
    df = plan.decoder.decode(values)
    if df is None:
        return None
    try:
        return _aggregate(plan, df, kafka_ts, limits, out)
    except Exception:  # noqa: BLE001 - a predicate or aggregation raised: the row path finds the record
        return None


def _perhaps_too_large(values: list[bytes], keys: list[bytes | None], limits: Limits) -> bool:
    return max(map(len, values)) + max((len(k) for k in keys if k is not None),
                                       default=0) > limits.max_record_bytes


def decode_rows(pipeline: Pipeline, messages: Sequence[RawMessage],
                limits: Limits = Limits()) -> list[tuple[int, dict[str, Any], int]] | None:
    """The batch as (offset, record, Kafka timestamp) rows, decoded in one columnar pass, for
    the row path's operators; None when a value is null, too large or not one record (then
    decode record by record), or the schema is not flat.

    >>> from stream.pipeline import Pipeline
    >>> p = Pipeline("t").source("in", {"type": "record", "name": "R", "fields": [
    ...      {"name": "k", "type": "string"}]})
    >>> decode_rows(p, [RawMessage(7, None, p.source_spec.codec.encode({"k": "a"}), 5)])
    [(7, {'k': 'a'}, 5)]
    """
    codec = pipeline.checked_source().codec
    if type(codec) is not AvroCodec or codec.reader_schema:
        return None
    decoder = BlockDecoder.for_schema(codec.schema)
    values = column(messages, "value")
    if decoder is None or not values or None in values or _perhaps_too_large(values, column(messages, "key"), limits):
        return None
    df = decoder.decode(values)
    if df is None:
        return None
    return list(zip(column(messages, "offset"), df.to_dicts(), column(messages, "timestamp_ms")))


def _aggregate(plan: ColumnarPlan, df: pl.DataFrame, kafka_ts: list[int], limits: Limits,
               out: Partial) -> Partial | None:
    df = df.with_columns(pl.Series(_KTS, kafka_ts, dtype=pl.Int64))
    if plan.timestamp is None:
        df = df.with_columns(pl.col(_KTS).alias(_TS))
    ts = df.get_column(_TS if plan.timestamp is None else plan.timestamp)
    if ts.dtype not in _INTEGER or ts.null_count() or cast(int, ts.min()) < 0:
        return None  # the row path dead-letters bad event times one by one
    df = df.with_columns(ts.cast(pl.Int64).alias(_TS))
    if (df.get_column(_TS) > df.get_column(_KTS) + limits.max_future_ms).any():
        return None  # event times too far ahead: the row path dead-letters them
    if any(df.get_column(c).is_nan().any() for c, t in df.schema.items() if t.is_float()):
        return None  # NaN compares and aggregates differently in polars: the row path decides
    rows = df.height
    df = _run_steps(plan, df)
    out.filtered = rows - df.height
    if df.height == 0:
        return out
    if df.get_column(plan.key).null_count():
        return None
    if limits.event_time_range is not None:  # a replay outside its time range
        lo, hi = limits.event_time_range
        rows = df.height
        df = df.filter((pl.col(_TS) >= lo) & (pl.col(_TS) < hi))
        out.outside = rows - df.height
        if df.height == 0:
            return out
    ts = df.get_column(_TS)
    before = ts.cum_max().shift(1, fill_value=out.carry).clip(lower_bound=out.carry)
    df = df.with_columns((pl.col(_TS) - pl.col(_TS) % plan.slide_ms).alias(_PANE))
    on_time = df.get_column(_PANE) + plan.on_time_ms
    if (before >= on_time).any():
        return None  # late records: the row path judges and routes them
    out.valid_below = cast(int, on_time.min())
    groups = df.group_by([plan.key, _PANE]).agg(*plan.exprs)
    out.max_ts = cast(int, ts.max())
    slots = zip(groups.get_column(plan.key).to_list(), groups.get_column(_PANE).to_list())
    columns = [build(groups) for build in plan.columns]
    out.partials = dict(zip(slots, map(list, zip(*columns))))
    out.windowed = df.height
    return out


def _run_steps(plan: ColumnarPlan, df: pl.DataFrame) -> pl.DataFrame:
    """Filters and projections, in order: an `Expr` predicate runs on columns, any other
    callable on the rows as dicts."""
    hidden = [c for c in (_TS, _KTS) if c in df.columns]
    rows: list[dict[str, Any]] | None = None
    for op in plan.steps:
        if isinstance(op, Project):
            df = df.select([*op.fields, *hidden])
            rows = None
            continue
        if isinstance(op.predicate, Expr):
            if any(df.get_column(c).null_count() for c in op.predicate.columns):
                raise ValueError("a null in a predicate's column")  # Python would raise: row path
            df = df.filter(op.predicate.to_polars())
            rows = None
            continue
        if rows is None:
            rows = df.drop(hidden).to_dicts()
        mask = [bool(op.predicate(r)) for r in rows]
        df = df.filter(pl.Series(mask, dtype=pl.Boolean))
        rows = [r for r, keep in zip(rows, mask) if keep]
    return df
