"""A one-line live progress report for long-running commands.

>>> p = Progress(stream=io.StringIO(), every_s=0); p.update(100, 10, 0, 3)
"""

from __future__ import annotations

import io  # noqa: F401  (used by the doctest)
import sys
import time
from typing import TextIO


class Progress:
    """Prints records in/out, rate and lag at most every `every_s` seconds."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 1.0) -> None:
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self._t0 = self._last_t = time.monotonic()
        self._last_n = 0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def update(self, records_in: int, records_out: int, lag: int, windows_open: int,
               extra: str = "", force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_t < self.every_s:
            return
        rate = (records_in - self._last_n) / max(now - self._last_t, 1e-9)
        self._last_t, self._last_n = now, records_in
        line = (f"[{now - self._t0:6.1f}s] in {records_in:>9,}  out {records_out:>8,}  "
                f"rate {rate:>9,.0f}/s  lag {lag:>8,}  open {windows_open:>7,}{extra}")
        self.stream.write(("\r" + line) if self._tty else (line + "\n"))
        self.stream.flush()

    def done(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()
