"""Dask executor: range tasks on a `distributed` cluster, partition `p` pinned to one worker.

By default starts an in-process `LocalCluster` (one single-threaded worker process per
core); with `scheduler="tcp://host:8786"` it uses an existing cluster.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import dask
from distributed import Client, Future, LocalCluster, wait as dask_wait

from stream.errors import SchedulerUnavailable
from stream.secrets import worker_environment

log = logging.getLogger(__name__)
RESULT_TIMEOUT_S = 10.0  # fetching a finished task's result; past it the range is read again
# distributed logs every worker start and stop at INFO; keep the user's console for progress.
for _name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.core",
              "distributed.worker", "distributed.http.proxy"):
    logging.getLogger(_name).setLevel(logging.WARNING)
dask.config.set({"logging.distributed": "warning"})
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # read by worker processes at start


_IGNORE_SIGINT = """#!/bin/sh
# Written by stream.execution.dask: a Dask worker process ignores SIGINT from its start on.
trap '' INT
exec {python} "$@"
"""


def _worker_executable() -> str:
    """A wrapper that starts Python with SIGINT ignored (an ignored signal stays ignored across
    exec, and Python keeps it so): the program multiprocessing spawns Dask workers with."""
    text = _IGNORE_SIGINT.format(python=shlex.quote(sys.executable))
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "stream"  # not /tmp: may be noexec
    path = cache / f"worker-{digest}.sh"
    if not path.exists():
        try:
            cache.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            tmp.chmod(0o755)
            os.replace(tmp, path)
        except OSError as exc:  # no writable cache: workers start as usual, SIGINT not ignored
            log.warning("cannot write %s (%s): a terminal's Ctrl-C also reaches the Dask workers", path, exc)
            return sys.executable
    return str(path)


def _start_local_cluster(workers: int) -> LocalCluster:
    """A LocalCluster whose worker processes ignore SIGINT, started without losing a Ctrl-C.

    Ctrl-C reaches every process of the terminal's process group (without the supervisor); the
    driver stops cleanly on it, but workers that died from it would leave in-flight tasks
    pending forever. Workers are spawned through a wrapper that ignores SIGINT, so they never
    see it, while the driver keeps its own handler: a Ctrl-C during the start is held until
    the cluster is up, then handed to that handler (a clean stop).
    """
    multiprocessing.get_context("spawn").set_executable(_worker_executable())
    main = threading.current_thread() is threading.main_thread()
    held: list[int] = []
    handler = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum)) if main else None
    try:
        # Workers sample their stacks every 10 ms for the dashboard (not served here) and keep
        # an hour of it: CPU taken from the tasks, and memory that grows for that hour.
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            # secrets reach the workers through their environment, never inside a task; the
            # scheduler's HTTP routes take a free loopback port (by default 8787, with a
            # warning when another cluster has it)
            return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                dashboard_address="127.0.0.1:0", silence_logs=False, env=worker_environment())
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
            if held and callable(handler):
                handler(signal.SIGINT, None)  # the driver's own: a clean stop, or KeyboardInterrupt


class DaskExecutor:
    """Executor protocol over a Dask client; tasks for pin `p` prefer worker `p mod n`."""

    def __init__(self, scheduler: str | None = None, workers: int = 2,
                 connect_timeout_s: float = 10.0, security: Any = None) -> None:
        self.cluster: LocalCluster | None = None
        if scheduler is None:
            self.cluster = _start_local_cluster(workers)
            address = self.cluster.scheduler_address
        else:
            address = scheduler
        try:
            self.client = Client(address, timeout=f"{connect_timeout_s}s",
                                 **({"security": security} if security is not None else {}))
        except (OSError, TimeoutError) as exc:
            self._close_cluster()
            detail = type(exc).__name__ + (f": {exc}" if security is not None and "SSL" in str(exc) else "")
            raise SchedulerUnavailable(address, connect_timeout_s, detail) from exc
        self.address = address
        self._workers: list[str] = []
        self.refresh_s = 5.0  # how often submit() looks for workers that joined or left
        self._refreshed = time.monotonic()
        self.refresh_workers()

    def refresh_workers(self) -> list[str]:
        """Addresses of the connected workers, sorted (the pinning order)."""
        self._workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        return self._workers

    @property
    def workers(self) -> int:
        return len(self._workers)

    def connected_workers(self) -> int:
        """Workers the scheduler knows now (asks it; 0 when it cannot be reached)."""
        if self.client.status != "running":
            return 0
        try:
            info = self.client.scheduler_info(n_workers=0)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the scheduler is gone
            return 0
        return int(info.get("n_workers", len(info.get("workers", {}))))

    def submit(self, fn: Callable[..., Any], *args: Any, pin: int) -> Future:
        now = time.monotonic()
        if now - self._refreshed >= self.refresh_s:  # workers come and go: re-pin to who is there
            self._refreshed = now
            try:
                self.refresh_workers()
            except Exception as exc:  # noqa: BLE001 - keep the last list; the scheduler may be busy
                log.debug("could not refresh the worker list: %s", exc)
        if not self._workers:  # none connected now (all left, or shutting down): the scheduler queues it
            return self.client.submit(fn, *args, pure=False)
        target = [self._workers[pin % len(self._workers)]]
        return self.client.submit(fn, *args, workers=target, allow_other_workers=True, pure=False)

    def outcome(self, future: Future) -> tuple[Any, BaseException | None] | None:
        """(result, None) or (None, error) for a finished future; None if it is not (or no longer) done.

        A task whose worker left goes back to pending, so a future seen done may not be any more.
        """
        if future.status == "finished":
            try:  # the result's worker may die before it is fetched; the gather then waits for
                return future.result(timeout=RESULT_TIMEOUT_S), None  # a recompute that may never come
            except Exception as exc:  # noqa: BLE001 - TimeoutError, or the lost key's error: read again
                return None, exc
        if future.status in ("error", "cancelled"):
            try:
                return None, future.exception(timeout=1) or RuntimeError(f"task {future.status}")
            except Exception as exc:  # noqa: BLE001 - CancelledError, TimeoutError: the task is gone either way
                return None, exc
        return None

    def cancel(self, future: Future) -> None:
        """Give up on a task (best effort: the scheduler may be busy or gone)."""
        try:
            self.client.cancel([future], asynchronous=False)
        except Exception as exc:  # noqa: BLE001 - the task is abandoned either way
            log.debug("could not cancel a task: %s", exc)

    def wait(self, futures: list[Future], timeout: float) -> list[Future]:
        """The futures that are done within `timeout` (possibly none)."""
        try:
            done, _ = dask_wait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return []
        return [f for f in futures if f in done]

    def describe(self) -> str:
        where = "local cluster" if self.cluster is not None else "scheduler"
        return f"Dask {where} {self.address} ({self.workers} workers)"

    def _close_cluster(self) -> None:
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def close(self) -> None:
        self.client.close()
        self._close_cluster()
