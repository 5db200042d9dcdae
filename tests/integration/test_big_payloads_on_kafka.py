"""Payloads of 1, 8 and 32 MiB (encoded; 32 MiB is the default limit) on the dev broker with
its default limits (1 MB records): input, step result, signal and entity state travel as
chunks, with the worker SIGKILLed while they are in flight and a new one restoring from the
changelogs alone. Every value arrives whole, the entity is written once, and 33 MiB is refused
at the client, naming what and why."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from pathlib import Path

import pytest

from streamflow.errors import PayloadTooLarge
from tests.engine_helpers import REPO, WorkerProcess, load_app_with_env, wait_for

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "tests" / "apps" / "big_payload_app.py"
MB = 1024 * 1024
SIZES = [int(s) for s in os.environ.get("SF_BIG_PAYLOAD_MB", "1,8,32").split(",")]
ENVELOPE = 100
"""Bytes each payload leaves for its JSON around the text: a 32 MiB payload is at the limit."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_payloads_up_to_32_mb_arrive_whole_and_once_through_a_worker_crash(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {"SF_TEST_APP": f"big-{uuid.uuid4().hex[:8]}"}
    app = load_app_with_env(APP_FILE, env)
    first = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w1", env, tmp_path / "w1.log")
    client = app.client(kafka_bootstrap)
    try:
        wait_for(lambda: client._owners.endpoints(refresh=True), 90, 0.5, what="the worker")
        with pytest.raises(PayloadTooLarge) as refused:
            client.start("carry", id="too-big", input={"size": 1, "body": "x" * (33 * MB)})
        message = str(refused.value)
        assert "input of carry instance 'too-big'" in message
        assert f"limit of {32 * MB} bytes" in message
        for size in SIZES:
            n = size * MB - ENVELOPE
            client.start("carry", id=f"doc-{size}", input={"size": n, "body": "i" * n})
        time.sleep(2)  # the worker is joining and journaling them
        first.kill()
        second = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w2", env, tmp_path / "w2.log")
        try:
            for size in SIZES:
                client.signal("carry", f"doc-{size}", "note", "n" * (size * MB - ENVELOPE))
            for size in SIZES:
                view = client.wait("carry", f"doc-{size}", timeout=240)
                assert view.status == "completed", (size, view.header.get("error"))
                n = size * MB - ENVELOPE
                assert view.result == {
                    "input": _digest("i" * n),
                    "result": _digest("r" * n),
                    "signal": _digest("n" * n),
                }
                state = client._state_query().get("docs", f"doc-{size}")["value"]
                assert state["writes"] == 1 and len(state["body"]) == n  # whole, once
            assert client.get("carry", "too-big") is None
        finally:
            second.terminate()
    finally:
        client.close()
        if first.proc is not None and first.proc.poll() is None:
            first.terminate()
