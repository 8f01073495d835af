"""Measurements of the pipeline: throughput, end-to-end latency, state memory, RSS over time.

    rps, info = pipeline_throughput(kafka, pipeline, records, workers=2)
"""

from __future__ import annotations

import bisect
import pickle
import threading
import time
import tracemalloc
from typing import Any, Callable

import psutil

from stream.config import RunConfig
from stream.execution.dask import DaskExecutor
from stream.progress import Progress, Status
from stream.runner import PipelineRun


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

    The embedded broker is a child too, but it keeps every record in memory (DESIGN.md), so
    it is left out: what is measured is the driver and the Dask processes.
    """
    me = proc or psutil.Process()
    kids = 0
    for c in me.children(recursive=True):
        try:
            if "tansu" not in c.name():
                kids += c.memory_info().rss
        except psutil.Error:
            pass
    return me.memory_info().rss / 2**20, kids / 2**20


def pipeline_throughput(kafka: Any, pipeline: Any, records: int, executor: DaskExecutor,
                        app_id: str, guarantee: str = "exactly_once", label: str = "",
                        **settings: Any) -> dict[str, Any]:
    """Run `pipeline` over `records` input records; rates count from the partitions' assignment.

    Start-up (group join, restore) is reported apart: it is paid once per process start.
    """
    config = RunConfig(app_id=app_id, kafka=kafka, workers=executor.workers, guarantee=guarantee,
                       **settings)
    t0 = time.perf_counter()
    assigned: list[float] = []
    progress = Progress(every_s=2.0)

    def on_step(d: Any) -> None:
        if d.parts and not assigned:
            assigned.append(time.perf_counter())
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
            "worker_cpu_us_per_record": round(worker_cpu / stats.records_in * 1e6, 2)}


def closing_times(sent: dict[int, list[tuple[int, float]]]) -> Callable[[int], float | None]:
    """From (event time, wall time) sent per partition: when every partition had reached `t`."""
    reach = {}
    for p, rows in sent.items():
        running, walls, top = [], [], None
        for ts, wall in rows:
            if top is None or ts > top:
                top = ts
                running.append(ts)
                walls.append(wall)
        reach[p] = (running, walls)

    def at(t: int) -> float | None:
        worst = 0.0
        for running, walls in reach.values():
            i = bisect.bisect_left(running, t)
            if i == len(running):
                return None
            worst = max(worst, walls[i])
        return worst
    return at


def latency(kafka: Any, pipeline: Any, src: str, out: str, executor: DaskExecutor, rate: float,
            seconds: float, grace_ms: int, produce: Callable[..., None]) -> dict[str, Any]:
    """p50/p99 from the record that closes a window being produced to its result being
    readable by a read_committed consumer, at a fixed input rate."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    sent: dict[int, list[tuple[int, float]]] = {}
    got: list[tuple[int, float]] = []  # (window end, wall time received)
    stop = threading.Event()

    def on_record(partition: int, ts: int) -> None:
        sent.setdefault(partition, []).append((ts, time.time()))

    def read() -> None:
        codec = pipeline.sink_spec.codec
        c = Consumer(kafka.consumer({"group.id": "bench-latency", "isolation.level": "read_committed",
                                     "enable.partition.eof": False, "fetch.wait.max.ms": 10}))
        c.assign([TopicPartition(out, p, 0) for p in range(4)])
        while not stop.is_set():
            for m in c.consume(1000, 0.05):
                if m.error() is None or m.error().code() != KafkaError._PARTITION_EOF:
                    if m.error() is None:
                        got.append((codec.decode(m.value())["window_end"], time.time()))
        c.close()

    config = RunConfig(app_id="bench-latency", kafka=kafka, workers=executor.workers)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    with PipelineRun(pipeline, config, executor) as run:
        deadline = [None]

        def until(d: Any) -> bool:
            if d.parts and deadline[0] is None:  # produce only once the driver is assigned
                deadline[0] = time.monotonic() + seconds
                threading.Thread(target=produce, args=(rate, seconds, on_record), daemon=True).start()
            return deadline[0] is not None and time.monotonic() > deadline[0] + 2
        run.driver.run(until=until)
    stop.set()
    reader.join(5)
    closes = closing_times(sent)
    lat = sorted(r - c for end, r in got if (c := closes(end + grace_ms)) is not None)
    if not lat:
        return {"rate": round(rate), "results": 0}
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3)  # noqa: E731
    return {"rate": round(rate), "results": len(lat), "p50_s": pick(0.50), "p99_s": pick(0.99),
            "max_s": round(lat[-1], 3)}


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
    store.merge(pickle.loads(blob), {0: keys})
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
