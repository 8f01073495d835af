"""A real schema registry for the tests: Apicurio Registry, from Maven Central.

Apicurio serves Confluent's schema registry API under `/apis/ccompat/v7`, which is what
`RegistryAvroCodec` (through `confluent_kafka.schema_registry`) talks to. It keeps schemas in
memory: every start is empty. The archive is pinned in deploy/registry/pom.xml, checked
against deploy/registry/archive.sha256, and unpacked by `fetch_registry` (run by `make
registry` and .ci/run) into ~/.cache/stream/apicurio-registry-VERSION. Starting never fetches.

>>> registry_home().name
'apicurio-registry-2.6.13.Final'
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import time
import urllib.request
from pathlib import Path

from stream.app.broker import BrokerNotFound, BrokerProcess, free_port
from stream.app.kafka_broker import cache_dir, java, maven_copy
from stream.errors import StreamError

VERSION = "2.6.13.Final"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "registry"
ARCHIVE = f"apicurio-registry-app-{VERSION}-all.tar.gz"
RUNNER = f"apicurio-registry-app-{VERSION}-runner.jar"
API = "/apis/ccompat/v7"


def registry_home() -> Path:
    """Where the unpacked registry of the pinned version lives."""
    return cache_dir() / f"apicurio-registry-{VERSION}"


def _unpacked(home: Path) -> bool:
    return (home / RUNNER).exists() and (home / ".unpacked").exists()


def fetch_registry() -> Path:
    """Fetch the pinned archive with Maven, check it and unpack it (once)."""
    home = registry_home()
    if _unpacked(home):
        return home
    download = home / "download"
    maven_copy(DEPLOY / "pom.xml", download, f"Apicurio Registry {VERSION}")
    archive = download / ARCHIVE
    want = (DEPLOY / "archive.sha256").read_text().split()[0]
    if hashlib.sha256(archive.read_bytes()).hexdigest() != want:
        raise BrokerNotFound(f"{archive} does not match deploy/registry/archive.sha256")
    with tarfile.open(archive) as tar:
        tar.extractall(home, filter="data")
    shutil.rmtree(download)
    (home / ".unpacked").write_text(want)
    return home


class ApicurioRegistry(BrokerProcess):
    """Apicurio Registry on a loopback port; `url` is the Confluent-compatible API's base."""

    def __init__(self, port: int | None = None, log_path: str | Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API}"

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def start(self, timeout_s: float = 90.0) -> "ApicurioRegistry":
        """Start the registry and wait until its API answers."""
        home, jvm = registry_home(), java()
        if not _unpacked(home):
            raise BrokerNotFound(f"Apicurio Registry {VERSION} is not fetched yet: run `make registry` "
                                 f"(or python -m stream.app.registry_server) to put it in {home}")
        self._spawn([jvm, "-Xmx512m", f"-Dquarkus.http.port={self.port}", "-Dquarkus.http.host=127.0.0.1",
                     "-jar", str(home / RUNNER)], self.log_path, cwd=home)
        deadline = time.monotonic() + timeout_s
        while not self._answers():
            if not self.alive() or time.monotonic() > deadline:
                self.stop()
                raise StreamError(f"Apicurio Registry did not answer at {self.url} within "
                                  f"{timeout_s:.0f} s; see {self.log_path or 'its output'}")
            time.sleep(0.3)
        return self

    def stop(self) -> None:
        self._end(20)


if __name__ == "__main__":
    import sys

    try:
        print(f"Apicurio Registry {VERSION} in {fetch_registry()}")
    except (BrokerNotFound, subprocess.CalledProcessError) as exc:
        sys.exit(f"error: {exc}")
