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

from stream.admin import ensure_topic
from stream.codecs.avro import AvroCodec
from stream.config import KafkaConfig, KafkaSecurity, RunConfig
from stream.errors import BrokerUnavailable, ConfigError
from stream.runner import PipelineRun, run_pipeline
from stream.secrets import Secret
from stream.sources.kafka import read_all

from helpers import OUT_SCHEMA, diff_windows, payment_pipeline, recompute
from tests_payments import produce_into

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-Pa55-7f1d"


@pytest.fixture(scope="module")
def ca():
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_broker(ca, tmp_path_factory):
    """The embedded broker behind a TLS proxy; yields (bootstrap, CA file, wrong CA file)."""
    import trustme

    from stream.broker import EmbeddedBroker, free_port
    from stream.sources.kafka import close_pool

    from faultkit import TcpProxy

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
    stats = run_pipeline(pipeline, RunConfig(app_id=pipeline.name, kafka=kafka, commit_interval_s=0.2,
                                             range_records=1_000),
                         executor=dask_executor, drain=True,
                         until=lambda d: d.stats.records_in >= len(records) and d.caught_up())
    codec = AvroCodec(OUT_SCHEMA)
    rows = [codec.decode(m.value) for p in range(2)
            for m in read_all(kafka.consumer({"group.id": "verify"}), out, p)]
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

    import stream.admin
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
    monkeypatch.setattr(stream.admin, "AdminClient", wrap("admin", AdminClient))


@pytest.mark.kafka
def test_sasl_settings_reach_every_client_with_the_password_revealed_only_to_it(
        kafka, topic_name, monkeypatch):
    from stream.execution.local import LocalExecutor

    src, out = topic_name("in"), topic_name("out")
    ensure_topic(kafka.client(), src, 2)
    ensure_topic(kafka.client(), out, 2)
    records = produce_into(kafka, src, 500, partitions=2)
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
    assert stats.records_in == len(records)
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
    out = subprocess.run([sys.executable, "-m", "stream.cli", "-v", "run", "examples.user_spend:pipeline",
                          "--bootstrap", broker.bootstrap, "--metrics-port", "0", "--local"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    error = [line for line in text.splitlines() if line.startswith("error:")]
    assert error and broker.bootstrap in error[0] and "SCRAM-SHA-256" in error[0], text[-2000:]
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
    import pickle
    assert pickle.loads(pickle.dumps(Secret(SECRET))).reveal() == SECRET  # travels to workers


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
