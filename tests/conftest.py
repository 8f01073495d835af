"""Shared fixtures: one embedded broker and one Dask cluster per test session.

Each test makes its own topics (`topic_name`), so tests never see each other's data.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

# Corrupt values make polars' Avro reader panic (caught: the batch goes record by record);
# keep that to one line on stderr, not a full Rust backtrace.
os.environ["RUST_BACKTRACE"] = "0"

# The kits, helpers and apps the tests share live in tests/support and import by plain name
# (`from helpers import ...`), from any folder of tests.
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from stream.config import KafkaConfig


class ExistingBroker:
    """A broker someone else runs (STREAM_TEST_BOOTSTRAP=host:port)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap


def broker_class():
    """The class of the broker the `kafka` tests start: STREAM_TEST_BROKER=tansu (default, the
    embedded one) or kafka (Apache Kafka from `make kafka`)."""
    engine = os.environ.get("STREAM_TEST_BROKER", "tansu")
    if engine == "kafka":
        from stream.app.kafka_broker import KafkaBroker
        return KafkaBroker
    if engine != "tansu":
        raise pytest.UsageError(f"STREAM_TEST_BROKER must be tansu or kafka, got {engine!r}")
    from stream.app.broker import EmbeddedBroker
    return EmbeddedBroker


def start_test_broker():
    """The broker of the `kafka` tests, or an existing one at STREAM_TEST_BOOTSTRAP."""
    if os.environ.get("STREAM_TEST_BOOTSTRAP"):
        return ExistingBroker(os.environ["STREAM_TEST_BOOTSTRAP"])
    return broker_class()().start()


def broker_name() -> str:
    if os.environ.get("STREAM_TEST_BOOTSTRAP"):
        return f"the broker at {os.environ['STREAM_TEST_BOOTSTRAP']}"
    if os.environ.get("STREAM_TEST_BROKER", "tansu") == "kafka":
        from stream.app.kafka_broker import VERSION
        return f"Apache Kafka {VERSION}"
    return "the embedded broker (Tansu)"


def pytest_report_header(config):
    return f"kafka-marked tests run on {broker_name()}"


def pytest_terminal_summary(terminalreporter):
    """Name the broker the `kafka`-marked tests ran on, with their outcomes."""
    outcomes: dict[str, str] = {}
    for outcome in ("passed", "skipped", "failed", "error"):
        for r in terminalreporter.stats.get(outcome, []):
            if "kafka" in getattr(r, "keywords", {}) and (r.when == "call" or outcome != "passed"):
                outcomes[r.nodeid] = outcome
    if outcomes:
        counts = {o: list(outcomes.values()).count(o) for o in dict.fromkeys(outcomes.values())}
        told = ", ".join(f"{n} {o}" for o, n in counts.items())
        terminalreporter.write_line(f"kafka-marked tests on {broker_name()}: {told}")


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
