"""Wiring a pipeline to real components: broker checks, topics, executor, metrics, driver.

>>> run_pipeline(pipeline, RunConfig(app_id="spend", kafka=KafkaConfig("127.0.0.1:9092")))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import logging
import threading
from contextlib import ExitStack
from typing import Any, Callable

from stream.app.admin import admin, check_topics, ensure_topic, wait_for_broker
from stream.app.replicas import Lease, check_replica_free, client_id
from stream.app.watchdog import Watchdog
from stream.config import CONSUMER_DEFAULTS, DEAD_LETTER_MAX_BYTES, RunConfig
from stream.driver.loop import Driver, DriverStats, Topics
from stream.metrics import ENV_RESTARTS, Metrics, env_count
from stream.pipeline import Pipeline, Plan
from stream.protocols import Executor
from stream.records import Limits
from stream.sinks.kafka import KafkaSink, TransactionalSink
from stream.sources.changelog import KafkaChangelog
from stream.sources.kafka import KafkaReader, KafkaSession

log = logging.getLogger(__name__)
REFUSED_S = 1.5  # a first start reports a broker that refuses connections after this long


def make_executor(config: RunConfig, local: bool = False) -> Any:
    """The executor for a run: in-process, an embedded LocalCluster, or an existing scheduler."""
    if local:
        from stream.execution.local import LocalExecutor
        return LocalExecutor()
    from stream.execution.dask import DaskExecutor
    if config.scheduler is not None and not config.scheduler.startswith("tls://") and config.kafka.has_credentials:
        log.warning("Kafka credentials are configured but the Dask scheduler %s is not TLS: tasks never "
                    "carry them (workers read them from their own environment), but the data the "
                    "tasks exchange travels unencrypted; use a tls:// scheduler", config.scheduler)
    return DaskExecutor(config.scheduler, config.workers, config.connect_timeout_s,
                        config.dask_tls.security() if config.dask_tls.enabled else None)


def check_broker_topics(pipeline: Pipeline, config: RunConfig, create_topics: int | None = None) -> dict[str, int]:
    """Fail early, naming the address or the topic, if the broker or a topic is missing.
    Returns the partition count of each input topic and of the repartition topic (if any).

    With `create_topics`, missing input and output topics are created with that many partitions.
    """
    # at a first start, a refused connection (nothing listens) is reported at once; a driver
    # the supervisor restarted gives a broker that is coming back the whole wait
    first = env_count(ENV_RESTARTS) == 0
    md = wait_for_broker(config.kafka.client(), config.connect_timeout_s, REFUSED_S if first else None)
    plan = pipeline.validate()
    inputs, output = list(plan.source.topics), plan.sink.topic
    if create_topics:
        for topic in [*inputs, output]:
            ensure_topic(config.kafka.client(), topic, create_topics)
        md = wait_for_broker(config.kafka.client(), config.connect_timeout_s)
    counts = check_topics(md, inputs, "input")
    check_topics(md, [output], "output")
    big = str(DEAD_LETTER_MAX_BYTES)
    if pipeline.rekey:  # a re-keyed window: records and heartbeats of stage 1, read by stage 2
        wanted = config.repartition_partitions or max(counts.values())
        counts[config.repartition_topic] = ensure_topic(
            config.kafka.client(), config.repartition_topic, wanted,
            {"cleanup.policy": "delete", "retention.ms": "-1", "max.message.bytes": big})
    ensure_topic(config.kafka.client(), config.changelog_topic, max(counts.values()),
                 {"cleanup.policy": "compact", "retention.ms": "-1"})
    for side in (config.dead_letter_topic, config.late_topic):
        # dead letters keep the original bytes, up to the input's own size limit
        ensure_topic(config.kafka.client(), side, 1,
                     {"cleanup.policy": "delete", "retention.ms": "-1", "max.message.bytes": big})
    return counts


def preload_encoders() -> threading.Thread:
    """Import the batch encoder in the background while the executor starts: it brings in
    polars (`stream.codecs.avro_block`; NumPy is already loaded by the operators), and the
    first window results would otherwise wait half a second for it on the hot path.

    >>> preload_encoders().join()
    """
    def load() -> None:
        try:
            importlib.import_module("stream.codecs.avro_batch")
        except ImportError as exc:  # the record-by-record path still works: say why it is slow
            log.warning("the batch encoder cannot be loaded (%s): results are encoded one by one", exc)
    thread = threading.Thread(target=load, name="stream-preload", daemon=True)
    thread.start()
    return thread


class PipelineRun:
    """A started pipeline: `driver.run(...)` drives it; `close()` releases everything."""

    def __init__(self, pipeline: Pipeline, config: RunConfig, executor: Executor | None = None,
                 metrics: Metrics | None = None, create_topics: int | None = None,
                 watchdog: Watchdog | None = None, leave_group_on_failure: bool = True,
                 local: bool = False) -> None:
        """Check the pipeline, the broker, the topics and the metrics port first (seconds, a
        clear error each), then start what is heavy: the executor (without `executor`, one
        made from `config`, in-process with `local`), Kafka clients, the driver."""
        plan = pipeline.validate()
        counts = check_broker_topics(pipeline, config, create_topics)
        self.topics_read = [*plan.source.topics, *([config.repartition_topic] if pipeline.rekey else [])]
        self._stack = ExitStack()
        self._session_closed = False
        try:
            if not config.takeover:
                lease = Lease(config.kafka.bootstrap, config.app_id, config.replica)
                lease.acquire()
                self._stack.callback(lease.release)
                session_s = CONSUMER_DEFAULTS["session.timeout.ms"] / 1000
                check_replica_free(admin(config.kafka.client()), config.app_id, config.replica, session_s + 3)
            # At a first start, join the group first: the join (3 s on the embedded broker)
            # goes on in the background while the executor and the other clients start.
            # After a crash, join once the executor is up, as before: on the embedded broker
            # a join that comes while the dead driver's member is still in the group waits
            # for longer (bench/recovery.py: 13.3-13.5 s when joining first, against 7.2-7.8 s
            # or, now and then, 15.2 s when joining after the executor; joining only once the
            # member surely expired gave 10.5 s every time).
            restarted = env_count(ENV_RESTARTS) > 0
            if not restarted:
                self._join(plan, config, leave_group_on_failure)
            self.metrics = metrics or Metrics(pipeline.name)
            self.metrics_port: int | None = None
            if config.metrics_port is not None:
                self.metrics_port = self.metrics.serve(config.metrics_port, config.metrics_addr)
                self._stack.callback(self.metrics.close)
            preload_encoders()
            self.executor = executor if executor is not None else make_executor(config, local)
            if executor is None:
                self._stack.callback(self.executor.close)
            if restarted:
                self._join(plan, config, leave_group_on_failure)
            else:
                self._stack.callback(self._close_session, leave_group_on_failure)  # leave before the executor stops
            log.info("running %s on %s, %s; metrics %s", pipeline.name, config.kafka.bootstrap,
                     self.executor.describe(),
                     "off" if self.metrics_port is None else
                     f"on http://{config.metrics_addr}:{self.metrics_port}/metrics, status page on "
                     f"http://{config.metrics_addr}:{self.metrics_port}/")
            kafka = config.kafka
            watchdog = watchdog or Watchdog()
            if config.exactly_once:
                self.sink: KafkaSink = TransactionalSink(
                    kafka.producer({"transactional.id": config.transactional_id}),
                    watchdog, config.step_timeout_s)
            else:
                self.sink = KafkaSink(kafka.producer(), watchdog, config.step_timeout_s)
            self._stack.callback(self.sink.close)
            self.sink.on_abort = self.metrics.aborted
            self.metrics.probes.workers = getattr(self.executor, "connected_workers", lambda: 0)
            # the restore reads read_uncommitted on purpose (stream/sources/changelog.py says why)
            changelog = KafkaChangelog(config.changelog_topic, kafka.consumer(
                {"group.id": f"{config.app_id}.restore"}))
            topics = Topics(config.changelog_topic, config.dead_letter_topic, config.late_topic)
            self.driver = Driver(pipeline, self.session, self.sink, self.executor, changelog, topics,
                                 range_records=config.range_records, max_inflight=config.inflight,
                                 commit_interval_s=config.commit_interval_s,
                                 advance_after_ms=config.advance_after_ms,
                                 limits=Limits(kafka.max_record_bytes, config.max_future_ms),
                                 metrics=self.metrics, app_id=config.app_id,
                                 transactional_id=config.transactional_id, replica=config.replica,
                                 input_partitions={t: counts[t] for t in plan.source.topics},
                                 repartition_partitions=counts.get(config.repartition_topic, 0))
        except BaseException:
            self._stack.close()
            raise

    def _join(self, plan: Plan, config: RunConfig, leave_group_on_failure: bool) -> None:
        """Subscribe to the input: the consumer group join starts in the background."""
        reader = KafkaReader.from_config(config.kafka.consumer({"group.id": f"{config.app_id}.reader"}))
        self.session = KafkaSession(config.kafka.consumer({"group.id": config.app_id,
                                                           "client.id": client_id(config.replica)}),
                                    self.topics_read, reader)
        self._stack.callback(self._close_session, leave_group_on_failure)

    def _close_session(self, leave_on_failure: bool) -> None:
        """Leave the group (once: it is registered to run before the executor stops, and
        again in case the executor never started)."""
        if self._session_closed:
            return
        self._session_closed = True
        driver = getattr(self, "driver", None)
        if driver is not None and driver.failed and not leave_on_failure:
            # The process is about to exit. Leaving the group now, possibly in the middle of a
            # rebalance, can stall the embedded broker's group for good; a member that just
            # goes away is expired after session.timeout.ms on any broker.
            log.info("not leaving the consumer group after a failure; the member expires")
            return
        self.session.close()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "PipelineRun":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_pipeline(pipeline: Pipeline, config: RunConfig, *, executor: Executor | None = None,
                 until: Callable[[Driver], bool] = lambda d: False,
                 should_stop: Callable[[], bool] = lambda: False, drain: bool = False,
                 on_step: Callable[[Driver], None] | None = None,
                 create_topics: int | None = None, watchdog: Watchdog | None = None,
                 leave_group_on_failure: bool = True, local: bool = False) -> DriverStats:
    """Run `pipeline` until `until(driver)` or `should_stop()`; returns the driver's counts."""
    with PipelineRun(pipeline, config, executor, create_topics=create_topics, watchdog=watchdog,
                     leave_group_on_failure=leave_group_on_failure, local=local) as run:
        return run.driver.run(until=until, should_stop=should_stop, drain=drain, on_step=on_step)
