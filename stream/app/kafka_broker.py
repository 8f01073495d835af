"""Apache Kafka in KRaft mode, one node, from jars fetched from Maven Central.

`stream broker --engine kafka` and the test suite (STREAM_TEST_BROKER=kafka) start it: a
combined broker and controller on a loopback port, a fresh log directory under a temporary
folder, settings for one node (replication factor 1 for the offsets and transaction topics,
`min.insync.replicas` 1) and a short ceiling on transaction timeouts, so a dead producer's
transaction is aborted within a minute. Unlike the embedded broker it keeps its log on disk:
a restart on the same directory loses nothing.

The jars are pinned in deploy/kafka/pom.xml and checked against deploy/kafka/jars.sha256;
`fetch_jars` (run by `make kafka` and .ci/run) puts them in ~/.cache/stream/kafka-VERSION.
Starting never fetches.

>>> kafka_home().name
'kafka-4.1.1'
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from stream.app.broker import BrokerNotFound, BrokerProcess, free_port
from stream.errors import StreamError

VERSION = "4.1.1"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
TRANSACTION_TIMEOUT_MAX_MS = 60_000


def cache_dir() -> Path:
    """Where fetched Java components live: $STREAM_CACHE, else ~/.cache/stream."""
    return Path(os.environ.get("STREAM_CACHE", Path.home() / ".cache" / "stream"))


def kafka_home() -> Path:
    """Where the jars of the pinned version live."""
    return cache_dir() / f"kafka-{VERSION}"


def _checksums() -> dict[str, str]:
    lines = (DEPLOY / "jars.sha256").read_text().split("\n")
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


def jars_ok(home: Path) -> bool:
    """True when every pinned jar is there with its checksum."""
    for name, digest in _checksums().items():
        path = home / name
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            return False
    return True


def maven_copy(pom: Path, into: Path, what: str) -> None:
    """Copy the dependencies `pom` pins from Maven Central into `into`, saying so."""
    if shutil.which("mvn") is None:
        raise BrokerNotFound(f"fetching {what} needs Maven: apt-get install maven")
    print(f"fetching {what} from Maven Central into {into} ...", flush=True)
    done = subprocess.run(["mvn", "-q", "-B", "-C", "-f", str(pom), "dependency:copy-dependencies",
                           f"-DoutputDirectory={into}"], capture_output=True, text=True)
    if done.returncode != 0:  # its output only then: Maven 3.8 prints colour codes even with -q
        tail = "\n".join(done.stdout.splitlines()[-15:])
        raise BrokerNotFound(f"Maven could not fetch {what} (is Maven Central reachable?):\n{tail}")


def fetch_jars() -> Path:
    """Fetch the pinned jars with Maven (once; later calls only check them)."""
    home = kafka_home()
    if jars_ok(home):
        return home
    maven_copy(DEPLOY / "pom.xml", home, f"Apache Kafka {VERSION} jars")
    if not jars_ok(home):
        raise BrokerNotFound(f"the jars in {home} do not match deploy/kafka/jars.sha256")
    return home


def java() -> str:
    """The java binary (17 or later), or BrokerNotFound saying how to get one."""
    path = shutil.which("java")
    if path is None:
        raise BrokerNotFound("--engine kafka needs Java 17 or later: apt-get install openjdk-17-jre-headless")
    out = subprocess.run([path, "-version"], capture_output=True, text=True).stderr
    try:
        major = int(out.split('"')[1].split(".")[0])
    except (IndexError, ValueError):
        major = 0
    if major < 17:
        raise BrokerNotFound(f"--engine kafka needs Java 17 or later; {path} is: {out.splitlines()[0] if out else '?'}")
    return path


class KafkaBroker(BrokerProcess):
    """Apache Kafka, one KRaft node on a loopback port; the same interface as EmbeddedBroker."""

    def __init__(self, port: int | None = None, log_path: str | Path | None = None,
                 data_dir: str | Path | None = None, advertised_port: int | None = None) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port  # another port: a proxy in front
        self.controller_port = free_port()
        self.log_path = log_path
        self._tmp = None if data_dir is not None else tempfile.mkdtemp(prefix="stream-kafka-")
        self.data_dir = Path(data_dir) if data_dir is not None else Path(str(self._tmp))
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def _properties(self) -> Path:
        path = self.data_dir / "server.properties"
        settings = {
            "process.roles": "broker,controller", "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.advertised_port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "log"),
            "offsets.topic.replication.factor": "1", "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1", "min.insync.replicas": "1",
            "group.initial.rebalance.delay.ms": "0", "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "transaction.max.timeout.ms": str(TRANSACTION_TIMEOUT_MAX_MS),
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "5000",
        }
        path.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        return path

    def start(self, timeout_s: float = 90.0) -> "KafkaBroker":
        """Format the log directory (first start), start the broker, wait until it answers."""
        from stream.app.admin import wait_for_broker

        home, jvm = kafka_home(), java()
        if not jars_ok(home):
            raise BrokerNotFound(f"Apache Kafka {VERSION} is not fetched yet: run `make kafka` "
                                 f"(or python -m stream.app.kafka_broker) to put its jars in {home}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self._properties()
        cp = ["-cp", f"{home}/*"]
        if not (self.data_dir / "log" / "meta.properties").exists():
            subprocess.run([jvm, *cp, "kafka.tools.StorageTool", "format", "-t", uuid.uuid4().hex[:22],
                            "-c", str(props)], check=True, capture_output=True)
        self._spawn([jvm, "-Xmx1g", *cp, "kafka.Kafka", str(props)], self.log_path)
        try:
            wait_for_broker({"bootstrap.servers": self.bootstrap}, timeout_s)
        except StreamError:
            self.stop()
            raise
        return self

    def stop(self, remove: bool = True) -> None:
        """Stop the broker (SIGTERM: a clean shutdown); `remove` its temporary log directory."""
        self._end(30)
        if remove and self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


if __name__ == "__main__":
    import sys

    try:
        print(f"Apache Kafka {VERSION} jars in {fetch_jars()}")
    except (BrokerNotFound, subprocess.CalledProcessError) as exc:
        sys.exit(f"error: {exc}")
