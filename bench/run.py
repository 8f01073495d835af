"""Benchmark: our pipeline against hand-written confluent-kafka + fastavro loops, in one run.

Everything runs on the embedded broker and a local Dask cluster, started here:

1. Throughput: N payments (4 partitions, 10,000 users, event time ~10,000 records per
   second with up to 2 s disorder) aggregated into 10 s tumbling windows per user, by the
   hand-written 2-process baseline and by the pipeline (exactly-once, then at-least-once),
   repeated and interleaved; medians and their ratio. The pipeline's windows are checked
   against the baseline's one by one.
2. Stateless: decode → map → encode → produce, pipeline against its own hand-written loop.
   Model scoring: the fraud app's per-payment pipeline (Score with a scikit-learn random
   forest) against a hand-written loop calling the same model once per consumed batch.
3. Latency at half the measured maximum rate: from producing the record that closes a window
   to the window's result being readable by a read_committed consumer (p50, p99).
4. Memory: driver bytes per open (key, window); RSS of driver and workers over a soak run.
5. Scaling curves: throughput against keys, hopping overlap, workers and record size.

Results go to bench/results/latest.json and bench/results/scaling.png.

    python bench/run.py                      # about 20 minutes with the 10-minute soak
    python bench/run.py --records 300000 --soak-minutes 1 --curve-records 100000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import baseline, measure, targets, workloads
from bench.workloads import GRACE_MS, PARTITIONS, PAYMENT, WINDOW_OUT

SOAK_RECORDS = 10_000_000  # bounded data volume: see the soak step in main()
STEPS = ("throughput", "rekeyed", "stateless", "scoring", "latency", "memory", "recovery", "curves", "soak")


def compare(base: dict, rows: list[dict], key: str = "user_id") -> list[str]:
    """Differences between the baseline's windows and the pipeline's output rows."""
    got = {(r[key], r["window_start"]): r for r in rows}
    problems = [f"missing {k}" for k in base if k not in got]
    problems += [f"unexpected {k}" for k in got if k not in base]
    for k, (n, total, largest) in base.items():
        r = got.get(k)
        if r and (r["n"] != n or not math.isclose(r["total"], total, rel_tol=1e-9, abs_tol=1e-9)
                  or r["largest"] != largest):
            problems.append(f"{k}: pipeline {r}, baseline {(n, total, largest)}")
    return problems


class Bench:
    def __init__(self, args: argparse.Namespace, broker: object) -> None:
        from stream.config import KafkaConfig
        from stream.execution.dask import DaskExecutor

        self.args, self.kafka = args, KafkaConfig(broker.bootstrap)
        self.executor = DaskExecutor(workers=args.workers)
        self.n = 0

    def topic(self, name: str) -> str:
        from stream.app.admin import ensure_topic

        self.n += 1
        topic = f"{name}-{self.n}"
        ensure_topic(self.kafka.client(), topic, PARTITIONS)
        return topic

    def payments(self, records: int, keys: int) -> str:
        from stream.pipeline import Pipeline

        src = self.topic(f"pay{keys}")
        codec = Pipeline("x").source(src, schema=PAYMENT).source_spec.codec
        say(f"generating {records:,} payments over {keys:,} users into {src} ...")
        workloads.fill_payments(self.kafka, src, records, keys, codec)
        return src

    def pipeline(self, pipeline_fn, src: str, records: int, label: str, executor=None, **kw) -> dict:
        out = self.topic("out")
        result = measure.pipeline_throughput(self.kafka, pipeline_fn(src, out), records,
                                             executor or self.executor, f"bench-{self.n}",
                                             label=label, **kw)
        result["output"] = out
        say(f"  {label}: {result['rps']:,} records/s (start-up {result['startup_s']} s)")
        return result

    def read_rows(self, topic: str, schema: dict = WINDOW_OUT) -> list[dict]:
        from stream.codecs.avro import AvroCodec
        from stream.sources.kafka import read_partitions

        codec = AvroCodec(schema)
        logs = read_partitions(self.kafka.consumer({"group.id": "bench-check",
                                                    "isolation.level": "read_committed"}),
                               topic, list(range(PARTITIONS)))
        return [codec.decode(m.value) for msgs in logs.values() for m in msgs]

    # -- 1. throughput ---------------------------------------------------------------------
    def throughput(self) -> dict:
        from stream.codecs.schemas import load_schema

        a = self.args
        src = self.payments(a.records, 10_000)
        schema = load_schema(ROOT / PAYMENT)
        base_rps, eo, problems = [], [], []
        for i in range(a.repeat):
            say(f"round {i + 1}/{a.repeat}: baseline, {a.workers} processes ...")
            s, n, base = baseline.run_windowed(self.kafka.bootstrap, src, schema, a.workers)
            base_rps.append(n / s)
            say(f"  baseline: {n / s:,.0f} records/s")
            eo.append(self.pipeline(workloads.windowed, src, a.records, "exactly-once"))
        problems = compare(base, self.read_rows(eo[-1]["output"]))
        alo = self.pipeline(workloads.windowed, src, a.records, "at-least-once",
                            guarantee="at_least_once")
        b, p = statistics.median(base_rps), statistics.median(r["rps"] for r in eo)
        return {"records": a.records, "baseline_rps": [round(x) for x in base_rps],
                "exactly_once": eo, "at_least_once": alo, "baseline_median_rps": round(b),
                "exactly_once_median_rps": round(p), "ratio": round(p / b, 3),
                "peak_rss_mib": max(r["peak_rss_mib"] for r in eo),
                "at_least_once_ratio": round(alo["rps"] / b, 3), "windows": len(base),
                "mismatches": len(problems), "mismatch_examples": problems[:5], "source": src}

    # -- 1b. a re-keyed window --------------------------------------------------------------
    def rekeyed(self, src: str | None) -> dict:
        """The windowed workload per merchant over payments keyed by user, through the
        repartition topic, against the hand-written loop aggregating per merchant (each
        process's dict merged at the end: no topic, no commits). Rates count input records."""
        from stream.codecs.schemas import load_schema

        a = self.args
        src = src or self.payments(a.records, 10_000)
        say(f"re-keyed baseline, {a.workers} processes ...")
        s, n, base = baseline.run_windowed(self.kafka.bootstrap, src, load_schema(ROOT / PAYMENT), a.workers,
                                           key="merchant_id")
        pipe = self.pipeline(workloads.rekeyed, src, a.records, "re-keyed exactly-once")
        pipe["input_rps"] = round(a.records / pipe["seconds"])  # records_in counts both stages
        problems = compare(base, self.read_rows(pipe["output"], workloads.REKEYED_OUT), key="merchant_id")
        return {"baseline_rps": round(n / s), "pipeline": pipe, "ratio": round(pipe["input_rps"] / (n / s), 3),
                "windows": len(base), "mismatches": len(problems), "mismatch_examples": problems[:5]}

    # -- 2. stateless ----------------------------------------------------------------------
    def stateless(self, src: str) -> dict:
        from stream.codecs.schemas import load_schema

        schema = load_schema(ROOT / PAYMENT)
        out = self.topic("stateless-base")
        say("stateless baseline ...")
        s, n = baseline.run_stateless(self.kafka.bootstrap, src, schema, self.args.workers, out)
        pipe = self.pipeline(lambda i, o: workloads.stateless(i, o, schema), src, self.args.records,
                             "stateless exactly-once")
        return {"baseline_rps": round(n / s), "pipeline": pipe, "ratio": round(pipe["rps"] / (n / s), 3)}

    # -- 2b. model scoring ----------------------------------------------------------------
    def scoring(self, tmp: Path) -> dict:
        """The fraud app's per-payment scoring pipeline against a hand-written loop that calls
        the same model on each consumed batch."""
        from examples.fraud.demo import LabelledPayments
        from examples.fraud.generator import FraudGenerator
        from examples.fraud.pipelines import payment_scores
        from examples.fraud.train import train
        from stream.app.generator import produce_payments
        from stream.codecs.schemas import load_schema

        n = self.args.scoring_records
        say("training the fraud models for the scoring benchmark ...")
        train(60_000, tmp, out=open(os.devnull, "w"))
        model = tmp / "payment.joblib"
        src = self.topic("card-payments")
        say(f"generating {n:,} card payments into {src} ...")
        pipe = payment_scores(model=model, source=src, sink="unused")
        produce_payments(self.kafka.producer(), src, n, PARTITIONS, pipe.source_spec.codec,
                         LabelledPayments(FraudGenerator(seed=21)), keep=False)
        schema, out_schema = load_schema(ROOT / "schemas/card_payment.avsc"), load_schema(ROOT / "schemas/payment_score.avsc")
        base = []
        runs = []
        for i in range(self.args.repeat):
            say(f"round {i + 1}/{self.args.repeat}: hand-written scoring loop, {self.args.workers} processes ...")
            s, got = baseline.run_scoring(self.kafka.bootstrap, src, schema, self.args.workers,
                                          self.topic("scores-base"), out_schema, str(model))
            base.append(got / s)
            say(f"  baseline: {got / s:,.0f} records/s")
            runs.append(self.pipeline(lambda i, o: payment_scores(model=model, source=i, sink=o), src, n,
                                      "scoring exactly-once"))
        b, p = statistics.median(base), statistics.median(r["rps"] for r in runs)
        return {"records": n, "model": "RandomForestClassifier (60 trees, depth 12), payment.joblib",
                "baseline_rps": [round(x) for x in base], "baseline_median_rps": round(b),
                "pipeline": runs, "pipeline_median_rps": round(p), "ratio": round(p / b, 3)}

    # -- 3. latency ------------------------------------------------------------------------
    def latency(self, max_rps: float) -> dict:
        """At half the measured maximum (the target's definition), and at a quarter and an
        eighth of it, since the paced producer shares the 2 cores with the pipeline."""
        points = []
        for share in (2, 4, 8):
            src, out = self.topic("lat-in"), self.topic("lat-out")
            rate = max_rps / share
            say(f"latency at {rate:,.0f} records/s (1/{share} of the maximum) for "
                f"{self.args.latency_seconds} s, from a paced producer in its own process ...")
            r = measure.latency(self.kafka, workloads.windowed(src, out), src, out, self.executor,
                                rate, self.args.latency_seconds, GRACE_MS)
            say(f"  p50 {r.get('p50_s')} s, p99 {r.get('p99_s')} s over {r['results']:,} results, "
                f"input {r['rate']:,} records/s")
            points.append({"share_of_max": f"1/{share}", **r})
        return {**points[0], "curve": points}

    # -- 4b. recovery -----------------------------------------------------------------------
    def recovery(self, max_rps: float) -> dict:
        """SIGKILL the driver of a supervised `stream run` at 1/8 of the maximum rate; the time
        to the new driver's first commit."""
        from bench.recovery import recovery

        src, out = self.topic("rec-in"), self.topic("rec-out")
        rate = max_rps / 8
        say(f"recovery: stream run at {rate:,.0f} records/s, its driver SIGKILLed after 10 s of commits ...")
        r = recovery(self.kafka.bootstrap, src, out, rate)
        say(f"  first commit of the new driver {r['first_commit_s']} s after the kill")
        return r

    # -- 5. curves -------------------------------------------------------------------------
    def curves(self) -> dict:
        from stream.execution.dask import DaskExecutor
        from stream.pipeline import Pipeline

        n = self.args.curve_records
        out: dict[str, list] = {"keys": [], "overlap": [], "overlap_results": [], "workers": [],
                                "record_bytes": []}
        for keys in (1_000, 10_000, 100_000, 1_000_000):
            src = self.payments(n, keys)
            out["keys"].append([keys, self.pipeline(workloads.windowed, src, n, f"{keys} keys")["rps"]])
            if keys == 10_000:
                for k in (1, 5, 20):
                    fn = lambda i, o, k=k: workloads.windowed(i, o, slide_ms=10_000 // k)
                    r = self.pipeline(fn, src, n, f"size/slide {k}")
                    out["overlap"].append([k, r["rps"]])
                    # results grow with size/slide: each key's pane is in k windows
                    out["overlap_results"].append([k, round(r["windows"] / r["seconds"])])
                one = DaskExecutor(workers=1)
                try:
                    out["workers"].append([1, self.pipeline(workloads.windowed, src, n, "1 worker",
                                                            executor=one)["rps"]])
                finally:
                    one.close()
                out["workers"].append([2, out["keys"][-1][1]])
        for pad in (10, 280, 3_000):
            src = self.topic(f"events{pad}")
            codec = Pipeline("x").source(src, schema=workloads.EVENT).source_spec.codec
            size = workloads.fill_events(self.kafka, src, n, 10_000, pad, codec)
            fn = lambda i, o: workloads.windowed(i, o, schema=workloads.EVENT)
            out["record_bytes"].append([size, self.pipeline(fn, src, n, f"{size} B records")["rps"]])
        return out

    # -- 4. soak ---------------------------------------------------------------------------
    def soak(self, rate: float) -> dict:
        import psutil

        from stream.app.run import PipelineRun
        from stream.config import RunConfig

        minutes = self.args.soak_minutes
        src, out = self.topic("soak-in"), self.topic("soak-out")
        pipeline = workloads.windowed(src, out)
        me = psutil.Process()
        samples: list[tuple[float, float, float]] = []
        say(f"soak: {minutes} min at {rate:,.0f} records/s (a paced producer in its own process); "
            "RSS of the driver and the Dask processes sampled every 10 s ...")
        config = RunConfig(app_id="bench-soak", kafka=self.kafka, workers=self.executor.workers)
        feeder: list[measure.Feeder] = []
        with PipelineRun(pipeline, config, self.executor) as run:
            t0, nxt = [0.0], [0.0]

            def until(d) -> bool:
                now = time.monotonic()
                if d.parts and not feeder:
                    t0[0] = now
                    # event time keeps pace with the wall clock: at the default 0.1 ms per record
                    # it ran ahead, and after minutes passed max_future_ms (every record then
                    # went to the dead-letter topic)
                    feeder.append(measure.Feeder(self.kafka.bootstrap, src, rate, minutes * 60,
                                                 step_ms=1000 / rate))
                if feeder and now >= nxt[0]:
                    nxt[0] = now + 10
                    drv, kids = measure.rss_mib(me)
                    samples.append((now - t0[0], drv, kids))
                    say(f"  [{(now - t0[0]) / 60:4.1f} min] in {d.stats.records_in:,}  lag {d.lag():,}  "
                        f"driver {drv:.0f} MiB  workers {kids:.0f} MiB")
                return bool(feeder) and now - t0[0] >= minutes * 60
            stats = run.driver.run(until=until)
        fed = feeder[0].result()
        half = [s for s in samples if s[0] >= minutes * 30]  # after warm-up: the second half
        return {"minutes": minutes, "rate_asked": round(rate), "rate_fed": round(fed["sent"] / fed["seconds"]),
                "rate": round(stats.records_in / (minutes * 60)), "records": stats.records_in,
                "failed": stats.failed, "driver_slope_mib_per_min": round(measure.rss_slope([(t, d) for t, d, _ in half]), 3),
                "workers_slope_mib_per_min": round(measure.rss_slope([(t, k) for t, _, k in half]), 3),
                "samples": [[round(t), round(d, 1), round(k, 1)] for t, d, k in samples]}

    def close(self) -> None:
        self.executor.close()


def say(text: str) -> None:
    print(text, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="records per throughput run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved baseline/pipeline rounds")
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--curve-records", type=int, default=300_000, help="records per curve point")
    ap.add_argument("--soak-minutes", type=float, default=10.0, help="0 skips the soak run")
    ap.add_argument("--skip-curves", action="store_true")
    ap.add_argument("--scoring-records", type=int, default=500_000,
                    help="payments per model-scoring run (0 skips it)")
    ap.add_argument("--only", action="append", choices=STEPS, metavar="STEP",
                    help=f"run only this step (repeatable; one of {', '.join(STEPS)}); the JSON "
                         "goes to --out with only those figures")
    ap.add_argument("--only-scoring", action="store_true", help="the same as --only scoring")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="the 'measured maximum' records/s that latency and soak run at half of, "
                         "when --only skips the throughput step (default: measure it, one round)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest.json"))
    args = ap.parse_args()
    steps = set(args.only or []) | ({"scoring"} if args.only_scoring else set())
    if not steps:
        steps = set(STEPS) - ({"curves"} if args.skip_curves else set())
        steps -= {"scoring"} if args.scoring_records <= 0 else set()
        steps -= {"soak"} if args.soak_minutes <= 0 else set()

    from stream.app.broker import EmbeddedBroker
    from stream.sources.kafka import close_pool

    result: dict = {"machine": {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]},
                    "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with EmbeddedBroker() as broker:
        bench = Bench(args, broker)
        try:
            t: dict = {}
            if "throughput" in steps or "stateless" in steps or ({"latency", "soak", "recovery"} & steps and not args.rate):
                if "throughput" not in steps:
                    args.repeat = 1
                t = bench.throughput()
                if "throughput" in steps:
                    result["throughput"] = t
                    result["metrics"] = metrics_moves(t)
            max_rps = args.rate or t.get("exactly_once_median_rps", 0)
            if "rekeyed" in steps:
                result["rekeyed"] = bench.rekeyed(t.get("source"))
            if "stateless" in steps:
                result["stateless"] = bench.stateless(t["source"])
            if "scoring" in steps:
                with tempfile.TemporaryDirectory() as tmp:
                    result["scoring"] = bench.scoring(Path(tmp))
            if "latency" in steps:
                result["latency"] = bench.latency(max_rps)
            if "memory" in steps:
                from bench.workloads import windowed
                result["memory"] = measure.state_bytes_per_entry(windowed("a", "b"))
            if "recovery" in steps:
                result["recovery"] = bench.recovery(max_rps)
            if "curves" in steps:
                result["curves"] = bench.curves()
            if "soak" in steps:
                # a quarter of the maximum, and at most SOAK_RECORDS in all: the embedded broker
                # keeps every record in memory, and twice the pipeline stalled when the soak topic
                # passed about 13M records (the broker at one full core, reads all but stopped)
                rate = min(max_rps / 4, SOAK_RECORDS / (args.soak_minutes * 60))
                result.setdefault("memory", {})["soak"] = bench.soak(rate)
        finally:
            bench.close()
            close_pool()  # this process's pooled readers go before their broker does
    result["targets"] = targets.judge(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if "curves" in result:
        from bench.plots import plot_curves
        plot_curves(result["curves"], Path(args.out).with_name("scaling.png"))
    summary(result)
    for step in ("throughput", "rekeyed"):
        if result.get(step, {}).get("mismatches"):
            print(f"MISMATCH ({step}): {result[step]['mismatch_examples']}", file=sys.stderr)
            return 1
    print(f"written to {args.out}")
    return 0


def metrics_moves(t: dict) -> dict:
    """How often `stream_records_in_total` (and with it the lag gauges) moved while the
    exactly-once windowed runs processed: the p99 of the gaps, over the runs' worst.

    >>> metrics_moves({"exactly_once": [{"update_gaps": {"p99_s": 0.2, "max_s": 0.4}},
    ...                                 {"update_gaps": {"p99_s": 0.3, "max_s": 0.5}}]})
    {'update_interval_s': 0.3, 'longest_gap_s': 0.5}
    """
    gaps = [r["update_gaps"] for r in t.get("exactly_once", []) if r.get("update_gaps", {}).get("p99_s") is not None]
    if not gaps:
        return {"update_interval_s": None, "longest_gap_s": None}
    return {"update_interval_s": max(g["p99_s"] for g in gaps), "longest_gap_s": max(g["max_s"] for g in gaps)}


def _scoring_line(sc: dict) -> None:
    say(f"model scoring, exactly-once: {sc['pipeline_median_rps']:>9,} rec/s  ratio {sc['ratio']:.2f} "
        f"(hand-written loop {sc['baseline_median_rps']:,} rec/s)")


def summary(r: dict) -> None:
    """Print the figures that `r` has (all of them after a full run)."""
    say("\n== summary (ratios are against baselines measured in this run) ==")
    if t := r.get("throughput"):
        say(f"windowed, exactly-once : {t['exactly_once_median_rps']:>9,} rec/s  "
            f"ratio {t['ratio']:.2f} (baseline {t['baseline_median_rps']:,} rec/s)")
        say(f"windowed, at-least-once: {t['at_least_once']['rps']:>9,} rec/s  ratio {t['at_least_once_ratio']:.2f}")
    if (m := r.get("metrics")) and m.get("update_interval_s") is not None:
        say(f"records_in moved every {m['update_interval_s']} s or sooner (p99; longest gap {m['longest_gap_s']} s)")
    if k := r.get("rekeyed"):
        say(f"re-keyed window, exactly-once: {k['pipeline']['input_rps']:>9,} rec/s  ratio {k['ratio']:.2f} "
            f"(hand-written loop {k['baseline_rps']:,} rec/s), {k['mismatches']} windows differ")
    if s := r.get("stateless"):
        say(f"stateless, exactly-once: {s['pipeline']['rps']:>9,} rec/s  ratio {s['ratio']:.2f} "
            f"(baseline {s['baseline_rps']:,} rec/s)")
    if "scoring" in r:
        _scoring_line(r["scoring"])
    for lat in r.get("latency", {}).get("curve", []):
        say(f"latency at {lat['rate']:,} rec/s ({lat['share_of_max']} of max): p50 {lat.get('p50_s')} s  "
            f"p99 {lat.get('p99_s')} s")
    if rec := r.get("recovery"):
        say(f"recovery: first commit {rec['first_commit_s']} s after a SIGKILL of the driver")
    mem = r.get("memory", {})
    if "bytes_per_entry" in mem:
        say(f"driver state: {mem['bytes_per_entry']} bytes per open (key, window)")
    if "soak" in mem:
        say(f"soak {mem['soak']['minutes']} min at {mem['soak']['rate']:,} rec/s: RSS slope driver {mem['soak']['driver_slope_mib_per_min']} "
            f"MiB/min, workers {mem['soak']['workers_slope_mib_per_min']} MiB/min, "
            f"{mem['soak'].get('failed', 0):,} records dead-lettered")
    for name, points in r.get("curves", {}).items():
        say(f"curve {name:12s}: " + ", ".join(f"{x:,} → {y:,}" for x, y in points))
    if t:
        say(f"windows checked: {t['windows']:,}, mismatches: {t['mismatches']}")
    say("\n== targets (issue 18) ==")
    for line in targets.lines(r.get("targets") or targets.judge(r)):
        say(line)


if __name__ == "__main__":
    sys.exit(main())
