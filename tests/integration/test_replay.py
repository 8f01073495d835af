"""`stream replay` against the live pipeline's results for the same time range, on the embedded
broker (whose offsets_for_times answers 0: the replay must not trust it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import payment_pipeline
from payments import produce_into, read_windows, run_to_end

from stream.app.admin import ensure_topic
from stream.app.generator import PaymentGenerator
from stream.app.replay import parse_time
from stream.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]
START = PaymentGenerator().start_ms  # event time of the first generated payment

pytestmark = pytest.mark.kafka


def test_replay_writes_exactly_the_live_windows_inside_the_range(kafka, dask_executor, topic_name, tmp_path):
    src, live, again = topic_name("in"), topic_name("live"), topic_name("replay")
    for t in (src, live, again):
        ensure_topic(kafka.client(), t, 2)
    records = produce_into(kafka, src, 12_000, partitions=2)  # 48 s of event time, 2 s disorder
    pipeline = payment_pipeline(f"replay-{live[-8:]}", src, live)
    run_to_end(pipeline, RunConfig(app_id=topic_name("app"), kafka=kafka), dask_executor, records)
    live_windows = read_windows(kafka, live)
    (tmp_path / "replayed.py").write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'tests' / 'support')!r})
        from helpers import payment_pipeline
        pipeline = payment_pipeline("replay-{live[-8:]}", {src!r}, {live!r})
    """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "stream", "replay", "replayed:pipeline", "--bootstrap", kafka.bootstrap,
           "--workers", "2"]
    wrong = subprocess.run([*cli, "--from", "0", "--to", "1", "--output", live], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "error: --output: " in wrong.stderr and "live pipeline's sink" in wrong.stderr
    reversed_range = subprocess.run([*cli, "--from", "1000", "--to", "500", "--output", again], cwd=tmp_path,
                                    env=env, capture_output=True, text=True, timeout=120)
    assert reversed_range.returncode == 2 and "error: --to: must be after --from" in reversed_range.stderr
    assert "replaying" not in reversed_range.stdout  # refused before the cluster starts

    lo, hi = START + 15_000, START + 45_000  # cuts [10 s, 20 s) and [40 s, 50 s) in two
    out = subprocess.run([*cli, "--from", "2026-01-01T00:00:15Z", "--to", str(hi), "--output", again],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert parse_time("2026-01-01T00:00:15Z") == lo
    inside = sorted((w["user_id"], w["window_start"], w["n"], round(w["total"], 6)) for w in live_windows
                    if w["window_start"] >= lo and w["window_end"] <= hi)
    replayed = sorted((w["user_id"], w["window_start"], w["n"], round(w["total"], 6))
                      for w in read_windows(kafka, again))
    assert inside and replayed == inside
    assert {w[1] for w in replayed} == {START + 20_000, START + 30_000}
    assert f"{len(inside):,} windows inside the range" in out.stdout
    assert "12,000 records" in out.stdout  # every record read, as the broker's offsets were not trusted
    assert "cut by its edges left out" in out.stdout and " 0 cut" not in out.stdout
