"""`stream demo`: the embedded broker, a local Dask cluster and metrics, a generated payment
stream, a windowed pipeline, live progress, sample results and a check of every window.

>>> demo_pipeline().window_stage.spec.size_ms
60000
"""

from __future__ import annotations

import math
import sys
import threading
import time
from typing import Any

from operators import Count, Max, Mean, Sum
from stream.pipeline import Pipeline
from stream.windows.specs import Tumbling, seconds

INPUT, OUTPUT, PARTITIONS = "payments", "user-spend-1m", 4
WINDOW_MS = 60_000


def demo_pipeline() -> Pipeline:
    """Per-user spend over 1-minute event-time windows; refunds (amount <= 0) are filtered out."""
    return (
        Pipeline("user-spend")
        .source(INPUT, schema="schemas/payment.avsc", timestamp="ts", keyed_by="user_id")
        .filter(lambda r: r["amount"] > 0)
        .key_by("user_id")
        .window(Tumbling(minutes=1), grace=seconds(5),
                aggregate={"n": Count(), "total": Sum("amount"), "largest": Max("amount"),
                           "mean": Mean("amount")})
        .sink(OUTPUT, schema="schemas/user_spend.avsc")
    )


def expected_windows(payments: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """An independent recomputation of the demo's windows from the generated payments."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for p in payments:
        if p["amount"] <= 0:
            continue
        w = out.setdefault((p["user_id"], p["ts"] // WINDOW_MS * WINDOW_MS),
                           {"n": 0, "total": 0.0, "largest": -math.inf})
        w["n"] += 1
        w["total"] += p["amount"]
        w["largest"] = max(w["largest"], p["amount"])
    for w in out.values():
        w["mean"] = w["total"] / w["n"]
    return out


def compare_windows(expected: dict[tuple[str, int], dict[str, Any]],
                    actual: list[dict[str, Any]]) -> list[str]:
    """Every difference between expected and emitted windows (empty when all match)."""
    problems: list[str] = []
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    for r in actual:
        k = (r["user_id"], r["window_start"])
        if k in seen:
            problems.append(f"duplicate window {k}")
        seen[k] = r
    for k, want in expected.items():
        got = seen.get(k)
        if got is None:
            problems.append(f"missing window {k}")
            continue
        for f, v in want.items():
            if not math.isclose(got[f], v, rel_tol=1e-9, abs_tol=1e-6):
                problems.append(f"window {k}: {f} is {got[f]}, expected {v}")
    problems += [f"unexpected window {k}" for k in seen if k not in expected]
    return problems


def _print_samples(rows: list[dict[str, Any]], n: int = 8) -> None:
    print(f"\nsample results from topic {OUTPUT!r} ({len(rows):,} windows):")
    print(f"  {'user_id':<8} {'window (UTC)':<19} {'n':>4} {'total':>10} {'largest':>9} {'mean':>8}")
    for r in sorted(rows, key=lambda r: (-r["n"], r["window_start"]))[:n]:
        start = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["window_start"] / 1000))
        print(f"  {r['user_id']:<8} {start:<19} {r['n']:>4} {r['total']:>10.2f} "
              f"{r['largest']:>9.2f} {r['mean']:>8.2f}")


def run_demo(records: int = 200_000, duration_s: float | None = None, workers: int = 2,
             metrics_port: int | None = 9108, local: bool = False, rate: float | None = None,
             metrics_addr: str = "127.0.0.1") -> int:
    """Run the whole demo; returns the exit code (0 when every window matched)."""
    from stream.app.admin import ensure_topic
    from stream.app.broker import EmbeddedBroker
    from stream.app.cli import StopFlag
    from stream.app.generator import produce_payments
    from stream.app.progress import Progress, Status
    from stream.app.run import PipelineRun, make_executor
    from stream.config import KafkaConfig, RunConfig
    from stream.sources.kafka import close_pool, read_all

    pipeline = demo_pipeline()
    stop = StopFlag()
    print("starting the embedded Kafka broker...", flush=True)
    with EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap)
        for topic in (INPUT, OUTPUT):
            ensure_topic(kafka.client(), topic, PARTITIONS)
        config = RunConfig(app_id="user-spend", kafka=kafka, workers=workers, metrics_port=metrics_port,
                           metrics_addr=metrics_addr)
        print(f"broker at {broker.bootstrap}; starting {'in-process tasks' if local else f'a Dask cluster of {workers} workers'}...",
              flush=True)
        executor = make_executor(config, local=local)
        produced: list[dict[str, Any]] = []
        limit = records if duration_s is None else 10**12
        t_end = None if duration_s is None else time.monotonic() + duration_s
        gen_done = threading.Event()

        def generate() -> None:
            try:
                produced.extend(produce_payments(
                    kafka.producer(), INPUT, limit, PARTITIONS, pipeline.validate().source.codec, rate=rate,
                    should_stop=lambda: stop() or (t_end is not None and time.monotonic() > t_end)))
            finally:
                gen_done.set()

        try:
            with PipelineRun(pipeline, config, executor) as run:
                print(f"{executor.describe()}; status page at http://{metrics_addr}:{run.metrics_port}/ "
                      f"(metrics at /metrics)"
                      if metrics_port is not None else executor.describe(), flush=True)
                print(f"generating {'payments for %.0f s' % duration_s if duration_s else f'{records:,} payments'} "
                      f"into {INPUT!r} ({PARTITIONS} partitions); pipeline {pipeline.name!r} -> {OUTPUT!r}", flush=True)
                threading.Thread(target=generate, daemon=True).start()
                progress = Progress()
                stats = run.driver.run(
                    until=lambda d: gen_done.is_set() and d.stats.records_in >= len(produced) and d.caught_up(),
                    should_stop=stop, drain=not stop(),
                    on_step=lambda d: progress.update(
                        Status.of(d, "" if d.parts else "(joining the consumer group)")))
                progress.update(Status.of(run.driver), force=True)
                progress.done()
        finally:
            executor.close()
        gen_done.wait(30)
        print(f"done: {stats.records_in:,} payments in, {stats.windows:,} windows out, "
              f"{stats.late} late, {stats.failed} failed, {stats.skipped} skipped", flush=True)
        if stop():
            print("stopped early: windows still open were not emitted (a restart resumes them)")
            return 0
        codec = pipeline.validate().sink.codec
        rows = [codec.decode(m.value) for p in range(PARTITIONS)
                for m in read_all(kafka.consumer({"group.id": "demo-check"}), OUTPUT, p)]
        _print_samples(rows)
        problems = compare_windows(expected_windows(produced), rows)
        close_pool()  # this process's pooled readers go before their broker does
        if problems:
            print(f"\nFAILED: {len(problems)} window(s) differ from a recomputation, e.g.:", file=sys.stderr)
            for line in problems[:10]:
                print("  " + line, file=sys.stderr)
            return 1
        print(f"\nverified: all {len(rows):,} windows match an independent recomputation of the "
              f"{len(produced):,} generated payments")
        return 0
