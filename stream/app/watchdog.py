"""Deadlines for blocking steps: past one, the process exits with one clear log line.

The client library can block far past its own timeout (for example in
`send_offsets_to_transaction` after a broker outage), and a blocked C call cannot be
interrupted from Python. So a thread watches the current step; when its deadline passes it
logs and ends the process, and the supervisor (`stream run`) starts a new driver with the
same transactional id. Disabled (the default), `step` only times nothing and never exits,
which is what in-process tests want.

>>> w = Watchdog(enabled=False)
>>> with w.step("commit_transaction", 5.0):
...     pass
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)
EXIT_WATCHDOG = 70


class Watchdog:
    """Ends the process when a blocking step passes its deadline (disabled: times nothing)."""

    def __init__(self, enabled: bool = False, exit_code: int = EXIT_WATCHDOG) -> None:
        self.enabled = enabled
        self.exit_code = exit_code
        self._step: tuple[str, float, float] | None = None  # (name, started, deadline)
        self._thread: threading.Thread | None = None

    @contextmanager
    def step(self, name: str, seconds: float) -> Iterator[None]:
        """Run the body under a deadline of `seconds`."""
        if not self.enabled:
            yield
            return
        self._ensure_thread()
        now = time.monotonic()
        outer, self._step = self._step, (name, now, now + seconds)
        try:
            yield
        finally:
            self._step = outer

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="stream-watchdog", daemon=True)
            self._thread.start()

    def _watch(self) -> None:
        while True:
            time.sleep(0.2)
            step = self._step
            if step is not None and time.monotonic() > step[2]:
                name, started, deadline = step
                log.critical("watchdog: step %r did not finish within %.0f s; exiting (code %d) "
                             "so the supervisor restarts the driver", name, deadline - started,
                             self.exit_code)
                logging.shutdown()
                os._exit(self.exit_code)
