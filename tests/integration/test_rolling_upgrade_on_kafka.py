"""A rolling upgrade on a real broker: every instance of either version completes.

Workers of the old deploy (v1 only) and of the new one (v1 and v2) share the group while
instances of both versions are in flight. An event for a v2 instance that reaches a v1 worker
(its timer, a step's reply, the start itself) is parked there, durably and counted, and runs
when a worker with v2 owns the partition: after the v1 worker stops, and after it comes back
upgraded. Nothing is dropped, dead-lettered or left waiting.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.engine_helpers import REPO, WorkerProcess, load_app_with_env, read_topic, wait_for

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "tests" / "apps" / "upgrade_app.py"


def _expected(version: int, n: int) -> str:
    return f"v1-{n}-done" if version == 1 else f"v2-{n}-checked-done"


def test_rolling_upgrade_parks_events_of_unknown_versions_and_completes_every_instance(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = f"upgrade-{uuid.uuid4().hex[:8]}"
    old_env = {"UPGRADE_APP": name, "UPGRADE_VERSIONS": "1"}
    new_env = {"UPGRADE_APP": name, "UPGRADE_VERSIONS": "1,2"}
    app = load_app_with_env(APP_FILE, new_env)
    client = app.client(kafka_bootstrap)
    new = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "new", new_env, tmp_path / "new.log")
    old: WorkerProcess | None = None
    pinned: dict[str, int] = {}
    try:
        # Phase 1: the new deploy alone; instances of both versions start and go to sleep.
        for n in range(30):
            version = 1 if n % 2 else 2
            pinned[client.start("order", id=f"o-{n}", input=n, version=version)] = version
        wait_for(
            lambda: sum(1 for i in pinned if (v := client.get("order", i)) and v.entries) >= 30,
            120,
            what="every instance's first step",
        )
        # Phase 2: an old worker joins and the new one leaves (a rollout rolled back, or the
        # old deploy winning the partitions): the v1 worker owns every partition. The v2
        # instances' timers, and v2 starts, reach it.
        old = WorkerProcess(
            APP_FILE, kafka_bootstrap, tmp_path / "old", old_env, tmp_path / "old.log"
        )
        assert new.terminate() == 0
        for n in range(30, 50):
            pinned[client.start("order", id=f"o-{n}", input=n, version=2)] = 2
        parked_topic = f"{name}-order-parked-changelog"
        wait_for(
            lambda: len(read_topic(kafka_bootstrap, parked_topic)) > 0,
            90,
            what="events parked on the v1 worker",
        )
        # Phase 3: the new deploy comes back beside it, then the old worker stops; the new one
        # takes every partition and runs what waited, in order.
        new = WorkerProcess(
            APP_FILE, kafka_bootstrap, tmp_path / "new", new_env, tmp_path / "new2.log"
        )
        time.sleep(5)  # side by side for a while
        assert old.terminate() == 0
        old = None
        # Phase 4: the old worker comes back upgraded, while instances still run.
        old = WorkerProcess(
            APP_FILE, kafka_bootstrap, tmp_path / "old", new_env, tmp_path / "old2.log"
        )
        for n in range(50, 60):
            pinned[client.start("order", id=f"o-{n}", input=n, version=2)] = 2
        views: dict[str, object] = {}

        def all_done() -> bool:
            views.clear()
            views.update({v.id: v for v in client.list("order", full=True)})
            return len(views) == len(pinned) and all(v.done for v in views.values())  # type: ignore[attr-defined]

        try:
            wait_for(all_done, 240, interval=2, what="every instance to complete")
        except AssertionError:
            waiting = {
                i: (
                    v.status,
                    v.header.get("version"),
                    [(e["kind"], e["status"]) for e in v.entries],
                )  # type: ignore[attr-defined]
                for i, v in views.items()
                if not v.done  # type: ignore[attr-defined]
            }
            missing = sorted(set(pinned) - set(views))
            raise AssertionError(f"not finished: {waiting}; never started: {missing}") from None
    finally:
        for worker in (new, old):
            if worker is not None:
                worker.terminate()
    statuses = Counter(v.status for v in views.values())  # type: ignore[attr-defined]
    assert statuses == {"completed": len(pinned)}, statuses
    for instance_id, version in pinned.items():
        view = views[instance_id]
        n = int(instance_id.split("-")[1])
        assert view.header["version"] == version  # type: ignore[attr-defined]
        assert view.result == _expected(version, n)  # type: ignore[attr-defined]
    dead = (
        read_topic(kafka_bootstrap, app.dead_letter_topic) if _exists(kafka_bootstrap, app) else []
    )
    assert dead == []
    parked_log = (tmp_path / "old.log").read_text()
    assert "parked" in parked_log


def _exists(bootstrap: str, app: object) -> bool:
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    return app.dead_letter_topic in topics  # type: ignore[attr-defined]
