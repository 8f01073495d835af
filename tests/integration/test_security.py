"""Security: TLS to Kafka through a TLS-terminating proxy in front of the embedded broker (the
broker advertises the proxy, so every client must speak TLS), SASL settings reaching every
client, clear connection errors without secrets, and secrets masked everywhere."""

from __future__ import annotations

import logging
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import diff_windows, payment_pipeline, recompute
from payments import produce_into, read_windows, run_to_end

from stream.app.admin import ensure_topic
from stream.app.run import PipelineRun, run_pipeline
from stream.config import KafkaConfig, KafkaSecurity, RunConfig
from stream.errors import BrokerUnavailable, ConfigError
from stream.secrets import Secret
from stream.sources.kafka import read_all

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-Pa55-7f1d"


@pytest.fixture(scope="module")
def ca():
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_broker(ca, tmp_path_factory):
    """The embedded broker behind a TLS proxy; yields (bootstrap, CA file, wrong CA file)."""
    import trustme
    from faultkit import TcpProxy

    from stream.app.broker import EmbeddedBroker, free_port
    from stream.sources.kafka import close_pool

    d = tmp_path_factory.mktemp("tls")
    ca_file, wrong_file = d / "ca.pem", d / "wrong-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    trustme.CA().cert_pem.write_to_path(str(wrong_file))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server)
    proxy_port = free_port()
    broker = EmbeddedBroker(advertised_port=proxy_port)
    proxy = TcpProxy(proxy_port, broker.port, tls=server)
    broker.start(client=KafkaSecurity("SSL", ssl_ca_location=str(ca_file)).settings())
    try:
        yield broker.bootstrap, str(ca_file), str(wrong_file), proxy
    finally:
        close_pool()
        proxy.close()
        broker.stop()


def tls_kafka(bootstrap: str, ca_file: str) -> KafkaConfig:
    return KafkaConfig(bootstrap, security=KafkaSecurity("SSL", ssl_ca_location=ca_file))


@pytest.mark.kafka
@pytest.mark.slow
def test_a_pipeline_runs_end_to_end_over_tls_on_dask(tls_broker, dask_executor):
    bootstrap, ca_file, _, proxy = tls_broker
    kafka = tls_kafka(bootstrap, ca_file)
    src, out = "tls-in", "tls-out"
    ensure_topic(kafka.client(), src, 4)
    ensure_topic(kafka.client(), out, 2)
    records = produce_into(kafka, src, 5_000)
    pipeline = payment_pipeline("tls-app", src, out)
    stats = run_to_end(pipeline, RunConfig(app_id=pipeline.name, kafka=kafka, commit_interval_s=0.2,
                                           range_records=1_000), dask_executor, records)
    rows = read_windows(kafka, out)
    assert stats.records_in == len(records) and stats.failed == 0
    assert diff_windows(recompute(records), rows) == []
    assert proxy.handshake_failures == []  # every client (driver, workers, admin) spoke TLS


@pytest.mark.kafka
def test_a_wrong_ca_fails_at_start_naming_the_address_and_the_tls_problem(tls_broker):
    bootstrap, _, wrong_file, _ = tls_broker
    pipeline = payment_pipeline("tls-wrong", "tls-in", "tls-out")
    config = RunConfig(app_id="tls-wrong", kafka=tls_kafka(bootstrap, wrong_file), connect_timeout_s=3)
    with pytest.raises(BrokerUnavailable) as info:
        PipelineRun(pipeline, config, executor=object())
    message = str(info.value)
    assert bootstrap in message and "over SSL" in message
    assert "certificate verify failed" in message or "SSL handshake failed" in message, message


@pytest.mark.kafka
def test_plaintext_clients_cannot_use_the_tls_listener(tls_broker):
    bootstrap, _, _, _ = tls_broker
    pipeline = payment_pipeline("tls-plain", "tls-in", "tls-out")
    config = RunConfig(app_id="tls-plain", kafka=KafkaConfig(bootstrap), connect_timeout_s=2)
    with pytest.raises(BrokerUnavailable, match="over PLAINTEXT"):
        PipelineRun(pipeline, config, executor=object())


def _spy(monkeypatch, seen):
    """Record every Kafka client's config, then build the real client without SASL (the
    embedded broker speaks no SASL), so the run itself works."""
    import confluent_kafka
    from confluent_kafka.admin import AdminClient

    import stream.app.admin
    import stream.sinks.kafka
    import stream.sources.kafka

    def wrap(kind, real):
        def make(config):
            seen.append((kind, dict(config)))
            plain = {k: v for k, v in config.items() if not k.startswith(("sasl.", "security."))}
            return real(plain)
        return make

    monkeypatch.setattr(stream.sources.kafka, "Consumer", wrap("consumer", confluent_kafka.Consumer))
    monkeypatch.setattr(stream.sinks.kafka, "Producer", wrap("producer", confluent_kafka.Producer))
    monkeypatch.setattr(stream.app.admin, "AdminClient", wrap("admin", AdminClient))


@pytest.mark.kafka
def test_sasl_settings_reach_every_client_with_the_password_revealed_only_to_it(
        kafka, topic_name, monkeypatch):
    from stream.execution.local import LocalExecutor

    src, out = topic_name("in"), topic_name("out")
    ensure_topic(kafka.client(), src, 2)
    ensure_topic(kafka.client(), out, 2)
    records = produce_into(kafka, src, 500, partitions=2)
    from confluent_kafka import Producer
    bad = Producer(kafka.producer())
    bad.produce(src, b"\x00not avro", b"k", partition=0)
    bad.flush(10)
    seen: list = []
    _spy(monkeypatch, seen)
    sasl = KafkaConfig(kafka.bootstrap, security=KafkaSecurity(
        "SASL_SSL", "SCRAM-SHA-512", "app-user", SECRET, ssl_verify_hostname=False))
    pipeline = payment_pipeline(topic_name("app"), src, out)
    ex = LocalExecutor()  # range readers run in this process, so the spy sees them too
    stats = run_pipeline(pipeline, RunConfig(app_id=pipeline.name, kafka=sasl, commit_interval_s=0.2),
                         executor=ex, drain=True,
                         until=lambda d: d.stats.records_in >= len(records) and d.caught_up())
    ex.close()
    seen = list(seen)  # the pipeline's clients; the check below reads with its own
    assert stats.records_in == len(records) + 1 and stats.failed == 1
    dead = read_all(kafka.consumer({"group.id": "verify"}), f"{pipeline.name}.dlq", 0)
    assert len(dead) == 1 and all(SECRET.encode() not in v for _, v in dead[0].headers)
    kinds = {kind for kind, _ in seen}
    groups = {c.get("group.id") for kind, c in seen if kind == "consumer"}
    assert kinds == {"consumer", "producer", "admin"}
    # the driver's group member, the workers' range readers and the changelog reader
    assert {pipeline.name, f"{pipeline.name}.reader", f"{pipeline.name}.restore"} <= groups
    for kind, c in seen:
        assert c["security.protocol"] == "SASL_SSL", (kind, c.get("group.id"))
        assert c["sasl.mechanism"] == "SCRAM-SHA-512" and c["sasl.username"] == "app-user"
        assert c["sasl.password"] == SECRET  # a plain string: revealed to the client only


@pytest.mark.kafka
def test_a_failed_sasl_handshake_names_mechanism_and_address_and_shows_no_secret(broker):
    """The embedded broker speaks no SASL: the handshake fails like a wrong password would."""
    env = {**os.environ, "STREAM_SASL_PASSWORD": SECRET, "STREAM_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
           "STREAM_SASL_MECHANISM": "SCRAM-SHA-256", "STREAM_SASL_USERNAME": "app-user"}
    out = subprocess.run([sys.executable, "-m", "stream", "-v", "run", "examples.user_spend:pipeline",
                          "--bootstrap", broker.bootstrap, "--metrics-port", "0", "--local"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    error = [line for line in text.splitlines() if line.startswith("error:")]
    assert error and broker.bootstrap in error[0] and "SCRAM-SHA-256" in error[0], text[-2000:]
    assert error[0].startswith(f"error: authentication failed at {broker.bootstrap} as user 'app-user'")
    assert "no Kafka broker" not in text and "Traceback" not in text
    assert SECRET not in text


def test_secrets_are_masked_in_configs_errors_and_logs(caplog):
    security = KafkaSecurity("SASL_SSL", "PLAIN", "u", SECRET, ssl_key_password=SECRET)
    config = RunConfig(app_id="a", kafka=KafkaConfig("h:1", security=security))
    caplog.set_level(logging.DEBUG)
    logging.getLogger("stream").info("config %s %r", config, config.kafka.client())
    shown = [repr(config), str(config), repr(config.kafka.client()), f"{security}", caplog.text]
    with pytest.raises(ConfigError) as info:
        KafkaSecurity("SASL_SSL", "PLAIN", None, SECRET)
    shown.append(str(info.value))
    assert all(SECRET not in s for s in shown)
    assert "******" in repr(config)



def test_a_secret_travels_to_workers_as_the_name_of_its_variable_never_as_its_value(monkeypatch):
    import pickle

    security = KafkaSecurity("SASL_SSL", "PLAIN", "u", SECRET)
    sent = pickle.dumps(security.settings())
    assert SECRET.encode() not in sent and b"STREAM_SASL_PASSWORD" in sent
    monkeypatch.setenv("STREAM_SASL_PASSWORD", "the-worker-s-own")
    assert pickle.loads(sent)["sasl.password"].reveal() == "the-worker-s-own"
    monkeypatch.delenv("STREAM_SASL_PASSWORD")
    with pytest.raises(ConfigError, match="STREAM_SASL_PASSWORD.*not set in this Dask worker"):
        pickle.loads(sent)["sasl.password"].reveal()
    with pytest.raises(TypeError, match="cannot be sent to a Dask worker"):
        pickle.dumps(Secret(SECRET))  # no variable to travel by


def test_security_settings_are_checked_at_start_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="security_protocol"):
        KafkaSecurity("SASL")
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        KafkaSecurity("SASL_SSL", "GSSAPI", "u", "p")
    with pytest.raises(ConfigError, match="sasl_username"):
        KafkaSecurity("SASL_SSL", "SCRAM-SHA-256")
    with pytest.raises(ConfigError, match="ssl_ca_location.*does not exist"):
        KafkaSecurity("SSL", ssl_ca_location=str(tmp_path / "nope.pem"))
    env = {"STREAM_SECURITY_PROTOCOL": "sasl_ssl", "STREAM_SASL_MECHANISM": "PLAIN",
           "STREAM_SASL_USERNAME": "u", "STREAM_SASL_PASSWORD": SECRET}
    s = KafkaSecurity.from_env(env)
    assert s.protocol == "SASL_SSL" and s.sasl_password == Secret(SECRET)
    assert KafkaSecurity.from_env(env, sasl_username="other").sasl_username == "other"


@pytest.fixture(scope="module")
def tls_dask(ca, tmp_path_factory):
    """A real `dask scheduler` and `dask worker` started with certificates from a test CA."""
    from daskkit import start_scheduler, start_worker, stop_all

    from stream.app.broker import free_port

    d = tmp_path_factory.mktemp("dask-tls")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = {"ca": d / "ca.pem", "cert": d / "cert.pem", "key": d / "key.pem"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    tls = [f"--tls-ca-file={files['ca']}", f"--tls-cert={files['cert']}", f"--tls-key={files['key']}"]
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    procs = [start_scheduler(port, d, "--protocol", "tls", *tls)]
    procs.append(start_worker(address, "tls-worker", d, *tls))
    try:
        yield address, {k: str(v) for k, v in files.items()}, d
    finally:
        stop_all(procs)


@pytest.mark.kafka
@pytest.mark.slow
def test_a_pipeline_runs_on_a_tls_dask_scheduler(tls_dask, kafka, topic_name):
    from stream.app.run import make_executor
    from stream.config import DaskTLS

    address, files, logs = tls_dask
    src, out = topic_name("in"), topic_name("out")
    ensure_topic(kafka.client(), src, 2)
    ensure_topic(kafka.client(), out, 2)
    records = produce_into(kafka, src, 3_000, partitions=2)
    pipeline = payment_pipeline(topic_name("app"), src, out)
    config = RunConfig(app_id=pipeline.name, kafka=kafka, scheduler=address, commit_interval_s=0.2,
                       range_records=1_000, connect_timeout_s=30,
                       dask_tls=DaskTLS(files["ca"], files["cert"], files["key"]))
    executor = make_executor(config)
    try:
        executor.client.wait_for_workers(1, timeout=60)
        executor.refresh_workers()
        stats = run_to_end(pipeline, config, executor, records)
        ran_on = executor.client.run(lambda: "ok")  # the worker answered over TLS
    finally:
        executor.close()
    rows = read_windows(kafka, out)
    assert stats.records_in == len(records) and list(ran_on.values()) == ["ok"]
    assert all(w.startswith("tls://") for w in ran_on)
    assert diff_windows(recompute(records), rows) == []


def test_a_tls_scheduler_needs_certificates_and_plain_addresses_refuse_them(tmp_path):
    from stream.config import DaskTLS

    kafka = KafkaConfig("h:1")
    with pytest.raises(ConfigError, match="'scheduler'.*TLS address"):
        RunConfig(app_id="a", kafka=kafka, scheduler="tls://h:8786")
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    with pytest.raises(ConfigError, match="'dask_tls'.*not tls://"):
        RunConfig(app_id="a", kafka=kafka, scheduler="tcp://h:8786", dask_tls=DaskTLS(str(pem), str(pem), str(pem)))
    with pytest.raises(ConfigError, match="dask_tls.ca_file.*does not exist"):
        DaskTLS(str(tmp_path / "missing.pem"), str(pem), str(pem))
    with pytest.raises(ConfigError, match="'dask_tls'.*needs a CA file"):
        DaskTLS(str(pem))


def test_a_tls_scheduler_with_another_ca_is_reported_with_its_address(tls_dask, tmp_path):
    import trustme

    from stream.app.run import make_executor
    from stream.config import DaskTLS
    from stream.errors import SchedulerUnavailable

    address, files, _ = tls_dask
    other = trustme.CA()
    cert = other.issue_cert("127.0.0.1")
    paths = [tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem")]
    other.cert_pem.write_to_path(str(paths[0]))
    cert.cert_chain_pems[0].write_to_path(str(paths[1]))
    cert.private_key_pem.write_to_path(str(paths[2]))
    config = RunConfig(app_id="a", kafka=KafkaConfig("h:1"), scheduler=address, connect_timeout_s=3,
                       dask_tls=DaskTLS(*map(str, paths)))
    with pytest.raises(SchedulerUnavailable, match=f"no Dask scheduler answered at {address}"):
        make_executor(config)


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port` (Linux: /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in list(f)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hexport = local.rsplit(":", 1)
                if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                    found.add(address)
    return found


@pytest.mark.kafka
def test_safe_defaults_bind_to_loopback(broker):
    from stream.app.cli import build_parser

    if not hasattr(broker, "port"):
        pytest.skip("a broker someone else runs (STREAM_TEST_BOOTSTRAP)")
    # 127.0.0.1 only, whichever broker: Java listens on an IPv6 socket bound to ::ffff:127.0.0.1
    assert listening_addresses(broker.port) in ({"0100007F"}, {"0000000000000000FFFF00000100007F"})
    assert RunConfig(app_id="a", kafka=KafkaConfig("h:1")).metrics_addr == "127.0.0.1"
    assert build_parser().parse_args(["run", "m:p"]).metrics_addr == "127.0.0.1"
    assert build_parser().parse_args(["demo"]).metrics_addr == "127.0.0.1"


def test_kafka_config_options_reach_every_client_with_secret_values_masked():
    from stream.app.cli import build_parser, kafka_config
    from stream.secrets import reveal_config

    args = build_parser().parse_args(["status", "--app", "a", "--bootstrap", "h:1", "--kafka-config",
                                      "client.rack=r7", "--kafka-config", "sasl.oauthbearer.client.secret=Oa-S3cret"])
    config = kafka_config(args)
    for client in (config.client(), config.consumer(), config.producer()):
        assert client["client.rack"] == "r7"
        assert reveal_config(client)["sasl.oauthbearer.client.secret"] == "Oa-S3cret"
        assert "Oa-S3cret" not in repr(client)
    assert "Oa-S3cret" not in repr(config) + str(config)


@pytest.mark.parametrize("argv", [["run", "m:p", "--sasl-password", "Hunter2-pw"],
                                  ["status", "--app", "a", "--kafka-config", "ssl.key.password"],
                                  ["status", "--app", "a", "--ssl-key-password=Hunter2-pw"]])
def test_a_mistyped_secret_option_is_refused_without_echoing_its_value(argv):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "stream", *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "error:" in out.stderr
    assert "Hunter2-pw" not in out.stderr + out.stdout


def _task_bytes(dask_scheduler):
    """Every task the scheduler holds, pickled as Dask would send it on (its arguments are
    objects here: what they pickle to is all the scheduler could ever pass on or log)."""
    import cloudpickle

    return [cloudpickle.dumps(ts.run_spec) for ts in dask_scheduler.tasks.values()]


@pytest.mark.kafka
@pytest.mark.slow
def test_a_planted_password_is_in_no_task_no_worker_log_and_no_command_line(kafka, topic_name):
    import uuid

    import psutil

    from stream.app.run import make_executor

    planted = f"Pl4nted-{uuid.uuid4().hex[:12]}"
    src, out = topic_name("in"), topic_name("out")
    ensure_topic(kafka.client(), src, 2)
    ensure_topic(kafka.client(), out, 2)
    records = produce_into(kafka, src, 3_000, partitions=2)
    # PLAINTEXT: librdkafka takes the key password but has no use for it, so the run works
    # only if every worker read it from its environment (a missing one fails the reader)
    security = KafkaSecurity(ssl_key_password=planted)
    pipeline = payment_pipeline(topic_name("app"), src, out)
    config = RunConfig(app_id=pipeline.name, kafka=KafkaConfig(kafka.bootstrap, security=security),
                       workers=1, commit_interval_s=0.2, range_records=300)
    executor = make_executor(config)  # a local cluster, started after the secret was made
    specs: list[bytes] = []
    try:
        stats = run_to_end(pipeline, config, executor, records,
                           on_step=lambda d: specs.extend(executor.client.run_on_scheduler(_task_bytes)))
        logs = repr(executor.client.get_worker_logs())
        cmdlines = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
    finally:
        executor.close()
    assert stats.records_in == len(records) and stats.task_failures == 0
    assert diff_windows(recompute(records), read_windows(kafka, out)) == []
    assert specs and all(b"STREAM_SSL_KEY_PASSWORD" in s for s in specs)  # the readers' config is there
    assert not [s for s in specs if planted.encode() in s]
    assert planted not in logs and not [c for c in cmdlines if planted in c]


def test_credentials_with_a_plain_tcp_scheduler_are_warned_about_once(caplog):
    from stream.app.broker import free_port
    from stream.app.run import make_executor
    from stream.errors import SchedulerUnavailable

    config = RunConfig(app_id="a", scheduler=f"tcp://127.0.0.1:{free_port()}", connect_timeout_s=0.5,
                       kafka=KafkaConfig("h:1", security=KafkaSecurity("SASL_SSL", "PLAIN", "u", SECRET)))
    caplog.set_level(logging.WARNING)
    with pytest.raises(SchedulerUnavailable):
        make_executor(config)
    warned = [r.getMessage() for r in caplog.records if "not TLS" in r.getMessage()]
    assert len(warned) == 1 and SECRET not in caplog.text
    caplog.clear()
    with pytest.raises(SchedulerUnavailable):
        make_executor(RunConfig(app_id="a", scheduler=config.scheduler, connect_timeout_s=0.5,
                                kafka=KafkaConfig("h:1")))
    assert "not TLS" not in caplog.text  # no credentials, no warning


@pytest.mark.kafka
def test_a_malicious_pickle_in_the_changelog_stops_the_restore_without_running_it(kafka, topic_name, tmp_path):
    """Whoever can write to `<app-id>.changelog` cannot run code in the driver: the restore
    reads a typed format, names the entry it refuses, and the supervisor does not retry."""
    import pickle

    from confluent_kafka import Producer

    from stream.driver.checkpoint import epoch_headers

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src, out, app = topic_name("in"), topic_name("out"), topic_name("app")[-30:]
    for topic in (src, out, f"{app}.changelog"):
        ensure_topic(kafka.client(), topic, 1)
    produce_into(kafka, src, 200, partitions=1)
    p = Producer(kafka.producer())
    p.produce(f"{app}.changelog", pickle.dumps(Evil()), pickle.dumps((src, "\x00meta")), partition=0,
              headers=list(epoch_headers(5001)))
    p.flush(30)
    (tmp_path / "evil_app.py").write_text(f"import helpers\npipeline = helpers.payment_pipeline({app!r}, {src!r}, {out!r})\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'tests' / 'support'}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-m", "stream", "run", "evil_app:pipeline", "--bootstrap",
                           kafka.bootstrap, "--workers", "1", "--metrics-port", "0"],
                          capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"cannot restore the state of {src}[0] from partition 0 of {app}.changelog" in done.stderr
    assert "has a key in no known format: it is a pickle" in done.stderr and "stream reset" in done.stderr
    assert done.stderr.count("error: ") == 1 and "Traceback" not in done.stderr  # not retried
    assert not marker.exists()
    assert read_windows(kafka, out, partitions=1) == []
