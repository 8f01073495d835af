"""Benchmark: our pipeline vs a hand-written confluent-kafka + fastavro loop, in one run.

Generates N payments (4 partitions, 10,000 keys, event time advancing ~10,000 records per
second with up to 2 s disorder) into the embedded broker, then measures
  (a) baseline: one process per core, each consuming its share of partitions with
      confluent-kafka, decoding with fastavro and aggregating 10 s tumbling windows in a dict;
  (b) the pipeline: the same computation on a local Dask cluster of 2 workers, results
      written to an output topic;
checks both results window by window, and writes bench/results/latest.json.

    python bench/run.py --records 1000000
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing as mp
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators import Count, Max, Sum, col  # noqa: E402
from stream.pipeline import Pipeline  # noqa: E402
from stream.windows.specs import Tumbling  # noqa: E402

WINDOW_MS, PARTITIONS, KEYS = 10_000, 4, 10_000
OUT_SCHEMA = {"type": "record", "name": "BenchOut", "fields": [
    {"name": "user_id", "type": "string"}, {"name": "window_start", "type": "long"},
    {"name": "window_end", "type": "long"}, {"name": "n", "type": "long"},
    {"name": "total", "type": "double"}, {"name": "largest", "type": ["null", "double"]}]}


def bench_pipeline(src: str, out: str) -> Pipeline:
    return (Pipeline("bench").source(src, schema="schemas/payment.avsc", timestamp="ts")
            .filter(col("amount") > 0).key_by("user_id")
            .window(Tumbling(WINDOW_MS), grace=2_000,
                    aggregate={"n": Count(), "total": Sum("amount"), "largest": Max("amount")})
            .sink(out, schema=OUT_SCHEMA))


def baseline_worker(bootstrap: str, topic: str, partitions: list[int], schema: dict, q) -> None:
    """What a skilled engineer writes by hand: consume, decode, aggregate in a dict."""
    import fastavro
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    parsed = fastavro.parse_schema(schema)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "baseline", "enable.auto.commit": False,
                  "enable.partition.eof": True, "fetch.queue.backoff.ms": 10, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in partitions])
    acc: dict[tuple[str, int], list] = {}
    left, n = set(partitions), 0
    read = fastavro.schemaless_reader
    while left:
        for m in c.consume(10_000, 0.5):
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    left.discard(m.partition())
                continue
            r = read(io.BytesIO(m.value()), parsed, None)
            n += 1
            if r["amount"] <= 0:
                continue
            k = (r["user_id"], r["ts"] - r["ts"] % WINDOW_MS)
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


def run_baseline(bootstrap: str, topic: str, schema: dict, procs: int) -> tuple[float, int, dict]:
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    shares = [[p for p in range(PARTITIONS) if p % procs == i] for i in range(procs)]
    t0 = time.perf_counter()
    workers = [ctx.Process(target=baseline_worker, args=(bootstrap, topic, s, schema, q)) for s in shares]
    for w in workers:
        w.start()
    results = [q.get() for _ in workers]
    elapsed = time.perf_counter() - t0
    for w in workers:
        w.join()
    merged: dict = {}
    for _, acc in results:
        merged.update(acc)  # keys live in one partition, so shares never overlap
    return elapsed, sum(n for n, _ in results), merged


class RssSampler(threading.Thread):
    """Peak resident memory of this process plus its children (the Dask workers)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import psutil

        self.proc, self.peak, self.stop_flag = psutil.Process(), 0, threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            try:
                total = self.proc.memory_info().rss + sum(
                    c.memory_info().rss for c in self.proc.children(recursive=True))
                self.peak = max(self.peak, total)
            except Exception:  # a child exited between listing and reading
                pass
            time.sleep(0.2)


def compare(baseline: dict, rows: list[dict]) -> list[str]:
    got = {(r["user_id"], r["window_start"]): r for r in rows}
    problems = [f"missing {k}" for k in baseline if k not in got]
    problems += [f"unexpected {k}" for k in got if k not in baseline]
    for k, (n, total, largest) in baseline.items():
        r = got.get(k)
        if r and (r["n"] != n or not math.isclose(r["total"], total, rel_tol=1e-9, abs_tol=1e-9)
                  or r["largest"] != largest):
            problems.append(f"{k}: pipeline {r}, baseline {(n, total, largest)}")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    args = ap.parse_args()

    from stream.admin import ensure_topic
    from stream.broker import EmbeddedBroker
    from stream.codecs.schemas import load_schema
    from stream.config import KafkaConfig, RunConfig
    from stream.execution.dask import DaskExecutor
    from stream.generator import PaymentGenerator, produce_payments
    from stream.progress import Progress
    from stream.runner import PipelineRun
    from stream.sources.kafka import close_pool, read_all

    with EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap)
        src, out = "bench-in", "bench-out"
        ensure_topic(kafka.client(), src, PARTITIONS)
        ensure_topic(kafka.client(), out, PARTITIONS)
        pipeline = bench_pipeline(src, out)
        print(f"generating {args.records:,} payments into {src} ...", flush=True)
        t0 = time.perf_counter()
        produce_payments(kafka.producer(), src, args.records, PARTITIONS, pipeline.source_spec.codec,
                         PaymentGenerator(users=KEYS, step_ms=0.1, disorder_ms=2_000, seed=1),
                         progress=lambda i: i % 200_000 == 0 and print(f"  {i:,}", flush=True))
        print(f"  produced in {time.perf_counter() - t0:.1f} s", flush=True)

        print(f"baseline: {args.workers} processes, confluent-kafka + fastavro + dict ...", flush=True)
        base_s, base_n, base = run_baseline(broker.bootstrap, src, load_schema("schemas/payment.avsc"),
                                            args.workers)
        print(f"  {base_n:,} records in {base_s:.2f} s = {base_n / base_s:,.0f} records/s", flush=True)

        print(f"pipeline: Dask local cluster of {args.workers} workers ...", flush=True)
        executor = DaskExecutor(workers=args.workers)
        sampler = RssSampler()
        sampler.start()
        try:
            config = RunConfig(app_id="bench", kafka=kafka, workers=args.workers)
            with PipelineRun(pipeline, config, executor) as run:
                progress = Progress(every_s=2.0)
                t0 = time.perf_counter()
                assigned = []

                def on_step(d):
                    if d.parts and not assigned:
                        assigned.append(time.perf_counter())
                    progress.update(d.stats.records_in, d.stats.records_out, d.lag(), d.open_windows())
                import psutil
                me = psutil.Process()
                kids = me.children(recursive=True)
                c0 = me.cpu_times(), [k.cpu_times() for k in kids]
                import cProfile
                prof = cProfile.Profile() if os.environ.get("BENCH_PROFILE") else None
                prof and prof.enable()
                stats = run.driver.run(until=lambda d: d.stats.records_in >= args.records and d.caught_up(),
                                       drain=True, on_step=on_step)
                if prof:
                    prof.disable(); prof.dump_stats(os.environ["BENCH_PROFILE"])
                c1 = me.cpu_times(), [k.cpu_times() for k in kids]
                print("driver cpu", c1[0].user - c0[0].user + c1[0].system - c0[0].system,
                      "workers cpu", [round(b.user - a.user + b.system - a.system, 2) for a, b in zip(c0[1], c1[1])])
                pipe_s = time.perf_counter() - assigned[0]
                print("start-up", assigned[0] - t0)
                progress.done()
        finally:
            sampler.stop_flag.set()
            executor.close()
        print(f"  {stats.records_in:,} records in {pipe_s:.2f} s = {stats.records_in / pipe_s:,.0f} records/s",
              flush=True)

        codec = pipeline.sink_spec.codec
        rows = [codec.decode(m.value) for p in range(PARTITIONS)
                for m in read_all(kafka.consumer({"group.id": "bench-check"}), out, p)]
        problems = compare(base, rows)
        close_pool()  # this process's pooled readers go before their broker does

    result = {
        "records": args.records, "workers": args.workers, "windows": len(base),
        "baseline_rps": round(base_n / base_s), "pipeline_rps": round(stats.records_in / pipe_s),
        "ratio": round((stats.records_in / pipe_s) / (base_n / base_s), 3),
        "baseline_seconds": round(base_s, 3), "pipeline_seconds": round(pipe_s, 3),
        "pipeline_peak_rss_mib": round(sampler.peak / 2**20, 1),
        "windows_checked": len(rows), "mismatches": len(problems),
        "guarantee": "at_least_once", "cpu_count": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if problems:
        print(f"MISMATCH: {len(problems)} windows differ, e.g. {problems[:5]}", file=sys.stderr)
        return 1
    print(f"all {len(rows):,} windows match the baseline; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
