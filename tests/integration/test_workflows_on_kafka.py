"""Workflows on a real broker, with real `streamflow run` workers killed and redeployed."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.engine_helpers import REPO, WorkerProcess, load_app_with_env, read_topic

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "tests" / "apps" / "workflow_app.py"


def _client(env: dict[str, str], bootstrap: str):
    app = load_app_with_env(APP_FILE, env)
    return app, app.client(bootstrap)


def _wait(client, workflow: str, instance_id: str, status: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(workflow, instance_id)
        if view is not None and view.status == status:
            return view
        time.sleep(0.3)
    raise AssertionError(
        f"{workflow} {instance_id} not {status}: {view.header if view else 'not started'}"
    )


@pytest.fixture()
def env() -> dict[str, str]:
    return {"SF_TEST_APP": f"wf-{uuid.uuid4().hex[:8]}", "SF_WF_VARIANT": "a"}


def test_sleep_across_a_sigkill_wakes_exactly_once(
    kafka_bootstrap: str, tmp_path: Path, env
) -> None:
    _, client = _client(env, kafka_bootstrap)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        time.sleep(3)
        client.start("sleeper", id="nap", input=4.0)
        _wait(client, "sleeper", "nap", "running")
        worker.kill()  # the timer lives in the store and its changelog, not in memory
        time.sleep(5)  # it falls due while no worker runs
        worker.start()
        view = _wait(client, "sleeper", "nap", "completed", timeout=90)
        assert view.result == "woke"
        time.sleep(2)
    finally:
        worker.terminate()
    wakes = read_topic(kafka_bootstrap, f"wake-log-{env['SF_TEST_APP']}")
    assert len(wakes) == 1


def test_signal_sent_before_the_wait_is_seen(kafka_bootstrap: str, tmp_path: Path, env) -> None:
    _, client = _client(env, kafka_bootstrap)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        time.sleep(3)
        # The signal is sent with the start: it arrives while the first step still runs.
        client.start("waiter", id="early")
        client.signal("waiter", "early", "go", {"n": 1})
        view = _wait(client, "waiter", "early", "completed", timeout=90)
    finally:
        worker.terminate()
    assert view.result == {"n": 1}
    waited = [e for e in view.entries if e["kind"] == "signal"]
    assert len(waited) == 1 and view.header["signals"] == {"go": []}


def test_changed_body_without_new_version_suspends_as_non_deterministic(
    kafka_bootstrap: str, tmp_path: Path, env
) -> None:
    _, client = _client(env, kafka_bootstrap)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        client.start("changing", id="c1")
        _wait(client, "changing", "c1", "running", timeout=90)
        time.sleep(1)
    finally:
        assert worker.terminate() == 0
    redeployed = {**env, "SF_WF_VARIANT": "b"}
    worker = WorkerProcess(
        APP_FILE, kafka_bootstrap, tmp_path / "w", redeployed, tmp_path / "w2.log"
    )
    try:
        client.signal("changing", "c1", "next")
        view = _wait(client, "changing", "c1", "suspended", timeout=90)
    finally:
        worker.terminate()
    assert view.header["error"]["type"] == "NonDeterminism"
    assert (
        "'other'" in view.header["error"]["message"]
        and "'record'" in view.header["error"]["message"]
    )


def test_two_versions_run_side_by_side(kafka_bootstrap: str, tmp_path: Path, env) -> None:
    _, client = _client(env, kafka_bootstrap)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        client.start("versioned", id="old")
        _wait(client, "versioned", "old", "running", timeout=90)
    finally:
        assert worker.terminate() == 0
    v2 = {**env, "SF_WF_VARIANT": "b"}
    _, client = _client(v2, kafka_bootstrap)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", v2, tmp_path / "w2.log")
    try:
        client.start("versioned", id="new")
        _wait(client, "versioned", "new", "running", timeout=90)
        client.signal("versioned", "old", "go")
        client.signal("versioned", "new", "go")
        old = _wait(client, "versioned", "old", "completed")
        new = _wait(client, "versioned", "new", "completed")
    finally:
        worker.terminate()
    assert (old.header["version"], old.result) == (1, "v1")
    assert (new.header["version"], new.result) == (2, "v2")


def test_cancel_runs_compensations(kafka_bootstrap: str, tmp_path: Path, env) -> None:
    _, client = _client(env, kafka_bootstrap)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        client.start("saga", id="s1", input="ctr")
        _wait(client, "saga", "s1", "running", timeout=90)
        deadline = time.monotonic() + 30
        while not any(e["kind"] == "compensate" for e in client.get("saga", "s1").entries):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        client.cancel("saga", "s1")
        view = _wait(client, "saga", "s1", "cancelled")
        time.sleep(1)
    finally:
        worker.terminate()
    counters = read_topic(kafka_bootstrap, f"{env['SF_TEST_APP']}-counters-changelog")
    assert [int(m.value()) for m in counters] == [5, 0]
    assert [e["name"] for e in view.entries if e["seq"] >= 1_000_000_000] == ["bump"]
