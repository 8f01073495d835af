"""Measurements of the pipeline: throughput, end-to-end latency, state memory, RSS over time.

    rps, info = pipeline_throughput(kafka, pipeline, records, workers=2)
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import psutil

from stream.app.progress import Progress, Status
from stream.app.run import PipelineRun
from stream.config import RunConfig
from stream.execution.dask import DaskExecutor

ROOT = Path(__file__).resolve().parents[1]


class CpuMeter:
    """CPU seconds of this process and of its children (the Dask processes, not the
    embedded broker) since start."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.start = self._now()

    def _now(self) -> dict[int, float]:
        out = {}
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                if p.pid != self.me.pid and "tansu" in p.name():
                    continue  # the embedded broker: not part of the pipeline's cost
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
            except psutil.Error:
                pass
        return out

    def used(self) -> tuple[float, float]:
        """(this process, children) CPU seconds since start."""
        now = self._now()
        mine = now.get(self.me.pid, 0) - self.start.get(self.me.pid, 0)
        kids = sum(v - self.start.get(pid, 0) for pid, v in now.items() if pid != self.me.pid)
        return mine, kids


def rss_mib(proc: psutil.Process | None = None) -> tuple[float, float]:
    """(this process, its children but the broker) resident memory in MiB.

    The embedded broker is a child too, but it keeps every record in memory (docs/brokers.md), so
    it is left out, as is the feeder: what is measured is the driver and the Dask processes.
    """
    me = proc or psutil.Process()
    kids = 0
    for c in me.children(recursive=True):
        try:
            if "tansu" not in c.name() and "bench.feeder" not in c.cmdline():
                kids += c.memory_info().rss
        except psutil.Error:
            pass
    return me.memory_info().rss / 2**20, kids / 2**20


def pipeline_throughput(kafka: Any, pipeline: Any, records: int, executor: DaskExecutor,
                        app_id: str, guarantee: str = "exactly_once", label: str = "",
                        **settings: Any) -> dict[str, Any]:
    """Run `pipeline` over `records` input records; rates count from the partitions' assignment.

    Start-up (group join, restore) is reported apart: it is paid once per process start. The
    peak RSS of the driver and the Dask workers (sampled every half second) is reported too,
    and how often `stream_records_in_total` moved (`update_gaps`).
    """
    config = RunConfig(app_id=app_id, kafka=kafka, workers=executor.workers, guarantee=guarantee,
                       **settings)
    t0 = time.perf_counter()
    assigned: list[float] = []
    progress = Progress(every_s=2.0)
    peak, sampled = [sum(rss_mib())], [t0]
    moved: list[float] = []  # when records_in moved: the counter and the lag gauges move with it
    seen = [0]

    def on_step(d: Any) -> None:
        now = time.perf_counter()
        if d.parts and not assigned:
            assigned.append(now)
        if d.stats.records_in != seen[0]:
            seen[0] = d.stats.records_in
            if seen[0] < records:  # while processing: not the drain at the end
                moved.append(now)
        if now - sampled[0] >= 0.5:
            sampled[0] = now
            peak[0] = max(peak[0], sum(rss_mib()))
        progress.update(Status.of(d, label))
    with PipelineRun(pipeline, config, executor) as run:
        cpu = CpuMeter()
        stats = run.driver.run(until=lambda d: d.stats.records_in >= records and d.caught_up(),
                               drain=True, on_step=on_step)
        driver_cpu, worker_cpu = cpu.used()
    progress.done()
    seconds = time.perf_counter() - assigned[0]
    return {"records": stats.records_in, "seconds": round(seconds, 3),
            "rps": round(stats.records_in / seconds), "startup_s": round(assigned[0] - t0, 2),
            "windows": stats.windows, "records_out": stats.records_out,
            "driver_cpu_us_per_record": round(driver_cpu / stats.records_in * 1e6, 2),
            "worker_cpu_us_per_record": round(worker_cpu / stats.records_in * 1e6, 2),
            "peak_rss_mib": round(max(peak[0], sum(rss_mib())), 1),
            "update_gaps": update_gaps(moved)}


def update_gaps(times: list[float]) -> dict[str, float | None]:
    """The gaps between consecutive moments a metric moved: median, p99 and longest, in s.

    >>> update_gaps([0.0, 0.1, 0.2, 0.5])
    {'p50_s': 0.1, 'p99_s': 0.3, 'max_s': 0.3}
    """
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    if not gaps:
        return {"p50_s": None, "p99_s": None, "max_s": None}
    return {"p50_s": round(gaps[len(gaps) // 2], 3), "p99_s": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))], 3),
            "max_s": round(gaps[-1], 3)}


class Feeder:
    """`bench/feeder.py` in its own process: a paced producer that does not share the GIL
    with the driver. `result()` waits for it and returns its summary."""

    def __init__(self, bootstrap: str, topic: str, rate: float, seconds: float,
                 step_ms: float | None = None) -> None:
        self._out = Path(tempfile.mkstemp(suffix=".json", prefix="feed-")[1])
        step = [] if step_ms is None else ["--step-ms", str(step_ms)]
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.feeder", "--bootstrap", bootstrap,
                                      "--topic", topic, "--rate", str(rate), "--seconds", str(seconds),
                                      "--out", str(self._out), *step], cwd=ROOT)
        self.started = time.monotonic()

    def done(self) -> bool:
        return self.proc.poll() is not None

    def result(self, timeout: float = 120.0) -> dict[str, Any]:
        try:
            if self.proc.wait(timeout) != 0:
                raise RuntimeError(f"the feeder exited with {self.proc.returncode}")
            return json.loads(self._out.read_text())
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._out.unlink(missing_ok=True)


def closing_times(crossings: dict[Any, list[list[float]]]) -> Callable[[int], float | None]:
    """From the feeder's crossings (per partition: [event time boundary, wall time first
    reached]): the wall time at which every partition had reached event time `t`."""
    reached = [dict((int(t), wall) for t, wall in rows) for rows in crossings.values()]

    def at(t: int) -> float | None:
        walls = [r.get(t) for r in reached]
        known = [w for w in walls if w is not None]
        return max(known) if len(known) == len(walls) else None
    return at


def latency(kafka: Any, pipeline: Any, src: str, out: str, executor: DaskExecutor, rate: float,
            seconds: float, grace_ms: int) -> dict[str, Any]:
    """p50/p99 from the record that closes a window being produced to its result being
    readable by a read_committed consumer, at a fixed input rate (the feeder's)."""
    from confluent_kafka import Consumer, TopicPartition

    got: list[tuple[int, float]] = []  # (window end, wall time received)
    stop = threading.Event()

    def read() -> None:
        codec = pipeline.sink_spec.codec
        c = Consumer(kafka.consumer({"group.id": "bench-latency", "isolation.level": "read_committed",
                                     "enable.partition.eof": False, "fetch.wait.max.ms": 10}))
        c.assign([TopicPartition(out, p, 0) for p in range(4)])
        while not stop.is_set():
            batch = c.consume(1000, 0.05)
            now = time.time()  # readable when consume() handed it over, before our decoding
            for m in batch:
                if m.error() is None:
                    got.append((codec.decode(m.value())["window_end"], now))
        c.close()

    config = RunConfig(app_id="bench-latency", kafka=kafka, workers=executor.workers)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    feeder: list[Feeder] = []
    with PipelineRun(pipeline, config, executor) as run:
        def until(d: Any) -> bool:
            if d.parts and not feeder:  # produce only once the driver is assigned
                feeder.append(Feeder(kafka.bootstrap, src, rate, seconds))
            return bool(feeder) and feeder[0].done() and d.caught_up()
        run.driver.run(until=until)
        time.sleep(1)  # the last results' transaction, read
    stop.set()
    reader.join(5)
    fed = feeder[0].result()
    closes = closing_times(fed["crossings"])
    lat = sorted(r - c for end, r in got if (c := closes(end + grace_ms)) is not None)
    summary = {"rate_asked": round(rate), "rate": round(fed["sent"] / fed["seconds"]),
               "seconds": fed["seconds"], "results": len(lat)}
    if not lat:
        return summary
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3)
    return {**summary, "p50_s": pick(0.50), "p99_s": pick(0.99), "max_s": round(lat[-1], 3)}


def state_bytes_per_entry(pipeline: Any, keys: int = 100_000) -> dict[str, Any]:
    """Driver memory per open (key, window) entry: a store filled as by real partials."""
    from stream.windows.store import WindowStore

    stage = pipeline.window_stage
    accs = [a.add(a.create(), [a.extract({"amount": 12.5}, 0)]) for a in stage.aggregations.values()]
    # partials arrive pickled from workers, so keys and accumulators are fresh objects
    blob = pickle.dumps({(f"u{i:07d}", 0): list(accs) for i in range(keys)})
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    store = WindowStore(stage.spec, stage.aggregations, stage.grace_ms)
    store.merge(pickle.loads(blob))
    store.take_changes()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {"entries": store.open_windows(), "bytes_per_entry": round(used / store.open_windows(), 1)}


def rss_slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    den = sum((t - mx) ** 2 for t, _ in samples)
    return 60 * sum((t - mx) * (v - my) for t, v in samples) / den if den else 0.0
