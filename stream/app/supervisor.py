"""Supervise the driver: run it as a child process and restart it, with backoff, when it dies.

A driver that exits non-zero (a crash, a watchdog deadline, a fenced or failed transaction, a
broker outage) is started again with the same arguments, hence the same transactional id,
which also aborts the transaction it left open. Settings errors (exit code 2) and Ctrl-C are
not retried, nor is a broker or scheduler unreachable at the very first start (the
error names the address; a later outage is retried). After `max_restarts` restarts in a row without a healthy run the supervisor
gives up with a clear message.

>>> describe_exit(-9), describe_exit(70)
('killed by signal SIGKILL', 'the watchdog stopped it (a step passed its deadline)')
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Sequence

from stream.app.broker import die_with_parent
from stream.app.watchdog import EXIT_WATCHDOG
from stream.metrics import ENV_RESTARTS, ENV_WATCHDOG_EXITS

log = logging.getLogger("stream.app.supervisor")
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130
HEALTHY_RUN_S = 60.0   # a driver that ran this long resets the restart count
_EXITS = {1: "an unexpected error", 3: "a fatal error (see its last log line)",
          4: "the broker or the scheduler was unreachable",
          70: "the watchdog stopped it (a step passed its deadline)"}


def describe_exit(code: int) -> str:
    """A driver's exit code in words: `killed by signal SIGKILL`, `watchdog deadline`, ..."""
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return _EXITS.get(code, f"exit code {code}")


class Supervisor:
    """Runs the driver as a child process and starts it again, with backoff, when it dies."""

    def __init__(self, argv: Sequence[str], max_restarts: int = 5, backoff_s: float = 0.5,
                 max_backoff_s: float = 10.0) -> None:
        self.argv = list(argv)
        self.max_restarts = max_restarts
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.restarts = 0
        self.watchdog_exits = 0
        self._stopping = False
        self._child: subprocess.Popen | None = None

    def _on_signal(self, signum: int, frame: object) -> None:
        first = not self._stopping
        self._stopping = True
        child = self._child
        if child is not None and child.poll() is None:
            # the child has its own session, so the terminal's Ctrl-C reaches only us
            child.send_signal(signum if first else signal.SIGKILL)

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        failures, pause = 0, self.backoff_s
        while True:
            started = time.monotonic()
            # the counts reach the new driver's metrics, which continue them
            env = {**os.environ, ENV_RESTARTS: str(self.restarts),
                   ENV_WATCHDOG_EXITS: str(self.watchdog_exits)}
            self._child = subprocess.Popen(self.argv, start_new_session=True,
                                           preexec_fn=die_with_parent, env=env)
            code = self._wait(self._child)
            if code == EXIT_WATCHDOG:
                self.watchdog_exits += 1
            if self._stopping or code in (0, EXIT_CONFIG, EXIT_INTERRUPTED):
                return code
            if code == EXIT_UNREACHABLE and self.restarts == 0:
                return EXIT_CONFIG  # nothing ever ran: the address is wrong or the broker is down
            if time.monotonic() - started >= HEALTHY_RUN_S:
                failures, pause = 0, self.backoff_s
            if failures >= self.max_restarts:
                log.error("the driver failed %d times in a row (last: %s); giving up. Fix the cause "
                          "in its log above, then start `stream run` again", failures + 1,
                          describe_exit(code))
                return 1
            failures += 1
            self.restarts += 1
            log.warning("driver stopped: %s; restarting in %.1f s (restart %d of at most %d in a row)",
                        describe_exit(code), pause, failures, self.max_restarts)
            self._sleep(pause)
            if self._stopping:
                return code
            pause = min(pause * 2, self.max_backoff_s)

    def _wait(self, child: subprocess.Popen) -> int:
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # pragma: no cover - the handler above takes SIGINT
                self._stopping = True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(0.1)


def child_argv(argv: Sequence[str]) -> list[str]:
    """The same `stream` command, run as an unsupervised driver."""
    return [sys.executable, "-m", "stream", *argv, "--no-supervise"]
