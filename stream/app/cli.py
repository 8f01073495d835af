"""The `stream` command: run, demo, tail, broker.

    stream run examples.user_spend:pipeline --bootstrap 127.0.0.1:9092
    stream demo --records 200000
    stream tail user-spend-1m --schema schemas/user_spend.avsc --bootstrap 127.0.0.1:9092
    stream broker --port 9092
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time
from typing import Any, NoReturn, Sequence

from stream.errors import BrokerUnavailable, ConfigError, FatalError, PipelineError, SchedulerUnavailable, StreamError

log = logging.getLogger("stream")


def load_pipeline(ref: str) -> Any:
    """Import `MODULE:ATTR` (the working directory is importable); ATTR may be a factory."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise PipelineError(f"expected MODULE:ATTR (for example examples.user_spend:pipeline), got {ref!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PipelineError(f"cannot import module {module_name!r}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise PipelineError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj() if callable(obj) else obj


def number(kind: type = int, low: float = 1, high: float | None = None, above: bool = False) -> Any:
    """An argparse type: a `kind` number >= `low` (> with `above`), <= `high`; argparse names
    the option in the error, e.g. ``argument --workers: must be >= 1, got 0``.

    >>> number(int, 1)("3"), number(float, 0, above=True)("0.5")
    (3, 0.5)
    >>> number(int, 1)("0")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: must be >= 1, got 0
    """
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole' if kind is int else 'a'} number, "
                                             f"got {text!r}") from None
        if value < low or (above and value == low) or (high is not None and value > high):
            bound = f"> {low}" if above else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}" + (f" and <= {high}" if high is not None else "")
                                             + f", got {text}")
        return value
    return parse


PORT = number(int, 0, 65535)
COUNT = number(int, 1)
POSITIVE = number(float, 0, above=True)  # seconds, rates


# the command-line option behind each configuration setting a ConfigError may name
OPTION_OF = {"app_id": "--app-id", "bootstrap": "--bootstrap", "scheduler": "--scheduler",
             "metrics_port": "--metrics-port", "metrics_addr": "--metrics-addr",
             "dask_tls": "--tls-ca, --tls-cert, --tls-key", "security_protocol": "--security-protocol",
             "sasl_mechanism": "--sasl-mechanism", "sasl_username": "--sasl-username",
             "ssl_ca_location": "--ssl-ca", "ssl_certificate_location": "--ssl-cert",
             "ssl_key_location": "--ssl-key"}


class StopFlag:
    """Set by SIGINT/SIGTERM; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.stopped = False
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.stopped:
            raise KeyboardInterrupt
        self.stopped = True
        print("\nstopping (press Ctrl-C again to stop at once)...", file=sys.stderr)

    def __call__(self) -> bool:
        return self.stopped


def kafka_config(args: argparse.Namespace) -> Any:
    """The Kafka settings of a command: --bootstrap, and the security options or their
    STREAM_* environment variables (passwords only from the environment)."""
    from stream.config import KafkaConfig, KafkaSecurity

    security = KafkaSecurity.from_env(
        security_protocol=args.security_protocol, sasl_mechanism=args.sasl_mechanism,
        sasl_username=args.sasl_username, ssl_ca_location=args.ssl_ca,
        ssl_certificate_location=args.ssl_cert, ssl_key_location=args.ssl_key)
    return KafkaConfig(args.bootstrap, extra=dict(args.kafka_config or ()), security=security)


def setting(text: str) -> tuple[str, str]:
    """An argparse type for --kafka-config: KEY=VALUE, a librdkafka setting.

    >>> setting("linger.ms=20")
    ('linger.ms', '20')
    """
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        # never echo the text: it may be a secret
        raise argparse.ArgumentTypeError("expected KEY=VALUE (a librdkafka setting)")
    return key.strip(), value


def cluster_config(args: argparse.Namespace, pipeline: Any, **settings: Any) -> Any:
    """The RunConfig of a command with the cluster options (`_cluster_options`), plus `settings`."""
    from stream.config import DaskTLS, RunConfig

    return RunConfig(app_id=args.app_id or pipeline.name, kafka=kafka_config(args), scheduler=args.scheduler,
                     dask_tls=DaskTLS.from_env(ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key),
                     workers=args.workers or (os.cpu_count() or 1), range_records=args.range_records,
                     **settings)


def _cmd_run(args: argparse.Namespace) -> int:
    from stream.app.progress import Progress, Status
    from stream.app.run import run_pipeline
    from stream.app.watchdog import Watchdog

    pipeline = load_pipeline(args.pipeline)
    if not args.bootstrap:
        raise StreamError("no broker given: pass --bootstrap HOST:PORT or set STREAM_BOOTSTRAP "
                          "(`stream broker` starts an embedded one)")
    config = cluster_config(args, pipeline, metrics_port=args.metrics_port, metrics_addr=args.metrics_addr,
                            guarantee=args.guarantee, replica=args.replica, takeover=args.takeover,
                            commit_interval_s=args.commit_interval, step_timeout_s=args.step_timeout,
                            advance_after_ms=None if args.advance_after is None else int(args.advance_after * 1000),
                            max_future_ms=int(args.max_future * 1000),
                            repartition_partitions=args.repartition_partitions)
    if not args.no_supervise:
        from stream.app.supervisor import Supervisor, child_argv

        argv = sys.argv[1:] if args.argv is None else args.argv
        return Supervisor(child_argv(argv), max_restarts=args.max_restarts).run()
    stop, progress = StopFlag(), Progress()
    # the broker, topics and metrics port are checked before the executor starts
    stats = run_pipeline(pipeline, config, local=args.local, should_stop=stop,
                         create_topics=args.create_topics, watchdog=Watchdog(enabled=True),
                         leave_group_on_failure=False, on_step=lambda d: progress.update(Status.of(d)))
    progress.done()
    log.info("stopped: %s", stats)
    return 0


def _cmd_tail(args: argparse.Namespace) -> int:
    from stream.app.admin import check_topics, wait_for_broker
    from stream.codecs.avro import AvroCodec
    from stream.codecs.schemas import load_schema
    from stream.sources.kafka import read_all

    kafka = kafka_config(args)
    md = wait_for_broker(kafka.client(), 10)
    partitions = check_topics(md, [args.topic], "tailed")[args.topic]
    codec = AvroCodec(load_schema(args.schema)) if args.schema else None
    shown = 0
    for p in range(partitions):
        for m in read_all(kafka.consumer({"group.id": "stream-tail"}), args.topic, p):
            try:
                value = codec.decode(m.value) if codec else (m.value or b"").decode("utf-8", "replace")
            except StreamError as exc:
                value = f"<undecodable: {exc}>"
            print(json.dumps({"partition": p, "offset": m.offset, "key": (m.key or b"").decode("utf-8", "replace"),
                              "value": value}, default=str))
            shown += 1
            if args.limit and shown >= args.limit:
                return 0
    return 0


def _cluster_options(p: argparse.ArgumentParser) -> None:
    """Options of commands that run a pipeline: where Kafka and Dask are, and how to reach them."""
    p.add_argument("pipeline", help="MODULE:ATTR of a Pipeline (or a function returning one)")
    p.add_argument("--bootstrap", default=os.environ.get("STREAM_BOOTSTRAP"), help="Kafka HOST:PORT")
    p.add_argument("--scheduler", help="existing Dask scheduler, e.g. tcp://host:8786 or tls://host:8786 "
                                       "(default: local cluster)")
    p.add_argument("--tls-ca", help="CA file for a tls:// scheduler ($STREAM_DASK_TLS_CA_FILE)")
    p.add_argument("--tls-cert", help="client certificate for a tls:// scheduler ($STREAM_DASK_TLS_CERT_FILE)")
    p.add_argument("--tls-key", help="client key for a tls:// scheduler ($STREAM_DASK_TLS_KEY_FILE)")
    _security_options(p)
    p.add_argument("--workers", type=COUNT, help="local cluster workers (default: one per core)")
    p.add_argument("--local", action="store_true", help="run tasks in-process instead of on Dask")
    p.add_argument("--range-records", type=COUNT, default=50_000, help="records per range task (default 50000)")


def _cmd_replay(args: argparse.Namespace) -> int:
    from stream.app.admin import ensure_topic, wait_for_broker
    from stream.app.replay import parse_time, replay
    from stream.app.run import make_executor

    pipeline = load_pipeline(args.pipeline)
    plan = pipeline.validate()
    if not args.bootstrap:
        raise StreamError("no broker given: pass --bootstrap HOST:PORT or set STREAM_BOOTSTRAP")
    from_ms, to_ms = parse_time(args.from_time, "--from"), parse_time(args.to_time, "--to")
    if to_ms <= from_ms:
        raise ConfigError("--to", f"must be after --from ({args.to_time} is not after {args.from_time})")
    if args.output == plan.sink.topic:
        raise ConfigError("--output", f"{args.output!r} is the live pipeline's sink; replay into another topic")
    config = cluster_config(args, pipeline)
    kafka = config.kafka
    wait_for_broker(kafka.client(), config.connect_timeout_s)
    dlq = f"{config.app_id}.replay.dlq"
    ensure_topic(kafka.client(), dlq, 1)
    if args.create_topics:
        ensure_topic(kafka.client(), args.output, args.create_topics)
    executor = make_executor(config, local=args.local)
    print(f"replaying {pipeline.name} over event times {args.from_time} .. {args.to_time} into "
          f"{args.output!r} on {executor.describe()}", flush=True)
    last = [0.0]

    def show(s: Any) -> None:
        if time.monotonic() - last[0] >= 10:
            last[0] = time.monotonic()
            print(f"  {s.records_read:,} records read, {s.written:,} written", flush=True)
    try:
        summary = replay(pipeline, kafka, executor, from_ms, to_ms, args.output, dead_letter=dlq,
                         range_records=args.range_records, progress=show)
    finally:
        executor.close()
    print(summary.line() + (f"; failures in {dlq!r}" if summary.failed else ""), flush=True)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from stream.app.manage import status

    print(status(kafka_config(args), args.app).render())
    return 0


def _cmd_reset(args: argparse.Namespace) -> int:
    from stream.app.manage import apply_reset, plan_reset
    from stream.app.replay import parse_time

    kafka = kafka_config(args)
    to_ms = None if args.to_earliest else parse_time(args.to_time, "--to-time")
    plan = plan_reset(kafka, args.app, to_ms)
    where = "the first offset" if to_ms is None else f"the first record at or after {args.to_time}"
    print(f"{'would reset' if args.dry_run else 'resetting'} application {args.app!r} to {where}:")
    for (t, p), o in sorted(plan.offsets.items()):
        print(f"  {t}[{p}] -> {o:,}")
    print(f"  window state: delete {plan.changelog!r}" if plan.changelog else "  window state: none")
    if args.dry_run:
        return 0
    apply_reset(kafka, plan)
    print("done: the next `stream run` starts there with empty window state; results already in the "
          "output topic are emitted again (their keys, <key>@<window_start>, tell duplicates apart)")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from stream.app.admin import check_topics, ensure_topic, wait_for_broker
    from stream.app.generator import PaymentGenerator, produce_payments
    from stream.codecs.avro import AvroCodec
    from stream.codecs.schemas import load_schema

    kafka = kafka_config(args)
    md = wait_for_broker(kafka.client(), 30)
    if args.create_topics:
        ensure_topic(kafka.client(), args.topic, args.create_topics)
        md = wait_for_broker(kafka.client(), 30)
    partitions = check_topics(md, [args.topic], "output")[args.topic]
    codec = AvroCodec(load_schema("schemas/payment.avsc"))  # from the repository root, as pipelines do
    stop = StopFlag()
    limit = args.records or 10**15
    print(f"producing {'%s' % f'{args.records:,}' if args.records else 'endless'} payments "
          f"({'%g/s' % args.rate if args.rate else 'as fast as possible'}) into {args.topic!r} "
          f"({partitions} partitions) at {kafka.bootstrap}; Ctrl-C stops", flush=True)
    start_ms = args.start_ms if args.start_ms is not None else int(time.time() * 1000)
    generator = PaymentGenerator(users=args.users, start_ms=start_ms, seed=args.seed)
    if args.rate:  # event time follows the rate, so windows close at the pace of the wall clock
        generator.step_ms = 1000.0 / args.rate
    elif args.start_ms is None:  # as fast as possible: event time is the wall clock, so a later
        generator.clock = lambda: int(time.time() * 1000)  # run's payments are not late
    produce_payments(kafka.producer(), args.topic, limit, partitions, codec, generator,
                     progress=lambda i: print(f"{i:,} payments produced", flush=True) if i and i % 100_000 == 0 else None,
                     rate=args.rate, should_stop=stop, keep=False)
    print("stopped" if stop() else "done", flush=True)
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _cmd_broker(args: argparse.Namespace) -> int:
    from stream.app.broker import EmbeddedBroker
    from stream.app.kafka_broker import KafkaBroker

    if args.engine == "kafka":
        broker: Any = KafkaBroker(args.port, data_dir=args.data_dir)
        what, note = "Apache Kafka broker", "data in " + str(broker.data_dir)
    else:
        broker, what, note = EmbeddedBroker(args.port), "embedded broker", "data is in memory only"
    # Ctrl-C and SIGTERM stop it the same way, even when the shell that started it in the
    # background ignored SIGINT (Python then installs no KeyboardInterrupt handler of its own)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:  # Ctrl-C may come at any point, even right after the address is printed
        if args.engine == "kafka":
            print(f"starting Apache Kafka (KRaft, one node) on port {broker.port} ...", flush=True)
        broker.start()
        print(f"{what} listening; bootstrap: {broker.bootstrap}  (Ctrl-C stops it; {note})", flush=True)
        broker.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from stream.app.demo import run_demo

    if args.app == "fraud":
        sys.path.insert(0, os.getcwd())
        try:
            from examples.fraud.demo import run_fraud_demo
        except ImportError as exc:
            raise PipelineError(f"the fraud demo needs the repository's examples/ and the ml extra "
                                f"(pip install -e '.[ml]'): {exc}") from exc
        return run_fraud_demo(payments=args.records or 60_000,
                              workers=args.workers, local=args.local, metrics_port=args.metrics_port,
                              metrics_addr=args.metrics_addr, rate=args.rate)
    return run_demo(records=args.records or 200_000, duration_s=args.duration, workers=args.workers,
                    metrics_port=args.metrics_port, metrics_addr=args.metrics_addr, local=args.local,
                    rate=args.rate)


def _security_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Kafka security (each also read from the STREAM_* variable named; "
                             "passwords only from $STREAM_SASL_PASSWORD and $STREAM_SSL_KEY_PASSWORD)")
    g.add_argument("--security-protocol", choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"],
                   help="$STREAM_SECURITY_PROTOCOL (default PLAINTEXT)")
    g.add_argument("--sasl-mechanism", choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"],
                   help="$STREAM_SASL_MECHANISM")
    g.add_argument("--sasl-username", help="$STREAM_SASL_USERNAME")
    g.add_argument("--ssl-ca", help="CA file that signed the brokers' certificates ($STREAM_SSL_CA_LOCATION)")
    g.add_argument("--ssl-cert", help="client certificate file ($STREAM_SSL_CERTIFICATE_LOCATION)")
    g.add_argument("--ssl-key", help="client key file ($STREAM_SSL_KEY_LOCATION)")
    g.add_argument("--kafka-config", type=setting, action="append", metavar="KEY=VALUE",
                   help="a librdkafka setting for every Kafka client, repeatable; the engine's own "
                        "settings of a client (isolation level, idempotence, batching) still win; "
                        "values of keys naming a password or secret are never shown")


class Parser(argparse.ArgumentParser):
    """argparse's parser, except that its errors never echo a password or secret typed on the
    command line (``unrecognized arguments: --sasl-password ******``)."""

    def error(self, message: str) -> NoReturn:
        from stream.secrets import mask_arguments

        super().error(mask_arguments(message))


def build_parser() -> argparse.ArgumentParser:
    """The `stream` command's argument parser, every subcommand included."""
    p = Parser(prog="stream", description="Windowed Kafka stream processing on Dask.")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    # global options are accepted after the command too (`stream run ... -v`)
    common = Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log debug details")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kw)

    run = command("run", help="run a pipeline against a Kafka cluster")
    _cluster_options(run)
    run.add_argument("--metrics-port", type=PORT, default=9108,
                     help="port of /metrics, /healthz and /readyz (default 9108)")
    run.add_argument("--metrics-addr", default="127.0.0.1",
                     help="address the metrics endpoint binds to (default 127.0.0.1; "
                          "0.0.0.0 in a container)")
    run.add_argument("--app-id", help="consumer group and state name (default: the pipeline name)")
    run.add_argument("--create-topics", type=COUNT, metavar="PARTITIONS",
                     help="create missing input and output topics with this many partitions")
    run.add_argument("--guarantee", choices=["exactly_once", "at_least_once"], default="exactly_once",
                     help="exactly_once (default): one Kafka transaction per epoch")
    run.add_argument("--replica", type=number(int, 0, 999), default=0,
                     help="replica number; the transactional id is <app-id>.<replica> (default 0)")
    run.add_argument("--takeover", action="store_true",
                     help="start even if this app id and replica is running: the running driver is "
                          "fenced (its open transaction aborted) and exits (default: refuse)")
    run.add_argument("--commit-interval", type=POSITIVE, default=1.0, metavar="SECONDS",
                     help="epoch length: how often results and offsets are committed (default 1)")
    run.add_argument("--advance-after", type=POSITIVE, metavar="SECONDS",
                     help="a partition confirmed quiet this long (a read after its last record "
                          "found nothing new) moves on in event time with the wall clock, so its "
                          "last windows close; results then depend on timing (default: off)")
    run.add_argument("--repartition-partitions", type=number(int, 0), default=0, metavar="N",
                     help="partitions of the repartition topic a re-keyed window creates "
                          "(<app-id>.repartition.0; default 0: as many as the input has)")
    run.add_argument("--max-future", type=number(float, 0), default=300.0, metavar="SECONDS",
                     help="dead-letter records whose event time is more than this after their "
                          "Kafka timestamp, so one bad clock cannot close windows (default 300)")
    run.add_argument("--step-timeout", type=number(float, 1), default=30.0, metavar="SECONDS",
                     help="deadline of each transaction step; past it the driver exits and is "
                          "restarted (default 30)")
    run.add_argument("--max-restarts", type=number(int, 0), default=5,
                     help="restarts in a row before giving up (default 5)")
    run.add_argument("--no-supervise", action="store_true",
                     help="run the driver in this process, without restarts")
    run.set_defaults(argv=None)
    run.set_defaults(fn=_cmd_run)

    rp = command("replay", help="run a pipeline over a past time range of its input, then exit")
    _cluster_options(rp)
    rp.add_argument("--from", dest="from_time", required=True,
                    help="start of the event-time range: ISO 8601 (UTC unless a zone is given) or epoch ms")
    rp.add_argument("--to", dest="to_time", required=True, help="end of the range (exclusive), as --from")
    rp.add_argument("--output", required=True, help="topic for the results (not the live pipeline's sink)")
    rp.add_argument("--app-id", help="names the dead-letter topic <app-id>.replay.dlq (default: the pipeline name)")
    rp.add_argument("--create-topics", type=COUNT, metavar="PARTITIONS",
                    help="create the output topic with this many partitions if it is missing")
    rp.set_defaults(fn=_cmd_replay)

    st = command("status", help="an application's group members, offsets, lag, last commit and state size")
    st.add_argument("--app", required=True, help="the application id (--app-id of stream run; default there: the pipeline name)")
    st.add_argument("--bootstrap", default=os.environ.get("STREAM_BOOTSTRAP", "127.0.0.1:9092"))
    _security_options(st)
    st.set_defaults(fn=_cmd_status)

    rs = command("reset", help="move an application's input offsets back and drop its window state")
    rs.add_argument("--app", required=True, help="the application id")
    to = rs.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="every input partition's first offset")
    to.add_argument("--to-time", help="the first record at or after this Kafka timestamp (ISO 8601 or epoch ms)")
    rs.add_argument("--dry-run", action="store_true", help="print the new offsets; change nothing")
    rs.add_argument("--bootstrap", default=os.environ.get("STREAM_BOOTSTRAP", "127.0.0.1:9092"))
    _security_options(rs)
    rs.set_defaults(fn=_cmd_reset)

    demo = command("demo", help="start a broker and Dask, generate payments, run a windowed pipeline")
    demo.add_argument("--app", choices=["spend", "fraud"], default="spend",
                      help="spend: per-user spend windows, checked window by window (default); "
                           "fraud: the fraud-detection application (examples/fraud)")
    demo.add_argument("--records", type=COUNT, help="payments to generate (default 200000; fraud: 60000)")
    demo.add_argument("--duration", type=POSITIVE, help="generate for this many seconds instead")
    demo.add_argument("--rate", type=POSITIVE, help="payments per second (default: as fast as possible)")
    demo.add_argument("--workers", type=COUNT, default=os.cpu_count() or 1, help="Dask workers")
    demo.add_argument("--metrics-port", type=PORT, default=9108, help="port of /metrics, /healthz and /readyz")
    demo.add_argument("--metrics-addr", default="127.0.0.1",
                      help="address the metrics endpoint binds to (default 127.0.0.1)")
    demo.add_argument("--local", action="store_true", help="run tasks in-process instead of on Dask")
    demo.set_defaults(fn=_cmd_demo)

    tail = command("tail", help="print the decoded records of a topic")
    tail.add_argument("topic")
    tail.add_argument("--schema", help=".avsc file of the values (default: print raw text)")
    tail.add_argument("--bootstrap", default=os.environ.get("STREAM_BOOTSTRAP", "127.0.0.1:9092"))
    tail.add_argument("--limit", type=number(int, 0), default=0, help="stop after this many records")
    _security_options(tail)
    tail.set_defaults(fn=_cmd_tail)

    gen = command("generate", help="produce generated payments (schemas/payment.avsc) into a topic: a load generator")
    gen.add_argument("--topic", default="payments")
    gen.add_argument("--bootstrap", default=os.environ.get("STREAM_BOOTSTRAP", "127.0.0.1:9092"))
    gen.add_argument("--records", type=COUNT, help="stop after this many (default: until Ctrl-C)")
    gen.add_argument("--rate", type=POSITIVE, help="payments per second (default: as fast as possible)")
    gen.add_argument("--users", type=COUNT, default=1_000, help="distinct user ids (default 1000)")
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--start-ms", type=int, default=None,
                     help="event time of the first payment, epoch ms; then 20 ms apart, or 1/rate "
                          "apart with --rate (default: now, and without --rate each payment's event "
                          "time is the wall clock when it is made)")
    gen.add_argument("--create-topics", type=COUNT, metavar="PARTITIONS",
                     help="create the topic with this many partitions if it is missing")
    _security_options(gen)
    gen.set_defaults(fn=_cmd_generate)

    broker = command("broker", help="run a Kafka broker in the foreground: the embedded one "
                            "(tansu, default) or Apache Kafka")
    broker.add_argument("--port", type=number(int, 1, 65535), default=9092)
    broker.add_argument("--engine", choices=["tansu", "kafka"], default="tansu",
                        help="tansu (embedded, in memory) or kafka (Apache Kafka in KRaft mode; "
                             "needs Java 17+ and `make kafka` once)")
    broker.add_argument("--data-dir", help="with --engine kafka: keep the log here (default: a "
                                           "temporary folder, removed at the stop)")
    broker.set_defaults(fn=_cmd_broker)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `stream` command with `argv` (the process's arguments by default); the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("distributed", "tornado", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if argv is not None:
        args.argv = list(argv)
    try:
        return args.fn(args)
    except FatalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except ConfigError as exc:  # name the option the user typed, not the setting behind it
        option = exc.setting if exc.setting.startswith("--") else OPTION_OF.get(exc.setting)
        print(f"error: {option}: {exc.problem}" if option else f"error: {exc}", file=sys.stderr)
        return 2
    except (BrokerUnavailable, SchedulerUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 4
    except StreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
