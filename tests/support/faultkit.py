"""Fault-test kit: supervised `stream run` processes, a paced input feeder, and the verifier.

The verifier shares no code with what it verifies: it reads with its own consumer and decodes
with fastavro. It reads every output record (read_uncommitted, so an open transaction of a
dead producer cannot block it on the embedded broker, which never times one out) with its
headers and splits them by epoch into committed and aborted ones. The committed epochs are
what a consumer of the group can observe: the group's committed offset on changelog
partition p (the last committed epoch) and the epochs that committed meta entries name (their
JSON `committed` lists). It then compares every committed (key, window) with a recomputation
from the input (none missing, none wrong, none twice), and the dead-letter and late topics
with what the feeder sent there. Aborted copies are only counted.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from helpers import OUT_SCHEMA, PAYMENT, diff_windows, payment_pipeline, recompute

from stream.app.generator import PaymentGenerator, partition_of

ROOT = Path(__file__).resolve().parents[2]
SENTINEL = "sentinel"


class StreamProcess:
    """`stream run fault_app:pipeline` as a user would start it (supervised unless told)."""

    def __init__(self, kafka, app, src, out, workdir: Path, *, faults=(), replica=0,
                 supervise=True, local=True, extra=(), name="run", range_records=500, path="row"):
        self.workdir = workdir
        self.faults = workdir / f"{name}.faults"
        self.faults.write_text("".join(f"{f}\n" for f in faults))
        self.log_path = workdir / f"{name}.log"
        args = [sys.executable, "-m", "stream", "run", "fault_app:pipeline", "--bootstrap",
                kafka.bootstrap, "--app-id", app, "--metrics-port", "0", "--commit-interval", "0.2",
                "--step-timeout", "8", "--replica", str(replica), "--max-restarts", "8", *extra]
        if range_records is not None:
            args += ["--range-records", str(range_records)]
        if local:
            args.append("--local")
        if not supervise:
            args.append("--no-supervise")
        env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests' / 'support'}",
               "STREAM_TEST_APP": app, "STREAM_TEST_SRC": src, "STREAM_TEST_OUT": out,
               "STREAM_FAULTS": str(self.faults), "STREAM_TEST_PATH": path}
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def faults_left(self) -> list[str]:
        return [line for line in self.faults.read_text().splitlines() if line.strip()]

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, timeout=60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the process (the supervisor's child dies with it)."""
        self.proc.kill()
        self.proc.wait(10)

    def child_pid(self) -> int | None:
        import psutil
        kids = psutil.Process(self.proc.pid).children()
        return kids[0].pid if kids else None


class Feeder(threading.Thread):
    """Produce `n` generated payments at about `rate` per second (or until `finish()`), then
    one sentinel per partition far enough ahead to close every window of the real records.

    After every `bad_every`-th payment it also sends, to the same partition, one value that
    does not decode (key `bad-<i>`: it must reach the dead-letter topic, once) and one copy of
    the payment an hour older (payment id `late-<i>`: late on its partition, it must reach
    the late topic, once, and count in no window)."""

    def __init__(self, kafka, topic, n, rate=400.0, partitions=4, seed=11, bad_every=997):
        super().__init__(daemon=True)
        self.kafka, self.topic, self.n, self.rate, self.partitions = kafka, topic, n, rate, partitions
        self.records = list(PaymentGenerator(users=300, step_ms=4, disorder_ms=2_000, seed=seed).records(n))
        self.bad_every = bad_every
        self.bad: list[str] = []    # keys of the undecodable values sent
        self.late: list[str] = []   # payment ids of the late copies sent
        self.sent = 0
        self.error: BaseException | None = None
        self._finish = threading.Event()

    def finish(self):
        """Stop early: what was sent so far (then the sentinels) is the whole input."""
        self._finish.set()

    def run(self):
        try:
            codec = payment_pipeline("x", self.topic, "o").source_spec.codec
            p = Producer(self.kafka.producer())
            t0 = time.monotonic()
            for i, r in enumerate(self.records):
                if self._finish.is_set():
                    self.records = self.records[:i]
                    break
                part = partition_of(r["user_id"], self.partitions)
                p.produce(self.topic, codec.encode(r), r["user_id"].encode(), partition=part)
                if self.bad_every and i % self.bad_every == self.bad_every - 1:
                    old = dict(r, payment_id=f"late-{i}", ts=r["ts"] - 3_600_000)
                    p.produce(self.topic, b"\x00not avro", f"bad-{i}".encode(), partition=part)
                    p.produce(self.topic, codec.encode(old), r["user_id"].encode(), partition=part)
                    self.bad.append(f"bad-{i}")
                    self.late.append(old["payment_id"])
                self.sent = i + 1
                ahead = self.sent / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    p.flush(30)
                    time.sleep(ahead)
            last = max(r["ts"] for r in self.records)
            for part in range(self.partitions):
                # a positive amount: the pipeline filters out the others, and a filtered
                # record moves no event time (the last payment's amount was 0.0 once)
                s = dict(self.records[-1], user_id=f"{SENTINEL}-{part}", payment_id=f"s{part}",
                         ts=last + 60_000, amount=1.0)
                p.produce(self.topic, codec.encode(s), s["user_id"].encode(), partition=part)
            assert p.flush(30) == 0
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@dataclass
class Verdict:
    expected: int          # (key, window) pairs the input defines
    committed: int         # output records of committed epochs
    aborted: int           # output records of aborted epochs (visible on the embedded broker)
    problems: list[str]
    not_committed: dict = field(default_factory=dict)  # epoch -> output records of it not counted
    known: list = field(default_factory=list)           # the epochs taken as committed

    def explain(self) -> str:
        """For a failure: which epochs' outputs were not taken as committed."""
        return (f"uncommitted epochs and their output records: {sorted(self.not_committed.items())[:40]}; "
                f"{len(self.known)} epochs known committed, the last: {self.known[-15:]}")


def _header(m, name):
    for k, v in m.headers:
        if k == name:
            return v.decode()
    return None


# The verifier reads everything and keeps what committed epochs wrote (their headers say
# which). A read_committed reader would stop at the first record of a transaction left open
# by a killed driver whose transactional id never comes back: on the embedded broker such a
# transaction never times out (docs/brokers.md), so all later output would look missing.
class Msg(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list


# On Apache Kafka the verifier also reads as a user of the output does (read_committed): every
# window exactly once, and never a record of an aborted epoch. The embedded broker shows aborted
# records to such readers and never times out a dead producer's transaction, so only there the
# epoch headers alone decide.
STRICT = os.environ.get("STREAM_TEST_BROKER") == "kafka"


def read_partition(kafka, topic, partition, timeout_s=30.0, isolation="read_uncommitted") -> list[Msg]:
    """Every record of one partition to its end (for read_committed: to the last stable offset)."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "verify", "enable.auto.commit": False,
                  "enable.partition.eof": True, "isolation.level": isolation})
    c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    out: list[Msg] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise RuntimeError(f"reading {topic}[{partition}]: {m.error()}")
            out.append(Msg(m.key(), m.value(), m.headers() or []))
    finally:
        c.close()
    raise TimeoutError(f"reading {topic}[{partition}] did not reach its end in {timeout_s:.0f} s")


def decoder(schema):
    parsed = fastavro.parse_schema(schema)
    return lambda value: fastavro.schemaless_reader(io.BytesIO(value), parsed)


COORDINATOR_MOVING = (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                      KafkaError.COORDINATOR_NOT_AVAILABLE)


def committed_epoch_set(kafka, app, changelog, partitions) -> set[int]:
    """The epochs a consumer can tell were committed: the group's offsets on the changelog
    name the last ones; meta entries (JSON with a `committed` list) the earlier ones."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": app})
    try:
        for attempt in range(30):
            try:
                got = c.committed([TopicPartition(changelog, p) for p in range(partitions)], timeout=10)
                failed = [tp.error for tp in got if tp.error is not None]
                if failed:
                    raise KafkaException(failed[0])
                break
            except KafkaException as exc:  # e.g. NOT_COORDINATOR while a restarted broker loads
                err = exc.args[0]
                if attempt == 29 or not (err.retriable() or err.code() in COORDINATOR_MOVING):
                    raise
                time.sleep(1)
    finally:
        c.close()
    known = {tp.offset for tp in got if tp.offset > 0}
    for tp in got:
        for m in read_partition(kafka, changelog, tp.partition):
            try:
                body = json.loads(m.value) if m.value is not None else None
            except (UnicodeDecodeError, ValueError):
                continue  # a state delta, not a meta entry
            if isinstance(body, dict) and "committed" in body:
                known.update(body["committed"])  # a writer names only epochs it saw commit
    return known


def _committed_records(kafka, app, topic, partitions, epochs):
    """(committed messages, aborted count, {epoch: count} not counted) of one output topic."""
    committed, aborted, skipped = [], 0, {}
    for p in range(partitions):
        for m in read_partition(kafka, topic, p):
            assert _header(m, "stream.app") == app
            epoch = int(_header(m, "stream.epoch"))
            if epoch in epochs:
                committed.append(m)
            else:
                aborted += 1
                skipped[epoch] = skipped.get(epoch, 0) + 1
    return committed, aborted, skipped


def exactly(what: str, want: list[str], got: list[str]) -> list[str]:
    """Problems unless `got` holds each of `want` once and nothing else."""
    seen: dict[str, int] = {}
    for g in got:
        seen[g] = seen.get(g, 0) + 1
    return ([f"{what} {w} missing" for w in want if w not in seen] +
            [f"{what} {g} {n} times" for g, n in seen.items() if n > 1] +
            [f"{what} {g} not expected" for g in seen if g not in set(want)])


def read_committed_problems(kafka, app, out, partitions, in_partitions, expected, decode) -> list[str]:
    """What a read_committed consumer of `out` sees wrong: an aborted epoch's record, or a
    window missing, wrong or there twice."""
    msgs = [m for p in range(partitions) for m in read_partition(kafka, out, p, isolation="read_committed")]
    # the committed epochs as of after the read, so an epoch that committed meanwhile is among them
    epochs = committed_epoch_set(kafka, app, f"{app}.changelog", in_partitions)
    aborted = sorted({int(_header(m, "stream.epoch")) for m in msgs} - epochs)
    rows = [r for r in map(decode, (m.value for m in msgs)) if not r["user_id"].startswith(SENTINEL)]
    return ([f"read_committed: records of uncommitted epochs {aborted[:10]} visible"] if aborted else []) + \
        [f"read_committed: {p}" for p in diff_windows(expected, rows)]


def verify(kafka, app, out, records, out_partitions=2, in_partitions=4, last=True,
           bad=(), late=(), rekey=False) -> Verdict:
    """Compare every committed output window with a recomputation from `records`; the
    committed dead letters must be exactly the `bad` keys and the committed late records
    exactly the `late` payment ids, once each. With `rekey`, windows are per merchant (the
    fault app's STREAM_TEST_PATH=rekey)."""
    decode = decoder(OUT_SCHEMA)
    epochs = committed_epoch_set(kafka, app, f"{app}.changelog", in_partitions)
    msgs, aborted, skipped = _committed_records(kafka, app, out, out_partitions, epochs)
    committed = [decode(m.value) for m in msgs]
    rows = [r for r in committed if not r["user_id"].startswith(SENTINEL)]
    expected = recompute([dict(r, user_id=r["merchant_id"]) for r in records] if rekey else records, last=last)
    problems = diff_windows(expected, rows)
    dead, _, _ = _committed_records(kafka, app, f"{app}.dlq", 1, epochs)
    problems += exactly("dead letter", list(bad), [m.key.decode() for m in dead])
    lates, _, _ = _committed_records(kafka, app, f"{app}.late", 1, epochs)
    source = decoder(json.loads((ROOT / PAYMENT).read_text()))
    problems += exactly("late record", list(late), [source(m.value)["payment_id"] for m in lates])
    if STRICT:
        problems += read_committed_problems(kafka, app, out, out_partitions, in_partitions, expected, decode)
    return Verdict(len(expected), len(rows), aborted, problems, skipped, sorted(epochs))


def wait_verified(kafka, app, out, records, timeout=180, procs=(), feeder=None, settle_s=4.0,
                  last=True, rekey=False) -> Verdict:
    """Poll until every window is there (or time runs out); then keep the run going for
    `settle_s` more and verify again, so output written after the first clean verdict (a
    repeat by a restarted driver) is seen too. With `feeder`, its dead letters and late
    records are checked as well. Returns the last verdict."""
    extra = {"bad": feeder.bad, "late": feeder.late} if feeder is not None else {}
    extra["rekey"] = rekey
    deadline = time.monotonic() + timeout
    while True:
        v = verify(kafka, app, out, records, last=last, **extra)
        if not v.problems or time.monotonic() > deadline:
            break
        for proc in procs:
            assert proc.proc.poll() is None, f"stream run exited early:\n{proc.log()[-4000:]}"
        time.sleep(2)
    if v.problems:
        return v
    time.sleep(settle_s)
    return verify(kafka, app, out, records, last=last, **extra)


def wait_for(pred, timeout, what):
    """Wait until `pred()` holds, failing the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


class TcpProxy:
    """A TCP proxy on `port` in front of `target_port`; `cut()` drops every connection and
    refuses new ones until `restore()` (the broker looks unreachable meanwhile). With `tls`
    (a server-side `ssl.SSLContext`) it terminates TLS: clients speak TLS, the target plain TCP."""

    def __init__(self, port: int, target_port: int, tls=None):
        import socket
        self.port, self.target, self.tls = port, ("127.0.0.1", target_port), tls
        self.handshake_failures: list[str] = []
        self.handshake_dropped = 0
        self._socket = socket
        self._conns: list = []
        self._lock = threading.Lock()
        self._server = None
        self.restore()

    def restore(self):
        s = self._socket.socket()
        s.setsockopt(self._socket.SOL_SOCKET, self._socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._server = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, server):
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client):
        if self.tls is not None:
            import ssl
            try:
                client = self.tls.wrap_socket(client, server_side=True)
            except (ssl.SSLEOFError, ConnectionResetError):  # the client hung up mid-handshake
                self.handshake_dropped += 1                   # (closing while connecting): no verdict
                client.close()
                return
            except OSError as exc:  # ssl.SSLError among them: plaintext, or our certificate refused
                self.handshake_failures.append(str(exc))
                client.close()
                return
        try:
            upstream = self._socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        with self._lock:
            self._conns += [client, upstream]
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        self._server.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(self._socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def close(self):
        self.cut()
