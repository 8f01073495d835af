"""A realistic, reproducible payment stream for the demo, the tests and the benchmark.

Users with their own spending level, merchants, countries; event times advance steadily
with up to `disorder_ms` of disorder. Records are keyed and partitioned by user, as a
keyed window requires.

>>> g = PaymentGenerator(users=10, seed=1)
>>> p = next(g.records(1)); sorted(p)
['amount', 'country', 'currency', 'merchant_id', 'payment_id', 'ts', 'user_id']
>>> next(PaymentGenerator(clock=lambda: 5_000, disorder_ms=0).records(1))["ts"]  # a live clock
5000
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

COUNTRIES = ["DE", "FR", "NL", "ES", "IT", "PL", "SE", "GB", "US", "IE"]


def partition_of(key: str, partitions: int) -> int:
    """Stable partition of a key (crc32), the same in every process."""
    return zlib.crc32(key.encode()) % partitions


@dataclass
class PaymentGenerator:
    """Deterministic card payments for the demo and the tests: the same seed, the same records."""

    users: int = 1_000
    merchants: int = 200
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    step_ms: float = 20.0              # event time advance per record on average
    disorder_ms: int = 2_000
    seed: int = 7
    clock: Callable[[], int] | None = None  # event time from this clock (ms), not from the steps

    def records(self, n: int) -> Iterator[dict[str, Any]]:
        rng = random.Random(self.seed)
        scale = [rng.lognormvariate(3.0, 0.8) for _ in range(self.users)]
        home = [rng.choice(COUNTRIES) for _ in range(self.users)]
        for i in range(n):
            u = rng.randrange(self.users)
            amount = round(rng.expovariate(1.0 / scale[u]), 2)
            if rng.random() < 0.002:
                amount = -amount  # refunds: the demo pipeline filters them out
            now = self.clock() if self.clock is not None else self.start_ms + int(i * self.step_ms)
            ts = now - rng.randrange(self.disorder_ms + 1)
            yield {"payment_id": f"p{self.seed}-{i}", "user_id": f"u{u:05d}",
                   "merchant_id": f"m{rng.randrange(self.merchants):04d}", "amount": amount,
                   "currency": "EUR",
                   "country": home[u] if rng.random() < 0.97 else rng.choice(COUNTRIES), "ts": ts}


class Records(Protocol):
    """What `produce_payments` draws from: `PaymentGenerator`, or an example's own generator."""

    def records(self, n: int) -> Iterator[dict[str, Any]]: ...


def produce_payments(config: dict[str, Any], topic: str, n: int, partitions: int,
                     codec: Any, generator: Records | None = None,
                     progress: Any = None, rate: float | None = None,
                     should_stop: Any = lambda: False, keep: bool = True) -> list[dict[str, Any]]:
    """Encode and produce up to `n` payments (at most `rate` per second); returns them
    (an empty list with `keep=False`, for long runs)."""
    import time

    from confluent_kafka import Producer

    from stream.secrets import reveal_config

    producer = Producer(reveal_config({**config, "linger.ms": 20, "batch.num.messages": 10_000,
                                       "queue.buffering.max.messages": 500_000}))
    out: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for i, rec in enumerate((generator or PaymentGenerator()).records(n)):
        if i % 1000 == 0:
            if should_stop():
                break
            if rate:
                time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        key = rec["user_id"]
        while True:
            try:
                producer.produce(topic, codec.encode(rec), key.encode(),
                                 partition=partition_of(key, partitions), timestamp=rec["ts"])
                break
            except BufferError:
                producer.poll(0.05)
        if keep:
            out.append(rec)
        if i % 10_000 == 0:
            producer.poll(0)
            if progress:
                progress(i)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} payments not acknowledged by {config['bootstrap.servers']}")
    return out
