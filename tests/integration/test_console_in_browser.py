"""The console in a real headless Chromium, against a real worker on Kafka.

Chromium is Debian's (``/usr/bin/chromium``, or ``$STREAMFLOW_CHROMIUM``), driven by Playwright
pointed at that executable (``make test`` installs both where it can). Screenshots of each page
go to the test's output directory; ``SF_SAVE_SCREENSHOTS=DIR`` also copies them there (how the
README's were made).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from streamflow.operate.dead_letters import HEADER_REPLAYED_FROM, DeadLetters
from tests.engine_helpers import REPO, WorkerProcess, load_app_with_env, wait_for

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "tests" / "apps" / "workflow_app.py"


def _chromium() -> str | None:
    given = os.environ.get("STREAMFLOW_CHROMIUM")
    return given if given else shutil.which("chromium") or shutil.which("chromium-browser")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_new(client: object, old: str) -> str:
    """The id of the waiter instance started besides ``old`` (by the page's start again)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        others = [v.id for v in client.list("waiter") if v.id != old]  # type: ignore[attr-defined]
        if others:
            return others[0]
        time.sleep(0.5)
    raise AssertionError("no new instance was started")


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status == 200
    except OSError:
        return False


def test_console_lists_shows_signals_and_dead_letters(kafka_bootstrap: str, tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium: install Debian's chromium package (make test does, as root)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

    env = {"SF_TEST_APP": f"ui-{uuid.uuid4().hex[:8]}", "SF_WF_VARIANT": "a"}
    worker_port, ui_port = _port(), _port()
    worker_env = {**env, "STREAMFLOW_HTTP_PORT": str(worker_port)}
    worker = WorkerProcess(
        APP_FILE, kafka_bootstrap, tmp_path / "w", worker_env, tmp_path / "w.log"
    )
    console = subprocess.Popen(
        [sys.executable, "-m", "streamflow", "ui", str(APP_FILE), "--port", str(ui_port),
         "--bootstrap", kafka_bootstrap],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=open(tmp_path / "ui.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        wait_for(lambda: _up(f"http://127.0.0.1:{worker_port}/status"), 60, what="the worker")
        wait_for(lambda: _up(f"http://127.0.0.1:{ui_port}/"), 30, what="the console")
        app = load_app_with_env(APP_FILE, env)
        client = app.client(kafka_bootstrap)
        wait_for(
            lambda: _up(f"http://127.0.0.1:{ui_port}/api/instances?workflow=waiter"),
            60,
            what="the worker running its tasks",
        )
        client.start("waiter", id="ui-1")
        # A poison record on the workflow's events topic: the DLQ page must show it.
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(app.workflows.events_topic("waiter"), b"\xff not an event", b"ui-bad")
        producer.flush(10)

        with playwright.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{ui_port}/")
            page.wait_for_selector("#wf", timeout=60_000)
            page.select_option("#wf", "waiter")
            page.click("#apply")
            # The list shows the started instance (live: no reload).
            page.wait_for_selector("#instances tr[data-id='ui-1']", timeout=60_000)
            page.wait_for_selector("#counts [data-status='running']", timeout=30_000)
            assert (
                page.inner_text("#counts [data-status='running'] b") == "1"
            )  # counted, not listed
            page.screenshot(path=str(shots / "workflows.png"), full_page=True)

            page.click("#instances tr[data-id='ui-1']")
            page.wait_for_selector("#waiting", timeout=60_000)  # waits for its signal "go"
            assert page.inner_text("#waiting") == "go"
            page.fill("#signal-payload", '{"n": 5}')
            page.click("#send-signal")
            # The signal released it: completed, and the timeline shows its step and signal.
            page.wait_for_selector("#title .pill.completed", timeout=60_000)
            kinds = page.eval_on_selector_all(
                "#timeline tr.entry", "rows => rows.map(r => r.dataset.kind)"
            )
            assert kinds == ["step", "signal"], kinds
            assert "record" in page.inner_text("#timeline")
            # A page of its own (a link, the back button), and no action that cannot apply.
            assert page.url.endswith("#instance/waiter/ui-1"), page.url
            assert page.is_disabled("#cancel") and page.is_disabled("#send-signal")
            page.screenshot(path=str(shots / "instance.png"), full_page=True)
            page.go_back()
            page.wait_for_selector("#instances tr[data-id='ui-1']", timeout=30_000)
            page.go_forward()
            page.wait_for_selector("#title .pill.completed", timeout=30_000)

            # Start again with the same input: a new instance, which the page then cancels.
            page.click("#restart")
            again = _wait_new(client, "ui-1")
            page.click("#back")
            page.wait_for_selector(f"#instances tr[data-id='{again}']", timeout=60_000)
            page.click(f"#instances tr[data-id='{again}']")
            page.wait_for_selector("#waiting", timeout=60_000)
            page.click("#cancel")
            page.wait_for_selector("#title .pill.cancelled", timeout=60_000)

            page.click("nav a[data-view='topology']")
            page.wait_for_selector("svg.graph", timeout=30_000)
            assert "waiter" in page.inner_text("#describe")
            page.screenshot(path=str(shots / "topology.png"), full_page=True)

            page.click("nav a[data-view='workers']")
            page.wait_for_selector(".member", timeout=30_000)
            page.screenshot(path=str(shots / "workers.png"), full_page=True)

            page.click("nav a[data-view='dlq']")
            page.wait_for_selector("#letters tr.letter", timeout=60_000)
            page.click("#letters tr.letter")
            page.wait_for_selector("#letter", timeout=30_000)
            shown = page.inner_text("#letter + .grid")
            # the record as it was (not UTF-8: as hex), its key, and why it failed
            assert b"\xff not an event".hex() in shown and "ui-bad" in shown, shown
            assert "JSONDecodeError" in shown
            page.screenshot(path=str(shots / "dlq.png"), full_page=True)
            # Replay from the page: the record goes back once, fails again, and is dead-lettered
            # anew, saying where it came from.
            page.click("#replay")
            page.wait_for_selector("#letters tr.letter >> nth=1", timeout=60_000)
            browser.close()
        assert client.get("waiter", "ui-1").result == {"n": 5}  # the truth, not the page
        assert client.get("waiter", again).status == "cancelled"
        letters = list(
            DeadLetters(
                env["SF_TEST_APP"], kafka_bootstrap, {"bootstrap.servers": kafka_bootstrap}
            ).list()
        )
        assert len(letters) == 2 and letters[1].header(HEADER_REPLAYED_FROM) is not None
    finally:
        console.terminate()
        console.wait(30)
        worker.terminate()
    for name in ("workflows", "instance", "topology", "workers", "dlq"):
        assert (shots / f"{name}.png").stat().st_size > 10_000, name
    keep = os.environ.get("SF_SAVE_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for png in shots.iterdir():
            shutil.copy(png, Path(keep) / png.name)
