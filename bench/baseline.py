"""What a skilled engineer writes by hand: confluent-kafka + fastavro, one process per core.

`run_windowed` aggregates 10 s tumbling windows in a dict (no output, no commits: the
pipeline does strictly more), per user or (a re-keyed window) per merchant, the processes'
dicts merged at the end; `run_stateless` decodes, maps, encodes and produces each
record. Each process consumes its share of the partitions with `assign()`. Processes are
spawned (forking a process that runs Dask and librdkafka threads can deadlock), and the clock
starts once every process has imported its libraries and created its clients.

    elapsed, records, windows = run_windowed(bootstrap, "in", schema, procs=2)
"""

from __future__ import annotations

import io
import multiprocessing as mp
import time
from typing import Any

from bench.workloads import PARTITIONS, WINDOW_MS, stateless_out, to_cents


def _consumer(bootstrap: str, topic: str, partitions: list[int]) -> Any:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "baseline", "enable.auto.commit": False,
                  "enable.partition.eof": True, "fetch.queue.backoff.ms": 10,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in partitions])
    return c


def _batches(c: Any, partitions: list[int]):
    """The records of each consume() call, until every partition reached its end."""
    from confluent_kafka import KafkaError

    left = set(partitions)
    while left:
        batch = []
        for m in c.consume(10_000, 0.5):
            if m.error() is None:
                batch.append(m)
            elif m.error().code() == KafkaError._PARTITION_EOF:
                left.discard(m.partition())
        if batch:
            yield batch


def _messages(c: Any, partitions: list[int]):
    for batch in _batches(c, partitions):
        yield from batch


def _producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10_000,
                     "queue.buffering.max.messages": 500_000, "enable.idempotence": True})


def _ready(bootstrap: str, topic: str, partitions: list[int], q: Any, go: Any) -> tuple[Any, Any]:
    """A consumer of `partitions` and a producer; then report ready and wait for the start."""
    c, p = _consumer(bootstrap, topic, partitions), _producer(bootstrap)
    q.put("ready")
    go.wait()
    return c, p


def _send(p: Any, topic: str, value: bytes, m: Any) -> None:
    """Produce `value` with the input message's key to its partition, waiting out a full queue."""
    while True:
        try:
            p.produce(topic, value, m.key(), partition=m.partition())
            return
        except BufferError:
            p.poll(0.05)


def windowed_worker(bootstrap: str, topic: str, partitions: list[int], schema: dict, q: Any,
                    go: Any, key: str = "user_id") -> None:
    import fastavro

    parsed = fastavro.parse_schema(schema)
    read = fastavro.schemaless_reader
    c = _consumer(bootstrap, topic, partitions)
    q.put("ready")
    go.wait()
    acc: dict[tuple[str, int], list] = {}
    n = 0
    for m in _messages(c, partitions):
        r = read(io.BytesIO(m.value()), parsed, None)
        n += 1
        if r["amount"] <= 0:
            continue
        k = (r[key], r["ts"] - r["ts"] % WINDOW_MS)
        a = acc.get(k)
        if a is None:
            acc[k] = [1, r["amount"], r["amount"]]
        else:
            a[0] += 1
            a[1] += r["amount"]
            if r["amount"] > a[2]:
                a[2] = r["amount"]
    c.close()
    q.put((n, acc))


def stateless_worker(bootstrap: str, topic: str, partitions: list[int], schema: dict, q: Any,
                     go: Any, out: str) -> None:
    import fastavro

    parsed, parsed_out = fastavro.parse_schema(schema), fastavro.parse_schema(stateless_out(schema))
    read, write = fastavro.schemaless_reader, fastavro.schemaless_writer
    c, p = _ready(bootstrap, topic, partitions, q, go)
    n = 0
    for m in _messages(c, partitions):
        buf = io.BytesIO()
        write(buf, parsed_out, to_cents(read(io.BytesIO(m.value()), parsed, None)))
        _send(p, out, buf.getvalue(), m)
        n += 1
        if n % 10_000 == 0:
            p.poll(0)
    p.flush(60)
    c.close()
    q.put((n, {}))


def scoring_worker(bootstrap: str, topic: str, partitions: list[int], schema: dict, q: Any,
                   go: Any, out: str, out_schema: dict, model_path: str) -> None:
    """Per-payment scoring by hand: decode each consumed batch, one feature array and one
    predict_proba call per batch, encode and produce one score per payment."""
    import hashlib

    import fastavro
    import joblib

    from examples.fraud.pipelines import PAYMENT_FEATURES
    from operators import Features

    data = open(model_path, "rb").read()
    model, version = joblib.load(model_path), hashlib.sha256(data).hexdigest()[:12]
    features = Features(PAYMENT_FEATURES)
    parsed, parsed_out = fastavro.parse_schema(schema), fastavro.parse_schema(out_schema)
    read, write = fastavro.schemaless_reader, fastavro.schemaless_writer
    c, p = _ready(bootstrap, topic, partitions, q, go)
    n = 0
    for batch in _batches(c, partitions):
        records = [read(io.BytesIO(m.value()), parsed, None) for m in batch]
        scores = model.predict_proba(features.matrix(records))[:, 1].tolist()
        for m, r, score in zip(batch, records, scores):
            buf = io.BytesIO()
            write(buf, parsed_out, {"payment_id": r["payment_id"], "user_id": r["user_id"],
                                    "amount": r["amount"], "ts": r["ts"], "score": score,
                                    "model_version": version})
            _send(p, out, buf.getvalue(), m)
        n += len(batch)
        p.poll(0)
    p.flush(60)
    c.close()
    q.put((n, {}))


def _run(target: Any, procs: int, *args: Any) -> tuple[float, int, dict]:
    ctx = mp.get_context("spawn")
    q, go = ctx.Queue(), ctx.Event()
    shares = [[p for p in range(PARTITIONS) if p % procs == i] for i in range(procs)]
    workers = [ctx.Process(target=target, args=(args[0], args[1], s, args[2], q, go, *args[3:]))
               for s in shares]
    for w in workers:
        w.start()
    for _ in workers:
        q.get(timeout=120)  # "ready"
    t0 = time.perf_counter()
    go.set()
    results = [q.get() for _ in workers]
    elapsed = time.perf_counter() - t0
    for w in workers:
        w.join()
    merged: dict = {}
    for _, acc in results:  # a key of several partitions (a re-keyed window) is in several shares
        for k, (n, total, largest) in acc.items():
            a = merged.get(k)
            merged[k] = [n, total, largest] if a is None else [a[0] + n, a[1] + total, max(a[2], largest)]
    return elapsed, sum(n for n, _ in results), merged


def run_windowed(bootstrap: str, topic: str, schema: dict, procs: int,
                 key: str = "user_id") -> tuple[float, int, dict]:
    """(seconds, records, {(key, window start): [n, total, largest]})."""
    return _run(windowed_worker, procs, bootstrap, topic, schema, key)


def run_scoring(bootstrap: str, topic: str, schema: dict, procs: int, out: str, out_schema: dict,
                model_path: str) -> tuple[float, int]:
    """(seconds, records) to score every payment of `topic` with the model and produce it to `out`."""
    elapsed, n, _ = _run(scoring_worker, procs, bootstrap, topic, schema, out, out_schema, model_path)
    return elapsed, n


def run_stateless(bootstrap: str, topic: str, schema: dict, procs: int, out: str) -> tuple[float, int]:
    """(seconds, records) to decode, map, encode and produce every record to `out`."""
    elapsed, n, _ = _run(stateless_worker, procs, bootstrap, topic, schema, out)
    return elapsed, n
