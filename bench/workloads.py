"""The benchmark's data and pipelines: payments (the headline) and sized events (curves).

    from bench.workloads import windowed, fill_payments
"""

from __future__ import annotations

import random
import time
from typing import Any

from operators import Count, Max, Sum, col
from stream.app.generator import PaymentGenerator, partition_of, produce_payments
from stream.pipeline import Pipeline
from stream.windows.specs import Hopping, Tumbling

WINDOW_MS, GRACE_MS, PARTITIONS = 10_000, 2_000, 4
PAYMENT = "schemas/payment.avsc"
WINDOW_OUT = {"type": "record", "name": "BenchOut", "fields": [
    {"name": "user_id", "type": "string"}, {"name": "window_start", "type": "long"},
    {"name": "window_end", "type": "long"}, {"name": "n", "type": "long"},
    {"name": "total", "type": "double"}, {"name": "largest", "type": ["null", "double"]}]}
REKEYED_OUT = {**WINDOW_OUT, "name": "BenchRekeyed",
               "fields": [{"name": "merchant_id", "type": "string"}, *WINDOW_OUT["fields"][1:]]}
EVENT = {"type": "record", "name": "Event", "fields": [
    {"name": "user_id", "type": "string"}, {"name": "amount", "type": "double"},
    {"name": "ts", "type": "long"}, {"name": "payload", "type": "string"}]}


def stateless_out(schema: dict[str, Any]) -> dict[str, Any]:
    """The stateless pipeline's output schema: the input plus `amount_cents`."""
    return {**schema, "name": "Scored",
            "fields": schema["fields"] + [{"name": "amount_cents", "type": "long"}]}


def windowed(src: str, out: str, slide_ms: int = WINDOW_MS, size_ms: int = WINDOW_MS,
             schema: Any = PAYMENT) -> Pipeline:
    """Per-user count, sum and max of positive amounts over hopping (or tumbling) windows."""
    return (Pipeline("bench").source(src, schema=schema, timestamp="ts")
            .filter(col("amount") > 0).key_by("user_id")
            .window(Hopping(size_ms, slide=slide_ms), grace=GRACE_MS,
                    aggregate={"n": Count(), "total": Sum("amount"), "largest": Max("amount")})
            .sink(out, schema=WINDOW_OUT))


def rekeyed(src: str, out: str) -> Pipeline:
    """The windowed workload per merchant over payments keyed by user: through a repartition topic."""
    return (Pipeline("bench-rekeyed").source(src, schema=PAYMENT, timestamp="ts", keyed_by="user_id")
            .filter(col("amount") > 0).key_by("merchant_id")
            .window(Tumbling(WINDOW_MS), grace=GRACE_MS,
                    aggregate={"n": Count(), "total": Sum("amount"), "largest": Max("amount")})
            .sink(out, schema=REKEYED_OUT))


def to_cents(r: dict[str, Any]) -> dict[str, Any]:
    """The stateless pipeline's map (a plain function, so the baseline uses the same one)."""
    return {**r, "amount_cents": int(round(r["amount"] * 100))}


def stateless(src: str, out: str, schema: dict[str, Any]) -> Pipeline:
    """decode → map → encode → produce, one output per input."""
    return (Pipeline("bench-stateless").source(src, schema=schema, timestamp="ts")
            .map(to_cents).sink(out, schema=stateless_out(schema)))


def fill_payments(kafka: Any, topic: str, n: int, keys: int, codec: Any, rate: float | None = None,
                  should_stop: Any = lambda: False, on_sent: Any = None) -> None:
    """Produce `n` payments over `keys` users (event time ~10,000 records per second)."""
    produce_payments(kafka.producer(), topic, n, PARTITIONS, codec,
                     PaymentGenerator(users=keys, step_ms=0.1, disorder_ms=2_000, seed=1),
                     rate=rate, should_stop=should_stop, progress=on_sent, keep=False)


def fill_events(kafka: Any, topic: str, n: int, keys: int, payload_bytes: int, codec: Any) -> int:
    """Produce `n` events whose encoded size is about `payload_bytes` + 20; returns that size."""
    from confluent_kafka import Producer

    rng = random.Random(3)
    p = Producer(kafka.producer({"linger.ms": 20, "batch.num.messages": 10_000,
                                 "queue.buffering.max.messages": 500_000}))
    pad = "x" * max(0, payload_bytes)
    start, size = 1_767_225_600_000, 0
    for i in range(n):
        user = f"u{rng.randrange(keys):07d}"
        value = codec.encode({"user_id": user, "amount": round(rng.expovariate(0.05), 2),
                              "ts": start + i // 10 - rng.randrange(2_000), "payload": pad})
        size = len(value)
        while True:
            try:
                p.produce(topic, value, user.encode(), partition=partition_of(user, PARTITIONS))
                break
            except BufferError:
                p.poll(0.05)
        if i % 10_000 == 0:
            p.poll(0)
    if p.flush(120):
        raise RuntimeError(f"events not acknowledged by {kafka.bootstrap}")
    return size


def paced(rate: float):
    """A sleeper that keeps a loop at `rate` iterations per second."""
    t0 = time.monotonic()

    def wait(i: int) -> None:
        time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
    return wait
