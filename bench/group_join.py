"""How long a consumer group takes to assign partitions: at first, and after a SIGKILL-like death.

The recovery target (issue 18) is bound by this on the embedded broker: the killed driver's
member stays in the group until its session times out, and a join waits half of
`session.timeout.ms`. This probe measures both with a plain consumer, with dynamic and with
static membership (`group.instance.id`), in fresh processes. The first consumer of each pair
ends with `os._exit(0)`, so it never leaves the group.

    python bench/group_join.py                      # the embedded broker
    python bench/group_join.py --bootstrap host:9092  # any broker, e.g. `make kafka`

Printed per mode: seconds from subscribe to assignment, first join and rejoin.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SESSION_MS = 6000  # the engine's default (stream/config.py)


def join_once(bootstrap: str, topic: str, group: str, instance: str | None, die: bool) -> float:
    """Subscribe, wait for the assignment and return how long it took; with `die`, exit the
    process without leaving the group (as a SIGKILL would)."""
    from confluent_kafka import Consumer

    conf = {"bootstrap.servers": bootstrap, "group.id": group, "session.timeout.ms": SESSION_MS,
            "heartbeat.interval.ms": 1000, "enable.auto.commit": False}
    if instance is not None:
        conf["group.instance.id"] = instance
    consumer, assigned = Consumer(conf), []
    t0 = time.monotonic()
    consumer.subscribe([topic], on_assign=lambda c, parts: assigned.append(time.monotonic()))
    while not assigned:
        consumer.poll(0.05)
    took = assigned[0] - t0
    print(json.dumps({"seconds": round(took, 2)}), flush=True)
    if die:
        os._exit(0)
    consumer.close()
    return took


def probe(bootstrap: str, topic: str) -> dict[str, dict[str, float]]:
    """{mode: {"first": s, "rejoin": s}} for dynamic and static membership."""
    out = {}
    for mode in ("dynamic", "static"):
        group, times = f"join-probe-{uuid.uuid4().hex[:8]}", {}
        for step in ("first", "rejoin"):
            argv = [sys.executable, __file__, "--bootstrap", bootstrap, "--topic", topic, "--group", group,
                    "--one", step] + (["--instance", "probe-0"] if mode == "static" else [])
            done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120)
            times[step] = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
        out[mode] = times
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", help="a running broker (default: start the embedded one)")
    ap.add_argument("--topic", default="join-probe")
    ap.add_argument("--group")
    ap.add_argument("--instance")
    ap.add_argument("--one", choices=("first", "rejoin"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        join_once(a.bootstrap, a.topic, a.group, a.instance, die=a.one == "first")
        return 0
    sys.path.insert(0, str(ROOT))
    from stream.app.admin import ensure_topic
    from stream.app.broker import EmbeddedBroker
    from stream.config import KafkaConfig

    def run(bootstrap: str) -> None:
        ensure_topic(KafkaConfig(bootstrap).client(), a.topic, 4)
        for mode, times in probe(bootstrap, a.topic).items():
            print(f"{mode:8} first join {times['first']:.2f} s, rejoin after a kill {times['rejoin']:.2f} s")
    if a.bootstrap:
        run(a.bootstrap)
    else:
        with EmbeddedBroker() as broker:
            run(broker.bootstrap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
