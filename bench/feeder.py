"""A paced payment producer in its own process, for the latency and soak runs.

Producing from a thread of the benchmark process shared the GIL with the driver and topped
out near 20k records/s, far below the rates asked for. This process encodes a pool of
payments once, then cycles through it, appending only each record's event time (the last
field of `payment.avsc`, a zig-zag varint), so it costs a few µs per record. It records,
per partition, the wall time at which the partition's largest event time first reached each
multiple of `--boundary-ms`: when the record closing a window was produced.

    python -m bench.feeder --bootstrap 127.0.0.1:9092 --topic lat-in --rate 80000 \
        --seconds 20 --out /tmp/feed.json

The JSON written to --out: {"sent", "seconds", "crossings": {partition: [[t, wall], ...]}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.codecs.avro_block import _zigzag_long

POOL = 200_000  # distinct payments, cycled with their event times shifted
# The embedded broker's cost to serve a fetch grows with the number of record batches stored in
# the partition, so many small batches make it slower minute by minute while the rate stays the
# same: with 4 tailing consumers at 27.8k records/s its CPU went from 17% to 112% in one minute at
# linger.ms=2, and stayed near 20% at linger.ms=50. Producers batch like this in production too.
LINGER_MS = 50


def zigzag_long(n: int) -> bytes:
    """Avro's encoding of a long.

    >>> zigzag_long(0), zigzag_long(-1), zigzag_long(150)
    (b'\\x00', b'\\x01', b'\\xac\\x02')
    >>> import fastavro, io; buf = io.BytesIO(); fastavro.schemaless_writer(buf, "long", 1767225600123)
    >>> zigzag_long(1767225600123) == buf.getvalue()
    True
    """
    z = (n << 1) ^ (n >> 63)
    if 1 << 35 <= z < 1 << 42:  # epoch milliseconds of this century: six bytes, unrolled
        return bytes(((z & 0x7F) | 0x80, (z >> 7 & 0x7F) | 0x80, (z >> 14 & 0x7F) | 0x80,
                      (z >> 21 & 0x7F) | 0x80, (z >> 28 & 0x7F) | 0x80, z >> 35))
    return _zigzag_long(n)


def payment_pool(users: int, seed: int, step_ms: float, partitions: int, size: int = POOL
                 ) -> tuple[list[tuple[bytes, bytes, int, int]], int]:
    """(value without its event time, key, partition, event time offset) per payment, and the
    event time span of the pool."""
    from stream.app.generator import PaymentGenerator, partition_of
    from stream.codecs.avro import AvroCodec
    from stream.codecs.schemas import load_schema

    schema = load_schema(ROOT / "schemas" / "payment.avsc")
    assert schema["fields"][-1]["name"] == "ts", "the feeder appends ts: it must be the last field"
    codec = AvroCodec(schema)
    gen = PaymentGenerator(users=users, step_ms=step_ms, disorder_ms=2_000, seed=seed, start_ms=0)
    pool = []
    for rec in gen.records(size):
        ts, rec["ts"] = rec["ts"], 0
        key = rec["user_id"]
        pool.append((codec.encode(rec)[:-1], key.encode(), partition_of(key, partitions), ts))
    return pool, int(size * step_ms)


def feed(bootstrap: str, topic: str, rate: float, seconds: float, partitions: int = 4,
         users: int = 10_000, seed: int = 5, step_ms: float = 0.1, boundary_ms: int = 1_000,
         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Produce at `rate` records/s for `seconds`, event time starting now; see the module doc."""
    from confluent_kafka import Producer

    pool, span = payment_pool(users, seed, step_ms, partitions)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2,
                         "queue.buffering.max.messages": 1_000_000, **(extra or {})})
    start_ms = int(time.time() * 1000)
    top = [-1] * partitions
    nxt = [-(-start_ms // boundary_ms) * boundary_ms] * partitions  # the first boundary ahead
    crossings: dict[int, list[list[float]]] = {p: [] for p in range(partitions)}
    produce, t0, i = producer.produce, time.monotonic(), 0
    total = int(rate * seconds)
    while i < total:
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        producer.poll(0)
        for j in range(i, min(i + 1_000, total)):
            cycle, at = divmod(j, len(pool))
            value, key, part, offset = pool[at]
            ts = start_ms + cycle * span + offset
            while True:
                try:
                    produce(topic, value + zigzag_long(ts), key, partition=part)
                    break
                except BufferError:
                    producer.poll(0.01)
            if ts > top[part]:
                top[part] = ts
                if ts >= nxt[part]:
                    wall = time.time()
                    while nxt[part] <= ts:
                        crossings[part].append([nxt[part], wall])
                        nxt[part] += boundary_ms
        i = min(i + 1_000, total)
    left = producer.flush(60)
    elapsed = time.monotonic() - t0
    if left:
        raise RuntimeError(f"{left} records not acknowledged by {bootstrap}")
    return {"sent": total, "seconds": round(elapsed, 3), "crossings": crossings}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--rate", type=float, required=True, help="records per second")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--boundary-ms", type=int, default=1_000)
    ap.add_argument("--linger-ms", type=int, default=LINGER_MS,
                    help="the producer's linger.ms: how long it gathers records into one batch")
    ap.add_argument("--step-ms", type=float, default=0.1,
                    help="event time between consecutive payments (1000/rate: event time keeps pace "
                         "with the wall clock)")
    ap.add_argument("--out", required=True, help="where to write the JSON summary")
    a = ap.parse_args()
    result = feed(a.bootstrap, a.topic, a.rate, a.seconds, a.partitions, step_ms=a.step_ms,
                  boundary_ms=a.boundary_ms, extra={"linger.ms": a.linger_ms})
    Path(a.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
