"""The pure core imports no Kafka, Dask or Prometheus client."""

import subprocess
import sys

PURE = ["operators", "operators.aggregate", "operators.transform", "stream.records", "stream.pipeline",
        "stream.windows.specs", "stream.windows.eventtime", "stream.windows.store",
        "stream.windows.sessions", "stream.windows.counts", "stream.windows.merge", "stream.compute", "stream.state",
        "stream.planning", "stream.driver_core",
        "stream.testing"]


def test_pure_core_imports_no_io_clients():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in PURE) +
            "bad = [m for m in ('confluent_kafka', 'distributed', 'prometheus_client') if m in sys.modules]\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
