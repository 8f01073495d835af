"""Recovery: SIGKILL the driver of a supervised `stream run` and time the new driver's first commit.

The run is what a user starts (`python -m stream run ...`, supervised, its own Dask cluster),
fed by the paced producer at a steady rate. Once the driver commits, its process is killed
with SIGKILL; the supervisor starts a new one, which aborts the open transaction, restores
state and commits. The figure is the wall time from the kill to that first commit, read from
the new driver's `/metrics` (`stream_driver_restarts_total` >= 1 and `stream_commits_total`
>= 1), polled every 50 ms.

    from bench.recovery import recovery
    recovery("127.0.0.1:9092", "rec-in", "rec-out", rate=5_000)  # {"first_commit_s": ..., ...}
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
APP = "from bench.workloads import windowed\npipeline = windowed({src!r}, {out!r})\n"


def scrape(port: int) -> dict[str, float]:
    """`name -> value` of the un-labelled-by-partition series at `/metrics` ({} when down)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            return parse(r.read().decode())
    except OSError:
        return {}


def parse(text: str) -> dict[str, float]:
    """The first value of each metric name in Prometheus' text format.

    >>> parse('stream_commits_total{pipeline="bench"} 3.0\\n# HELP x\\n')
    {'stream_commits_total': 3.0}
    """
    out: dict[str, float] = {}
    for m in re.finditer(r"^([a-z_]+)(?:\{[^}]*\})? (\S+)$", text, re.M):
        out.setdefault(m.group(1), float(m.group(2)))
    return out


def _wait(what: str, test: Any, timeout_s: float, proc: subprocess.Popen[bytes]) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stream run exited ({proc.returncode}) while waiting for {what}")
        if test():
            return time.time()
        time.sleep(0.05)
    raise TimeoutError(f"no {what} within {timeout_s:.0f} s")


def _driver(run: psutil.Process) -> psutil.Process:
    """The supervised driver: the child started with --no-supervise."""
    for child in run.children():
        if "--no-supervise" in child.cmdline():
            return child
    raise RuntimeError("no driver process under stream run")


def recovery(bootstrap: str, src: str, out: str, rate: float, warm_s: float = 10.0,
             timeout_s: float = 120.0) -> dict[str, Any]:
    """Kill the driver of a running pipeline once, after `warm_s` of commits; the figures."""
    from bench.measure import Feeder
    from stream.app.broker import free_port

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "recovery_app.py").write_text(APP.format(src=src, out=out))
        feeder = Feeder(bootstrap, src, rate, warm_s + timeout_s + 60)
        env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}"}
        log = open(Path(tmp, "run.log"), "wb")
        proc = subprocess.Popen([sys.executable, "-m", "stream", "run", "recovery_app:pipeline",
                                 "--bootstrap", bootstrap, "--metrics-port", str(port),
                                 "--app-id", f"recovery-{src}"], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            _wait("first commit", lambda: scrape(port).get("stream_commits_total", 0) >= 1, timeout_s, proc)
            time.sleep(warm_s)
            killed = time.time()
            _driver(psutil.Process(proc.pid)).send_signal(signal.SIGKILL)
            back = _wait("commit of the restarted driver",
                         lambda: (m := scrape(port)).get("stream_driver_restarts_total", 0) >= 1
                         and m.get("stream_commits_total", 0) >= 1, timeout_s, proc)
            ready = scrape(port)
            return {"first_commit_s": round(back - killed, 2), "rate": rate, "warm_s": warm_s,
                    "restarts": ready.get("stream_driver_restarts_total")}
        except BaseException:
            log.flush()
            sys.stderr.write(Path(tmp, "run.log").read_text()[-3000:])
            raise
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            feeder.proc.kill()
            log.close()
