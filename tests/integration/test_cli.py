"""The command line as a user runs it: real processes, real broker."""

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from helpers import diff_windows, recompute

from stream.app.admin import ensure_topic
from stream.app.broker import free_port

STREAM = [sys.executable, "-m", "stream"]
ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args, timeout=240, **kw):
    return subprocess.run([*STREAM, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)


@pytest.mark.slow
@pytest.mark.kafka
def test_demo_runs_and_verifies_every_window_with_no_library_noise():
    """`make demo`'s command as it is: a verified result, and a stderr with no librdkafka line
    (`%3|...`), no Dask or Python warning and nothing but the run's own log lines."""
    out = run_cli("demo")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "verified: all" in out.stdout and "windows match an independent recomputation" in out.stdout
    assert "sample results" in out.stdout
    noise = [line for line in out.stderr.splitlines()
             if re.match(r"%\d\|", line) or "Warning" in line or " WARNING " in line or "distributed." in line]
    assert noise == [], out.stderr[-3000:]


def test_run_against_missing_broker_names_the_address():
    address = f"127.0.0.1:{free_port()}"
    out = run_cli("run", "examples.user_spend:pipeline", "--bootstrap", address, "--local",
                  "--metrics-port", "0", timeout=60)
    assert out.returncode == 2
    assert f"error: no Kafka broker answered at {address}" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("option, value, problem", [
    ("--workers", "0", "must be >= 1, got 0"),
    ("--create-topics", "-2", "must be >= 1, got -2"),
    ("--max-restarts", "-1", "must be >= 0, got -1"),
    ("--advance-after", "-1", "must be > 0, got -1"),
    ("--range-records", "1.5", "expected a whole number, got '1.5'"),
    ("--metrics-port", "70000", "must be >= 0 and <= 65535, got 70000"),
    ("--app-id", "has space", "must be 1 to 200 letters"),
    ("--metrics-addr", "not an addr", "expected an IP address or a host name"),
])
def test_a_bad_option_fails_at_once_naming_the_option(option, value, problem):
    t0 = time.monotonic()
    out = run_cli("run", "examples.user_spend:pipeline", "--bootstrap", "127.0.0.1:1", option, value, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"{option}: {problem}" in out.stderr or f"argument {option}: {problem}" in out.stderr, out.stderr
    assert out.stderr.count("error") == 1  # no retries by the supervisor
    assert time.monotonic() - t0 < 30  # nothing was started or waited for


@pytest.mark.parametrize("argv", [["-v", "status", "--app", "a"], ["status", "--app", "a", "-v"],
                                  ["run", "m:p", "--verbose", "--local"]])
def test_global_options_are_accepted_before_or_after_the_command(argv):
    from stream.app.cli import build_parser

    assert build_parser().parse_args(argv).verbose is True
    assert build_parser().parse_args([a for a in argv if a not in ("-v", "--verbose")]).verbose is False


@pytest.mark.kafka
def test_a_busy_metrics_port_fails_before_the_dask_cluster_starts(kafka, topic_name, tmp_path):
    import socket

    src, out = topic_name("in"), topic_name("out")
    ensure_topic(kafka.client(), src, 1)
    ensure_topic(kafka.client(), out, 1)
    (tmp_path / "busy_app.py").write_text(f"import helpers\npipeline = helpers.payment_pipeline('busy', {src!r}, {out!r})\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'tests' / 'support'}"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        done = run_cli("run", "busy_app:pipeline", "--bootstrap", kafka.bootstrap, "--no-supervise",
                       "--metrics-port", str(s.getsockname()[1]), timeout=60, env=env)
    assert done.returncode == 2 and "error: --metrics-port: cannot serve metrics" in done.stderr, done.stderr
    assert "running busy" not in done.stderr and "distributed" not in done.stderr  # no cluster started


def test_run_with_bad_pipeline_reference_says_what_is_wrong():
    out = run_cli("run", "examples.user_spend", "--bootstrap", "127.0.0.1:1", timeout=60)
    assert out.returncode == 2 and "expected MODULE:ATTR" in out.stderr


@pytest.mark.kafka
@pytest.mark.parametrize("kind", ["tumbling", "session", "count"])
def test_stream_run_processes_until_ctrl_c_and_tail_shows_results(kafka, topic_name, tmp_path, kind):
    from helpers import count_windows, sessions
    from payments import produce_into

    src, out = topic_name("in"), topic_name("out")
    ensure_topic(kafka.client(), src, 2)
    ensure_topic(kafka.client(), out, 1)
    records = produce_into(kafka, src, 6_000, partitions=2)
    (tmp_path / "mypipe.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests' / 'support')!r})
        from helpers import count_pipeline, payment_pipeline, session_pipeline
        if {kind!r} == "session":
            pipeline = session_pipeline("cli-app-{out[-8:]}", {src!r}, {out!r}, gap_ms=500, grace_ms=2_500)
        elif {kind!r} == "count":
            pipeline = count_pipeline("cli-app-{out[-8:]}", {src!r}, {out!r}, size=5)
        else:
            pipeline = payment_pipeline("cli-app-{out[-8:]}", {src!r}, {out!r})
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*STREAM, "run", "mypipe:pipeline", "--bootstrap", kafka.bootstrap, "--workers", "1",
                             "--metrics-port", "0"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        rows = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(rows) < 50:
            time.sleep(1)
            rows = _read(kafka, out)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert len(rows) >= 50
    assert "metrics on http://127.0.0.1:" in err and ":0/" not in err  # the port it took, not 0
    if kind == "count":  # every 5 payments of a user, in the order they were produced
        expected = {(w["user_id"], w["window_start"]): w
                    for w in count_windows(records, 5, 5, order=lambda p: int(p["payment_id"].rsplit("-", 1)[1]))}
    else:
        expected = sessions(records, 500) if kind == "session" else recompute(records)
    emitted = _read(kafka, out)
    assert diff_windows({k: v for k, v in expected.items() if k in {(r["user_id"], r["window_start"]) for r in emitted}},
                        emitted) == []
    tail = run_cli("tail", out, "--bootstrap", kafka.bootstrap, "--schema", str(ROOT / "tests" / "support" / "out.avsc"),
                   "--limit", "3", timeout=60)
    assert tail.returncode == 0 and tail.stdout.count('"window_start"') == 3, tail.stderr


def _read(kafka, topic):
    from payments import read_windows

    return read_windows(kafka, topic, partitions=1)


@pytest.mark.kafka
def test_broker_command_prints_bootstrap_and_stops_on_ctrl_c():
    port = free_port()
    proc = subprocess.Popen([*STREAM, "broker", "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"bootstrap: 127.0.0.1:{port}" in line
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the broker process was not started"
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"broker processes left running: {alive}"


@pytest.mark.slow
def test_apache_kafka_broker_command_serves_transactions_and_keeps_its_log_across_a_restart(tmp_path):
    """`stream broker --engine kafka`: the same line once it answers; a transactional producer
    commits; after Ctrl-C and a restart on the same --data-dir the records are still there."""
    from confluent_kafka import Producer

    from stream.app.admin import ensure_topic
    from stream.app.kafka_broker import jars_ok, kafka_home
    from stream.sources.kafka import read_all

    if not jars_ok(kafka_home()):
        if os.environ.get("STREAM_REQUIRE_KAFKA"):
            pytest.fail(f"Apache Kafka jars missing in {kafka_home()}: run make kafka")
        pytest.skip("Apache Kafka jars not fetched (make kafka)")
    port = free_port()

    def start():
        proc = subprocess.Popen([*STREAM, "broker", "--engine", "kafka", "--port", str(port), "--data-dir",
                                 str(tmp_path / "kafka")], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert f"bootstrap: 127.0.0.1:{port}" in lines[1], (lines, proc.stderr.read() if proc.poll() else "")
        return proc

    def stop(proc):
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        assert proc.returncode == 0
        assert not psutil.wait_procs(children, timeout=30)[1], "broker processes left running"

    bootstrap = f"127.0.0.1:{port}"
    proc = start()
    try:
        ensure_topic({"bootstrap.servers": bootstrap}, "kept", 1)
        p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "t1"})
        p.init_transactions(30)
        p.begin_transaction()
        for i in range(10):
            p.produce("kept", str(i).encode(), partition=0)
        p.commit_transaction(30)
        stop(proc)
        proc = start()
        got = read_all({"bootstrap.servers": bootstrap, "group.id": "check",
                        "isolation.level": "read_committed"}, "kept", 0)
        assert [m.value for m in got] == [str(i).encode() for i in range(10)]
    finally:
        if proc.poll() is None:
            stop(proc)


def test_busy_metrics_port_is_a_clear_configuration_error():
    import socket

    from stream.errors import ConfigError
    from stream.metrics import Metrics

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ConfigError, match="metrics_port.*pick another --metrics-port"):
            Metrics("p").serve(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.kafka
def test_ctrl_c_to_the_whole_process_group_stops_the_demo_cleanly():
    """A terminal's Ctrl-C reaches the driver and the Dask workers; the run must still stop cleanly."""
    proc = subprocess.Popen([*STREAM, "demo", "--duration", "120", "--rate", "5000", "--workers", "2",
                             "--metrics-port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[") and " in " in line and "in         0" not in line:
                break
        kids = psutil.Process(proc.pid).children(recursive=True)
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = "".join(lines) + rest
    assert proc.returncode == 0, output[-3000:]
    assert "stopped early" in output
    _, alive = psutil.wait_procs(kids, timeout=15)
    assert not alive, f"left running: {alive}"


@pytest.mark.kafka
def test_generate_produces_keyed_payments_into_a_topic_it_creates(kafka, topic_name):
    from stream.app.generator import partition_of
    from stream.codecs.avro import AvroCodec
    from stream.codecs.schemas import load_schema
    from stream.sources.kafka import read_all

    topic = topic_name("gen")
    t0 = time.time()
    out = run_cli("generate", "--bootstrap", kafka.bootstrap, "--topic", topic, "--records", "3000",
                  "--users", "50", "--create-topics", "3", timeout=120)
    t1 = time.time()
    assert out.returncode == 0, out.stderr[-2000:]
    assert "done" in out.stdout
    codec = AvroCodec(load_schema(ROOT / "schemas" / "payment.avsc"))
    seen = 0
    for p in range(3):
        for m in read_all(kafka.consumer({"group.id": "verify"}), topic, p):
            record = codec.decode(m.value)
            assert m.key.decode() == record["user_id"] and partition_of(record["user_id"], 3) == p
            # as fast as possible: event time is the wall clock (less up to 2 s of disorder),
            # never ahead of it, so a second run's payments are not late
            assert t0 - 3 <= record["ts"] / 1000 <= t1
            seen += 1
    assert seen == 3000


@pytest.mark.kafka
@pytest.mark.parametrize("supervised", [True, False])
def test_ctrl_c_while_the_local_cluster_starts_stops_the_run(kafka, topic_name, supervised):
    """Ctrl-C to the terminal's process group while the Dask workers start: the run stops, by
    itself, cleanly (no traceback, nothing left running), not after a second Ctrl-C."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([*STREAM, "run", "examples.user_spend:pipeline", "--bootstrap", kafka.bootstrap,
                             "--create-topics", "2", "--metrics-port", "0", "--workers", "2",
                             "--app-id", topic_name("app")[-40:], *([] if supervised else ["--no-supervise"])],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline, kids = time.monotonic() + 90, []
        while time.monotonic() < deadline and proc.poll() is None:  # the first worker process
            kids = psutil.Process(proc.pid).children(recursive=True)
            if any("spawn_main" in " ".join(_cmdline(k)) for k in kids):
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode in (0, 130), output[-3000:]
    assert "Traceback" not in output and "killing" not in output, output[-3000:]
    _, alive = psutil.wait_procs(kids, timeout=15)
    assert not alive, f"left running: {alive}"


def _cmdline(p):
    try:
        return p.cmdline()
    except psutil.Error:
        return []


@pytest.mark.kafka
def test_a_second_run_of_the_same_app_and_replica_refuses_naming_the_first(kafka, topic_name):
    """Two `stream run` of one application id and replica would fence each other in a loop:
    the second refuses at once (exit 2, not retried) and the first runs on untouched; with
    another --replica, or --takeover, it starts."""
    app = topic_name("app")[-40:]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [*STREAM, "run", "examples.user_spend:pipeline", "--bootstrap", kafka.bootstrap, "--create-topics", "2",
            "--metrics-port", "0", "--workers", "1", "--local", "--app-id", app]
    first = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _lease_held(app):
            time.sleep(0.2)
        second = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert first.poll() is None, "the first run stopped"
    finally:
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=60)
    assert second.returncode == 2, second.stderr[-3000:]
    assert f"error: application {app!r} replica 0 is already running (pid " in second.stderr
    assert "--takeover" in second.stderr and second.stderr.count("error:") == 1
    assert first.returncode == 0 and "fenced" not in output, output[-3000:]


def _lease_held(app):
    import tempfile

    return any(Path(tempfile.gettempdir()).glob(f"stream-leases-{os.getuid()}/{app}.0.*.json"))


@pytest.mark.kafka
def test_a_window_over_a_key_the_input_is_not_partitioned_by_stops_the_run_naming_it(
        kafka, topic_name, tmp_path):
    """Payments partitioned by user, windows by merchant: every merchant is on both partitions,
    so each partition would emit its own partial window per merchant. The run stops with an
    error naming the key and both partitions (exit code 2: the supervisor does not restart
    it). Results one partition committed before the other was first read can be there: only
    `source(keyed_by=...)` catches this before anything runs."""
    from payments import produce_into

    src, out = topic_name("in"), topic_name("out")
    ensure_topic(kafka.client(), src, 2)
    ensure_topic(kafka.client(), out, 1)
    produce_into(kafka, src, 6_000, partitions=2)
    (tmp_path / "bymerchant.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests' / 'support')!r})
        from helpers import payment_pipeline
        pipeline = payment_pipeline("cli-rekey-{out[-8:]}", {src!r}, {out!r},
                                    map_fn=lambda r: dict(r, user_id=r["merchant_id"]))
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([*STREAM, "run", "bymerchant:pipeline", "--bootstrap", kafka.bootstrap,
                           "--workers", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 2, done.stderr[-3000:]
    assert re.search(rf"error: key 'm\d+' of key_by\('user_id'\) came from {src}\[[01]\] and from {src}\[[01]\]: "
                     "the input is not partitioned by the window's key", done.stderr), done.stderr[-3000:]
    assert "Traceback" not in done.stderr
