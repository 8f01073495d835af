"""Real Dask processes for tests: `dask scheduler` and `dask worker`, the command-line tools a
user starts, with logs in a folder and the tests' modules importable (pipelines unpickle)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASK = str(Path(sys.executable).with_name("dask"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "tests" / "support")}


def _dask(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([DASK, *args, "--no-dashboard"], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def start_scheduler(port: int, log_dir: Path, *extra: str) -> subprocess.Popen:
    return _dask(["scheduler", "--host", "127.0.0.1", "--port", str(port), *extra], log_dir / "scheduler.log")


def start_worker(address: str, name: str, log_dir: Path, *extra: str) -> subprocess.Popen:
    return _dask(["worker", address, "--nthreads", "1", "--name", name, *extra], log_dir / f"{name}.log")


def stop_all(procs: list[subprocess.Popen]) -> None:
    """Terminate, newest first, and wait; kill what does not go within 20 s."""
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
