"""Shared fixtures: one embedded broker and one Dask cluster per test session.

Each test makes its own topics (`topic_name`), so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid

import pytest

# Corrupt values make polars' Avro reader panic (caught: the batch goes record by record);
# keep that to one line on stderr, not a full Rust backtrace.
os.environ["RUST_BACKTRACE"] = "0"

from stream.config import KafkaConfig


class ExistingBroker:
    """A broker someone else runs (STREAM_TEST_BOOTSTRAP=host:port)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap


def start_test_broker():
    """The broker of the `kafka` tests: STREAM_TEST_BROKER=tansu (default, embedded) or kafka
    (Apache Kafka from `make kafka`), or an existing one at STREAM_TEST_BOOTSTRAP."""
    if os.environ.get("STREAM_TEST_BOOTSTRAP"):
        return ExistingBroker(os.environ["STREAM_TEST_BOOTSTRAP"])
    engine = os.environ.get("STREAM_TEST_BROKER", "tansu")
    if engine == "kafka":
        from stream.kafka_broker import KafkaBroker
        return KafkaBroker().start()
    if engine != "tansu":
        raise pytest.UsageError(f"STREAM_TEST_BROKER must be tansu or kafka, got {engine!r}")
    from stream.broker import EmbeddedBroker
    return EmbeddedBroker().start()


def pytest_report_header(config):
    where = os.environ.get("STREAM_TEST_BOOTSTRAP") or os.environ.get("STREAM_TEST_BROKER", "tansu")
    return f"kafka tests run on: {where}"


@pytest.fixture(scope="session")
def broker():
    from stream.sources.kafka import close_pool

    b = start_test_broker()
    try:
        yield b
        close_pool()  # pooled readers of this process: close them before their broker goes
    finally:
        if hasattr(b, "stop"):
            b.stop()


@pytest.fixture
def kafka(broker) -> KafkaConfig:
    return KafkaConfig(broker.bootstrap)


@pytest.fixture
def topic_name(request):
    def make(prefix: str = "t") -> str:
        return f"{prefix}-{request.node.name[:40].replace('[', '-').replace(']', '')}-{uuid.uuid4().hex[:8]}"
    return make


@pytest.fixture(scope="session")
def dask_executor():
    from stream.execution.dask import DaskExecutor

    ex = DaskExecutor(workers=2)
    yield ex
    ex.close()


@pytest.fixture(params=["local", "dask"])
def executor(request):
    """The same pipeline tests run under both executors."""
    if request.param == "dask":
        yield request.getfixturevalue("dask_executor")
    else:
        from stream.execution.local import LocalExecutor

        ex = LocalExecutor()
        yield ex
        ex.close()
