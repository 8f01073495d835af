"""The status page at `/` on the metrics port, in a real browser: headless Chromium (Debian's
package) driven by Playwright, against `stream run` on the embedded broker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from urllib.request import urlopen

import pytest
from payments import produce_into

from stream.app.admin import ensure_topic
from stream.app.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's own calls home are refused on a closed network: turned off, as is the sandbox (root)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def _need_browser():
    if CHROMIUM is None or not _has_playwright():
        if os.environ.get("STREAM_REQUIRE_CHROMIUM"):
            pytest.fail("Chromium or Playwright is missing: run .ci/ensure-chromium and pip install -e '.[dev]'")
        pytest.skip("Chromium is not installed (.ci/ensure-chromium installs Debian's package)")


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401 - only whether it is installed
    except ImportError:
        return False
    return True


def _status(port):
    with urlopen(f"http://127.0.0.1:{port}/status.json", timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.kafka
@pytest.mark.slow
def test_the_status_page_renders_a_running_pipeline_in_a_browser(kafka, topic_name, tmp_path):
    _need_browser()
    from playwright.sync_api import sync_playwright

    src, out = topic_name("in"), topic_name("out")
    ensure_topic(kafka.client(), src, 2)
    ensure_topic(kafka.client(), out, 1)
    produce_into(kafka, src, 2_000, partitions=2)
    (tmp_path / "page_app.py").write_text(textwrap.dedent(f"""
        import helpers
        pipeline = helpers.payment_pipeline("page-{out[-8:]}", {src!r}, {out!r})
    """))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'tests' / 'support'}{os.pathsep}{ROOT}"}
    proc = subprocess.Popen([sys.executable, "-m", "stream", "run", "page_app:pipeline", "--bootstrap",
                             kafka.bootstrap, "--workers", "1", "--metrics-port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(kafka, src, stop), daemon=True)
    try:
        _wait(lambda: _answers(port) and _status(port)["ready"], 120, "the pipeline to be ready")
        feeder.start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("Number(document.body.dataset.polls || 0) >= 2", timeout=30_000)
            first = _merged(page)
            page.wait_for_function(f"""() => {{
                const cells = [...document.querySelectorAll('#partitions tbody tr td:nth-child(3)')];
                return cells.reduce((n, td) => n + Number(td.textContent.replace(/,/g, '')), 0) > {sum(first)};
            }}""", timeout=60_000)  # the numbers move
            status = _status(port)
            graph = page.inner_text("#graph")
            rows = [r.query_selector("td").inner_text() for r in page.query_selector_all("#partitions tbody tr")]
            epochs = len(page.query_selector_all("#epochs tbody tr"))
            page.screenshot(path=str(tmp_path / "status.png"), full_page=True)
            title, health = page.inner_text("#title"), page.inner_text("#health")
            browser.close()
    finally:
        stop.set()
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output[-3000:]
    assert title == status["pipeline"] and health == "healthy"
    assert src in graph and out in graph and "filter" in graph and "key_by(user_id)" in graph and "window" in graph
    assert len(rows) == len(status["partitions"]) == 2
    assert rows == [f"{src}[0]", f"{src}[1]"]
    assert 0 < epochs <= len(status["epochs"])  # the page polled before status.json was read
    assert (tmp_path / "status.png").stat().st_size > 10_000
    assert f"status page on http://127.0.0.1:{port}/" in output


def _merged(page):
    return [int(td.inner_text().replace(",", "")) for td in page.query_selector_all("#partitions tbody tr td:nth-child(3)")]


def _feed(kafka, topic, stop):
    skip = 2_000
    while not stop.wait(0.3):
        produce_into(kafka, topic, 100, skip=skip, partitions=2)
        skip += 100


def _answers(port) -> bool:
    try:
        _status(port)
        return True
    except OSError:
        return False


def _wait(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")
