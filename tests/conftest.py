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


@pytest.fixture(scope="session")
def broker():
    from stream.broker import EmbeddedBroker

    from stream.sources.kafka import close_pool

    with EmbeddedBroker() as b:
        yield b
        close_pool()  # pooled readers of this process: close them before their broker goes


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
