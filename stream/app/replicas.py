"""One running driver per application id and replica: a second one refuses to start.

Two checks, before anything heavy starts; `--takeover` skips both (the running driver is then
fenced by the transactional id and exits):

- On this host, a lease file per broker address, application id and replica (`Lease`): the
  driver holding it rewrites its time every second from a thread of its own. A lease whose
  process is gone, or that has not been renewed for `STALE_S` (a stopped or stalled driver),
  is free; a fresh one is waited for up to that long, then the new driver refuses.
- Across hosts, the consumer group: the driver's member carries `stream.<replica>.<pid>.<host>`
  as its client id. A member of the same replica that is neither this process nor a dead
  process on this host is waited for up to the session timeout (a crashed or stalled
  driver's member expires by then); still there, it heartbeats, and the new driver refuses.
  Brokers that do not describe groups (the embedded one) leave this check to the lease.

>>> client_id(3, pid=41, host="node-a.example")
'stream.3.41.node-a.example'
>>> parse_client_id("stream.3.41.node-a.example"), parse_client_id("rdkafka")
((3, 41, 'node-a.example'), None)
>>> holders(["stream.0.41.h", "stream.1.42.h", "stream.0.43.h", "stream.0.44.other"], 0, "h", 43,
...         alive=lambda pid: pid != 41)
[(44, 'other')]
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from stream.errors import StreamError

log = logging.getLogger(__name__)
STALE_S = 5.0    # a lease not renewed for this long is free (its driver is stopped or stalled)
RENEW_S = 1.0


class ReplicaRunning(StreamError):
    """A driver of the same application id and replica is running."""

    def __init__(self, app_id: str, replica: int, found: list[tuple[int, str]]) -> None:
        where = ", ".join(f"pid {pid} on {host}" for pid, host in found)
        super().__init__(f"application {app_id!r} replica {replica} is already running ({where}): stop it "
                         f"first, start this one with another --replica, or pass --takeover to fence it "
                         "(its open transaction is aborted and it exits)")


def client_id(replica: int, pid: int | None = None, host: str | None = None) -> str:
    """The driver's group client id, `stream.<replica>.<pid>.<host>`, so a second driver can name the first."""
    return f"stream.{replica}.{os.getpid() if pid is None else pid}.{host or socket.gethostname()}"


def parse_client_id(text: str) -> tuple[int, int, str] | None:
    """(replica, pid, host) from a client id `client_id` made; None for any other client id."""
    parts = text.split(".", 3)
    if len(parts) != 4 or parts[0] != "stream" or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[1]), int(parts[2]), parts[3]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def holders(client_ids: Iterable[str], replica: int, host: str, pid: int,
            alive: Callable[[int], bool] = pid_alive) -> list[tuple[int, str]]:
    """(pid, host) of the members of `replica` that may be a running driver other than `pid`."""
    found = []
    for text in client_ids:
        member = parse_client_id(text)
        if member is None or member[0] != replica:
            continue
        if member[2] == host and (member[1] == pid or not alive(member[1])):
            continue  # this process's own earlier member, or a dead process's: it expires
        found.append((member[1], member[2]))
    return found


def group_client_ids(admin: Any, group: str) -> list[str]:
    """Client ids of the group's members (none when the group is unknown or not answering)."""
    try:
        desc = list(admin.describe_consumer_groups([group], request_timeout=5).values())[0].result(timeout=10)
    except Exception:  # noqa: BLE001 - no group yet, or no coordinator yet: nobody holds it
        return []
    return [m.client_id for m in desc.members]


def check_replica_free(admin: Any, app_id: str, replica: int, wait_s: float) -> None:
    """Return when no other live driver holds `app_id` replica `replica`; else ReplicaRunning
    after waiting `wait_s` (the session timeout and a margin) for it to expire."""
    host, pid = socket.gethostname(), os.getpid()
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        found = holders(group_client_ids(admin, app_id), replica, host, pid)
        if not found:
            return
        if time.monotonic() >= deadline:
            raise ReplicaRunning(app_id, replica, found)
        if not waited:
            log.info("replica %d of %r is a member of the group (%s); waiting up to %.0f s for it to "
                     "expire, as a stopped or stalled driver's does", replica, app_id,
                     ", ".join(f"pid {p} on {h}" for p, h in found), wait_s)
            waited = True
        time.sleep(0.5)


class Lease:
    """This host's claim on an application id and replica at one broker address.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> a = Lease("127.0.0.1:9092", "spend", 0, directory=d); a.acquire(wait_s=0)
    >>> json.loads(a.path.read_text())["pid"] == os.getpid()
    True
    >>> a.release(); a.path.exists()
    False
    """

    def __init__(self, bootstrap: str, app_id: str, replica: int, directory: Path | None = None) -> None:
        base = directory or Path(tempfile.gettempdir()) / f"stream-leases-{os.getuid()}"
        digest = hashlib.sha256(bootstrap.encode()).hexdigest()[:12]
        self.path = base / f"{app_id}.{replica}.{digest}.json"
        self.app_id, self.replica = app_id, replica
        self._stop = threading.Event()

    def holder(self) -> tuple[int, str] | None:
        """(pid, host) of a live driver holding the lease, or None when it is free."""
        try:
            age = time.time() - self.path.stat().st_mtime
            held = json.loads(self.path.read_text())
            pid = int(held["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if age > STALE_S or pid == os.getpid() or not pid_alive(pid) or _stopped(pid):
            return None
        return pid, str(held.get("host", "?"))

    def acquire(self, wait_s: float = STALE_S + 1) -> None:
        """Take the lease, waiting up to `wait_s` for a fresh one to go stale; renew it from now on."""
        deadline, first = time.monotonic() + wait_s, self._mtime()
        while (held := self.holder()) is not None:
            if time.monotonic() >= deadline or self._mtime() != first:  # renewed: it runs
                raise ReplicaRunning(self.app_id, self.replica, [held])
            time.sleep(0.2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        os.replace(tmp, self.path)
        threading.Thread(target=self._renew, name="stream-lease", daemon=True).start()

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        try:
            if json.loads(self.path.read_text()).get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass


def _stopped(pid: int) -> bool:
    """True when `pid` is stopped (SIGSTOP) or a zombie: it cannot be running a driver."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("T", "t", "Z")
