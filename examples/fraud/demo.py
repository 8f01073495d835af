"""`stream demo --app fraud`: the fraud-detection application on the embedded defaults.

Trains the models if they are missing, starts the embedded broker and a local Dask cluster,
streams labelled card payments, and runs the three fraud pipelines side by side on one
cluster: per-payment scores, and 1-minute and 10-minute window alerts. Prints live counts
of flagged payments and alerts, then the precision and recall of each against the
generator's labels.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from examples.fraud.generator import FraudGenerator
from examples.fraud.pipelines import ALERTS, INPUT, MODEL_DIR, SCORES, THRESHOLD, payment_scores, window_alerts

PARTITIONS = 4
MINUTE = 60_000


class LabelledPayments:
    """Feeds `produce_payments` with generated payments and keeps their labels."""

    def __init__(self, generator: FraudGenerator) -> None:
        self.generator = generator
        self.fraud: set[str] = set()

    def records(self, n: int) -> Iterator[dict[str, Any]]:
        for payment, bad in self.generator.payments(n):
            if bad:
                self.fraud.add(payment["payment_id"])
            yield payment


def ensure_models(model_dir: Path) -> None:
    """Train the three models when any is missing (about a minute)."""
    names = ("payment", "window-1m", "window-10m")
    if all((model_dir / f"{n}.joblib").exists() or (model_dir / f"{n}.onnx").exists() for n in names):
        print(f"models: {model_dir}", flush=True)
        return
    from examples.fraud.train import train
    print(f"no models in {model_dir}: training them on generated history (about a minute)...", flush=True)
    train(100_000, model_dir)


def fraud_windows(payments: list[dict[str, Any]], fraud: set[str]) -> dict[str, set[tuple[str, int]]]:
    """The (user, window start) of every 1-minute and 10-minute window holding a fraudulent payment."""
    out: dict[str, set[tuple[str, int]]] = {"1m": set(), "10m": set()}
    for p in payments:
        if p["payment_id"] not in fraud:
            continue
        minute = p["ts"] // MINUTE * MINUTE
        out["1m"].add((p["user_id"], minute))
        out["10m"].update((p["user_id"], minute - k * MINUTE) for k in range(10))
    return out


def precision_recall(flagged: set[Any], truth: set[Any]) -> tuple[float, float]:
    hit = len(flagged & truth)
    return (hit / len(flagged) if flagged else 0.0, hit / len(truth) if truth else 0.0)


def measure(scores: list[dict[str, Any]], alerts: list[dict[str, Any]], payments: list[dict[str, Any]],
            fraud: set[str]) -> dict[str, tuple[int, float, float]]:
    """(flagged, precision, recall) of per-payment scores above the threshold and of each alert kind."""
    result = {}
    flagged = {s["payment_id"] for s in scores if s["score"] > THRESHOLD}
    result["payments"] = (len(flagged), *precision_recall(flagged, fraud))
    truth = fraud_windows(payments, fraud)
    for size, width in (("1m", MINUTE), ("10m", 10 * MINUTE)):
        mine = {(a["user_id"], a["window_start"]) for a in alerts if a["window_end"] - a["window_start"] == width}
        result[f"alerts {size}"] = (len(mine), *precision_recall(mine, truth[size]))
    return result


@dataclass
class FraudRun:
    """What a run of the three pipelines produced, with the generator's labels."""

    payments: list[dict[str, Any]] = field(default_factory=list)
    fraud: set[str] = field(default_factory=set)
    scores: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def measure(self) -> dict[str, tuple[int, float, float]]:
        return measure(self.scores, self.alerts, self.payments, self.fraud)


def run_fraud_app(kafka: Any, executor: Any, payments: int, model_dir: Path | str = MODEL_DIR, *,
                  topics: tuple[str, str, str] = (INPUT, SCORES, ALERTS), app_prefix: str = "",
                  metrics_port: int | None = None, metrics_addr: str = "127.0.0.1",
                  rate: float | None = None, stop: Any = lambda: False,
                  generator: FraudGenerator | None = None) -> FraudRun:
    """Produce labelled payments into `topics[0]` while the three fraud pipelines run side by
    side on `executor`; then read their scores and alerts back. The topics must exist."""
    from stream.app.generator import produce_payments
    from stream.app.run import PipelineRun
    from stream.config import RunConfig
    from stream.sources.kafka import read_all

    source_topic, scores_topic, alerts_topic = topics
    pipelines = [payment_scores(model_dir, source=source_topic, sink=scores_topic),
                 window_alerts("1m", model_dir, source=source_topic, sink=alerts_topic),
                 window_alerts("10m", model_dir, source=source_topic, sink=alerts_topic)]
    configs = [RunConfig(app_id=app_prefix + p.name, kafka=kafka, metrics_addr=metrics_addr,
                         metrics_port=metrics_port + i if metrics_port else metrics_port)
               for i, p in enumerate(pipelines)]
    labelled = LabelledPayments(generator or FraudGenerator())
    out = FraudRun(fraud=labelled.fraud)
    gen_done = threading.Event()

    def generate() -> None:
        try:
            out.payments.extend(produce_payments(kafka.producer(), source_topic, payments, PARTITIONS,
                                                 pipelines[0].validate().source.codec, generator=labelled,
                                                 rate=rate, should_stop=stop))
        finally:
            gen_done.set()
    runs: list[Any] = []
    try:
        for p, config in zip(pipelines, configs):
            runs.append(PipelineRun(p, config, executor))
        print(f"{executor.describe()}; pipelines " + ", ".join(
            f"{p.name} -> {p.validate().sink.topic}" for p in pipelines), flush=True)
        if metrics_port is not None:
            print("metrics at " + ", ".join(f"http://{metrics_addr}:{r.metrics_port}/metrics" for r in runs))
        print(f"generating {payments:,} labelled card payments into {source_topic!r}...", flush=True)
        threads = [threading.Thread(target=_drive, args=(run, gen_done, out, stop), daemon=True)
                   for run in runs]
        threading.Thread(target=generate, daemon=True).start()
        for t in threads:
            t.start()
        _show_progress(runs, threads, labelled)
    finally:
        for run in runs:
            run.close()
        runs.clear()
        gc.collect()  # the Kafka clients go now, while their broker still answers
    if out.failures or stop():
        return out

    def read(topic: str, codec: Any) -> list[dict[str, Any]]:
        consumer = kafka.consumer({"group.id": f"{app_prefix}check-{topic}"})
        return [codec.decode(m.value) for p in range(PARTITIONS) for m in read_all(consumer, topic, p)]
    out.scores = read(scores_topic, pipelines[0].validate().sink.codec)
    out.alerts = read(alerts_topic, pipelines[1].validate().sink.codec)
    return out


def run_fraud_demo(payments: int = 60_000, workers: int = 2, local: bool = False,
                   metrics_port: int | None = 9108, metrics_addr: str = "127.0.0.1",
                   rate: float | None = None, model_dir: Path | str = MODEL_DIR) -> int:
    """`stream demo --app fraud`; returns the exit code (0 unless a pipeline failed)."""
    from stream.app.admin import ensure_topic
    from stream.app.broker import EmbeddedBroker
    from stream.app.cli import StopFlag
    from stream.app.run import make_executor
    from stream.config import KafkaConfig, RunConfig
    from stream.sources.kafka import close_pool

    model_dir = Path(model_dir)
    ensure_models(model_dir)
    stop = StopFlag()
    print("starting the embedded Kafka broker...", flush=True)
    with EmbeddedBroker() as broker:
        kafka = KafkaConfig(broker.bootstrap)
        for topic in (INPUT, SCORES, ALERTS):
            ensure_topic(kafka.client(), topic, PARTITIONS)
        executor = make_executor(RunConfig(app_id="fraud", kafka=kafka, workers=workers), local=local)
        try:
            run = run_fraud_app(kafka, executor, payments, model_dir, metrics_port=metrics_port,
                                metrics_addr=metrics_addr, rate=rate, stop=stop)
        finally:
            executor.close()
        close_pool()  # this process's pooled readers go before their broker does
    if run.failures:
        print("FAILED: " + "; ".join(run.failures), file=sys.stderr)
        return 1
    if stop():
        print("stopped early")
        return 0
    _report(run.measure(), len(run.payments), len(run.fraud), len(run.scores))
    return 0


def _drive(run: Any, gen_done: threading.Event, out: FraudRun, stop: Any) -> None:
    try:
        run.driver.run(until=lambda d: gen_done.is_set() and d.stats.records_in >= len(out.payments)
                       and d.caught_up(), should_stop=stop, drain=True)
    except Exception as exc:  # noqa: BLE001 - reported by the main thread
        out.failures.append(f"{run.driver.pipeline.name}: {type(exc).__name__}: {exc}")


def _show_progress(runs: list[Any], threads: list[threading.Thread], source: LabelledPayments) -> None:
    tty = sys.stdout.isatty()
    every, last, t0 = (1.0 if tty else 10.0), 0.0, time.monotonic()
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        now = time.monotonic()
        if now - last < every:
            continue
        last = now
        s = [r.driver.stats for r in runs]
        line = (f"[{now - t0:5.0f}s] payments scored {s[0].records_out:,}   "
                f"windows 1m {s[1].windows:,} / 10m {s[2].windows:,}   "
                f"alerts 1m {s[1].records_out:,} / 10m {s[2].records_out:,}   "
                f"fraud generated {len(source.fraud):,}")
        print(("\r" + line + "\x1b[K") if tty else line, end="" if tty else "\n", flush=True)
    if tty:
        print()


def _report(result: dict[str, tuple[int, float, float]], payments: int, fraud: int, scores: int) -> None:
    print(f"\n{payments:,} payments ({fraud:,} fraudulent), {scores:,} scores; measured against the "
          f"generator's labels (threshold {THRESHOLD}):")
    print(f"  {'':<12} {'flagged':>8} {'precision':>10} {'recall':>8}")
    for name, (n, precision, recall) in result.items():
        print(f"  {name:<12} {n:>8,} {precision:>10.2f} {recall:>8.2f}")
