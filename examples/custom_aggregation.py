"""A user-defined aggregation: the spread (max - min) of a field, and a pipeline using it.

Implement `create / add / merge / result` (see `operators.Aggregation` for the rules);
`merge` must not change its arguments, and accumulators are plain values (numbers, tuples,
lists, dicts), which the changelog's typed state format stores.

    .venv/bin/stream run examples.custom_aggregation:pipeline --bootstrap 127.0.0.1:9092 --create-topics 4

>>> s = Spread("amount")
>>> s.result(s.merge(s.add(s.create(), [3.0, 9.5]), s.add(s.create(), [1.0])))
8.5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from operators import Aggregation, ApproxQuantile, Count
from stream.pipeline import Pipeline
from stream.windows.specs import Tumbling, seconds


@dataclass(frozen=True)
class Spread(Aggregation):
    """max - min of a numeric field; None for a window without values."""

    field: str

    def create(self) -> tuple[float, float] | None:
        return None  # (low, high), or None before the first value

    def add(self, acc: tuple[float, float] | None, values: Iterable[Any]) -> tuple[float, float] | None:
        for v in values:
            if v is not None:
                acc = (v, v) if acc is None else (min(acc[0], v), max(acc[1], v))
        return acc

    def merge(self, a: tuple[float, float] | None, b: tuple[float, float] | None) -> tuple[float, float] | None:
        if a is None or b is None:
            return a if b is None else b
        return (min(a[0], b[0]), max(a[1], b[1]))

    def result(self, acc: tuple[float, float] | None) -> float | None:
        return None if acc is None else acc[1] - acc[0]


SPREAD_SCHEMA = {
    "type": "record", "name": "UserSpread", "fields": [
        {"name": "user_id", "type": "string"},
        {"name": "window_start", "type": "long"},
        {"name": "window_end", "type": "long"},
        {"name": "n", "type": "long"},
        {"name": "spread", "type": ["null", "double"]},
        {"name": "p90", "type": ["null", "double"]},
    ]}


def pipeline() -> Pipeline:
    """Per user and minute: payments, the spread of amounts and their approximate 90th percentile."""
    return (
        Pipeline("user-spread")
        .source("payments", schema="schemas/payment.avsc", timestamp="ts")
        .key_by("user_id")
        .window(Tumbling(minutes=1), grace=seconds(5),
                aggregate={"n": Count(), "spread": Spread("amount"), "p90": ApproxQuantile("amount", 0.9)})
        .sink("user-spread-1m", schema=SPREAD_SCHEMA)
    )
