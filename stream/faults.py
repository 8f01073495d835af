"""Fault injection for tests: SIGKILL this process when it reaches a named point.

`STREAM_FAULTS` names a file with one point name per line; the first time the process
reaches a point listed first in the file, that line is removed and the process kills itself
with SIGKILL (no cleanup, as a crash would). A restarted process then goes on to the next
line. Without the variable, `point` does nothing.

Points: after_produce, changelog, after_offsets, before_commit, after_commit.

>>> point("after_commit")  # no STREAM_FAULTS set: nothing happens
"""

from __future__ import annotations

import os
import signal
import sys
import time


def point(name: str) -> None:
    path = os.environ.get("STREAM_FAULTS")
    if not path:
        return
    try:
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return
    if not lines or lines[0] != name:
        return
    with open(path, "w") as f:
        f.write("".join(f"{line}\n" for line in lines[1:]))
    print(f"fault injection: SIGKILL at {name} at {time.time():.3f}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
