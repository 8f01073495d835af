"""A live status line for long-running commands (`stream run`, `stream demo`, the benchmark).

On a terminal one line is redrawn every second; otherwise (a log file, a pipe, CI) a plain
line is printed every ten seconds, so logs stay readable.

>>> out = io.StringIO()
>>> Progress(stream=out, every_s=0).update(Status(100, 10, 0, 3, dead_letters=1))
>>> "in 100" in out.getvalue() and "dlq 1" in out.getvalue()
True
"""

from __future__ import annotations

import io  # noqa: F401  (used by the doctest)
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO


@dataclass(frozen=True)
class Status:
    """What the status line shows; `of(driver)` reads it from a running driver."""

    records_in: int
    records_out: int
    lag: int
    open_windows: int
    watermark_ms: int = -1
    dead_letters: int = 0
    note: str = ""

    @classmethod
    def of(cls, driver: Any, note: str = "") -> "Status":
        return cls(driver.stats.records_in, driver.stats.records_out, driver.lag(),
                   driver.open_windows(), driver.watermark(), driver.stats.failed, note)


class Progress:
    """Prints a `Status` at most every `every_s` seconds (default: 1 on a terminal, else 10)."""

    def __init__(self, stream: TextIO | None = None, every_s: float | None = None) -> None:
        self.stream = stream or sys.stderr
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every_s = every_s if every_s is not None else (1.0 if self._tty else 10.0)
        self._t0 = self._last_t = time.monotonic()
        self._last_in = self._last_out = 0
        self._shown = False

    def update(self, status: Status, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_t < self.every_s:
            return
        dt = max(now - self._last_t, 1e-9)
        rate_in = (status.records_in - self._last_in) / dt
        rate_out = (status.records_out - self._last_out) / dt
        self._last_t, self._last_in, self._last_out = now, status.records_in, status.records_out
        wm = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(status.watermark_ms / 1000))
              if status.watermark_ms >= 0 else "-")
        line = (f"[{now - self._t0:6.1f}s] in {status.records_in:,} ({rate_in:,.0f}/s)  "
                f"out {status.records_out:,} ({rate_out:,.0f}/s)  lag {status.lag:,}  "
                f"watermark {wm}  open {status.open_windows:,}  dlq {status.dead_letters:,}"
                f"{'  ' + status.note if status.note else ''}")
        self.stream.write(("\r" + line + "\x1b[K") if self._tty else (line + "\n"))
        self.stream.flush()
        self._shown = True

    def done(self) -> None:
        if self._tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()
