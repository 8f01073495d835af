"""Fault injection for tests: SIGKILL (or SIGSTOP) this process when it reaches a named point.

`STREAM_FAULTS` names a file with one point per line, `NAME` or `NAME:N`, optionally followed
by ` stop`. When the process reaches the point named on the first line (for the Nth time,
default 1), that line is removed and the process kills itself with SIGKILL (no cleanup, as a
crash would), or with ` stop` stops itself with SIGSTOP (a stall: the test sends SIGCONT). A
restarted process goes on with the next line. Without the variable, `point` does nothing.

Points: after_produce (in an epoch that wrote results to the sink topic), changelog,
after_offsets, before_commit, after_commit. The driver flushes its producer before a point
fires, so what the epoch produced is on the broker when the process dies (under load an
unflushed epoch could die with its results still in the client, and hold none).

>>> point("after_commit")  # no STREAM_FAULTS set: nothing happens
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from typing import Callable

_reached: Counter = Counter()


def point(name: str, before: Callable[[], object] | None = None) -> None:
    """Fire the fault armed for `name`, if any: first `before()` (the driver flushes what it
    produced, so the records an aborted epoch holds have reached the broker however loaded
    the machine), then the signal."""
    path = os.environ.get("STREAM_FAULTS")
    if not path:
        return
    try:
        with open(path) as f:
            lines = [line.strip() for line in f if line.strip()]
    except FileNotFoundError:
        return
    where, _, action = lines[0].partition(" ") if lines else ("", "", "")
    if where.partition(":")[0] != name:
        return
    _reached[name] += 1
    if _reached[name] < int(where.partition(":")[2] or 1):
        return
    # replace the file in one step: a test polling it must never see it empty mid-write
    # (a kill test that read a truncated file as "every fault fired" stopped feeding, and
    # the remaining faults never fired)
    partial = f"{path}.{os.getpid()}"
    with open(partial, "w") as f:
        f.write("".join(f"{line}\n" for line in lines[1:]))
    os.replace(partial, path)
    if before is not None:
        try:
            before()
        except Exception:  # noqa: BLE001 - the fault fires anyway
            pass
    sig = signal.SIGSTOP if action.strip() == "stop" else signal.SIGKILL
    print(f"fault injection: {sig.name} at {name} at {time.time():.3f}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), sig)
