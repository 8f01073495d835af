"""The watchdog and the supervisor, with real processes."""

import subprocess
import sys
import textwrap

from stream.app.supervisor import Supervisor


def test_watchdog_ends_a_step_past_its_deadline_with_one_clear_line():
    code = textwrap.dedent("""
        import logging, time
        from stream.app.watchdog import Watchdog
        logging.basicConfig(level=logging.INFO)
        w = Watchdog(enabled=True)
        with w.step("commit_transaction", 0.5):
            time.sleep(30)   # a blocked client call
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert out.returncode == 70
    lines = [line for line in out.stderr.splitlines() if "watchdog" in line]
    assert len(lines) == 1 and "'commit_transaction'" in lines[0] and "restarts" in lines[0]


def test_supervisor_restarts_a_failing_driver_then_gives_up_clearly(caplog):
    sup = Supervisor([sys.executable, "-c", "import sys; sys.exit(3)"], max_restarts=2,
                     backoff_s=0.05)
    assert sup.run() == 1 and sup.restarts == 2
    assert "giving up" in caplog.text and "restart 2 of at most 2" in caplog.text


def test_supervisor_does_not_restart_on_a_settings_error_or_a_clean_exit():
    assert Supervisor([sys.executable, "-c", "import sys; sys.exit(2)"]).run() == 2
    assert Supervisor([sys.executable, "-c", "pass"]).run() == 0


def test_supervisor_restarts_until_the_driver_succeeds(tmp_path):
    flag = tmp_path / "runs"
    code = (f"import pathlib, sys; p = pathlib.Path({str(flag)!r}); n = len(p.read_text()) if p.exists() else 0; "
            "p.write_text('x' * (n + 1)); sys.exit(0 if n >= 2 else -9 % 256)")
    sup = Supervisor([sys.executable, "-c", code], max_restarts=5, backoff_s=0.05)
    assert sup.run() == 0 and sup.restarts == 2


def test_each_new_driver_is_told_how_often_it_was_restarted_and_stopped_by_the_watchdog(tmp_path):
    """The counts reach the driver's metrics (stream_driver_restarts_total and
    stream_watchdog_exits_total), which therefore continue across restarts."""
    seen = tmp_path / "seen"
    code = textwrap.dedent(f"""
        import os, sys
        with open({str(seen)!r}, "a") as f:
            f.write(os.environ["STREAM_DRIVER_RESTARTS"] + " " + os.environ["STREAM_WATCHDOG_EXITS"] + "\\n")
        n = len(open({str(seen)!r}).read().splitlines())
        sys.exit({{1: 70, 2: 3, 3: 70}}.get(n, 0))
    """)
    assert Supervisor([sys.executable, "-c", code], max_restarts=5, backoff_s=0.05).run() == 0
    assert seen.read_text().splitlines() == ["0 0", "1 1", "2 1", "3 2"]
