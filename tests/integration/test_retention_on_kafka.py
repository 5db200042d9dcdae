"""Retention on a real broker: instances started continuously with a short retention. The store
holds only the recent ones, and a worker restored from the changelog alone (a fresh state
directory) holds only those too: the deletions went through the changelog as tombstones."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.engine_helpers import REPO, WorkerProcess, load_app_with_env, wait_for

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "tests" / "apps" / "client_app.py"
RETENTION_S = 3


def test_finished_instances_go_after_their_retention_and_stay_gone_after_a_restore(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {"SF_TEST_APP": f"ret-{uuid.uuid4().hex[:8]}"}
    app = load_app_with_env(APP_FILE, env)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w1", env, tmp_path / "w1.log")
    client = app.client(kafka_bootstrap)
    sizes = []
    try:
        wait_for(lambda: client._owners.endpoints(refresh=True), 60, 0.5, what="the worker")
        started = 0
        began = time.monotonic()
        while time.monotonic() - began < 15:  # ~40 starts/s for 15 s
            client.start_many("brief", [(f"b{started + i}", i) for i in range(20)])
            started += 20
            time.sleep(0.5)
            sizes.append(sum(1 for _ in client.list("brief", page_size=500)))
        # While starts go on, the store holds about one retention's worth, not all of them.
        assert started >= 400
        assert max(sizes[-5:]) < started / 2, sizes
        client.wait("brief", f"b{started - 1}", timeout=60)
        wait_for(lambda: not list(client.list("brief")), 60, 1, what="every instance to expire")
    finally:
        worker.terminate()
    # A worker with no local state restores from the changelog: what expired stays gone.
    restored = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w2", env, tmp_path / "w2.log")
    try:
        wait_for(lambda: client._owners.endpoints(refresh=True), 60, 0.5, what="the new worker")
        client.start("brief", id="after-restore", input=3)
        assert client.wait("brief", "after-restore", timeout=60).result == 3
        assert [v.id for v in client.list("brief")] in (["after-restore"], [])
        assert client.get("brief", "b0") is None
    finally:
        client.close()
        restored.terminate()
