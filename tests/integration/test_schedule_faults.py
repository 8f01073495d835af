"""End to end on the embedded broker, through `stream run`: the schedule changes no window.

Range sizes, a Dask worker stopped longer than any timeout, and a burst after an idle spell:
each run's committed windows must equal the recomputation, its late topic must hold exactly
the records late on their own partition, and two runs that differ only in range size must
write the same windows.
"""

import os
import signal
import time

import pytest
from faultkit import Feeder, StreamProcess, _committed_records, committed_epoch_set, decoder, wait_for, wait_verified
from helpers import OUT_SCHEMA, diff_windows

from stream.app.admin import ensure_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def topics(kafka, topic_name, outs=1):
    src = topic_name("in")
    ensure_topic(kafka.client(), src, 4)
    names = []
    for _ in range(outs):
        out, app = topic_name("out"), topic_name("app")
        ensure_topic(kafka.client(), out, 2)
        names.append((out, app))
    return src, names


def windows(kafka, app, out):
    decode = decoder(OUT_SCHEMA)
    msgs, _, _ = _committed_records(kafka, app, out, 2, committed_epoch_set(kafka, app, f"{app}.changelog", 4))
    return {(r["user_id"], r["window_start"]): r for r in (decode(m.value) for m in msgs)}


def verify_to_the_end(kafka, app, out, feeder, proc):
    """Wait for the feeder, verify the run (columnar pipeline: no `Last`), then stop it: the
    verdict must be clean and the stop too."""
    try:
        feeder.join(120)
        assert feeder.error is None
        verdict = wait_verified(kafka, app, out, feeder.records, feeder=feeder, procs=[proc], last=False)
    finally:
        code = proc.stop()
    assert verdict.problems == [], (verdict.problems[:10], proc.log()[-3000:])
    assert code == 0, proc.log()[-3000:]


def test_ranges_of_500_records_and_the_default_give_the_same_windows(kafka, topic_name, tmp_path):
    src, [(out_a, app_a), (out_b, app_b)] = topics(kafka, topic_name, outs=2)
    feeder = Feeder(kafka, src, 12_000, rate=1_500)
    small = StreamProcess(kafka, app_a, src, out_a, tmp_path, name="small", path="columnar")
    default = StreamProcess(kafka, app_b, src, out_b, tmp_path, name="default", path="columnar",
                            range_records=None)
    feeder.start()
    try:
        feeder.join(120)
        assert feeder.error is None
        for app, out, proc in ((app_a, out_a, small), (app_b, out_b, default)):
            verdict = wait_verified(kafka, app, out, feeder.records, feeder=feeder, procs=[proc], last=False)
            assert verdict.problems == [], (verdict.problems[:10], proc.log()[-3000:])
    finally:
        codes = [small.stop(), default.stop()]
    assert codes == [0, 0]
    a, b = windows(kafka, app_a, out_a), windows(kafka, app_b, out_b)
    # the same windows with the same values; float sums may differ in the last bits, as the
    # order of additions follows the ranges
    assert len(a) > 1_000 and a.keys() == b.keys()
    assert diff_windows({k: {f: v for f, v in w.items() if f not in ("user_id", "window_start")}
                         for k, w in a.items()}, list(b.values())) == []


def test_a_dask_worker_stopped_for_longer_than_any_timeout_changes_no_window(kafka, topic_name, tmp_path):
    import psutil

    src, [(out, app)] = topics(kafka, topic_name)
    feeder = Feeder(kafka, src, 8_000, rate=300)
    proc = StreamProcess(kafka, app, src, out, tmp_path, local=False, extra=["--workers", "2"],
                         path="columnar")
    feeder.start()
    try:
        wait_for(lambda: "first epoch committed" in proc.log(), 90, "the driver to commit")
        time.sleep(3)
        workers = [p for p in psutil.Process(proc.child_pid()).children(recursive=True)
                   if "spawn_main" in " ".join(p.cmdline())]
        assert workers, "no Dask worker process found"
        os.kill(workers[0].pid, signal.SIGSTOP)
        try:
            time.sleep(8)  # longer than the idle timeout that used to close windows (5 s)
        finally:
            os.kill(workers[0].pid, signal.SIGCONT)
        verify_to_the_end(kafka, app, out, feeder, proc)
    finally:
        proc.stop()


def test_a_burst_after_an_idle_spell_sends_nothing_to_the_late_topic(kafka, topic_name, tmp_path):
    src, [(out, app)] = topics(kafka, topic_name)
    proc = StreamProcess(kafka, app, src, out, tmp_path, path="columnar")
    feeder = Feeder(kafka, src, 10_000, rate=1_000_000, bad_every=0)  # as fast as it goes
    try:
        wait_for(lambda: "assigned" in proc.log(), 90, "the driver to join")
        time.sleep(8)  # idle: no partition has seen a record
        feeder.start()
        verify_to_the_end(kafka, app, out, feeder, proc)
    finally:
        proc.stop()
