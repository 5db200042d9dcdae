"""The workflow client on a real broker: lookups from the owning worker, waits woken by the
commit, commands acknowledged without a flush per call, and the async client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest

from tests.engine_helpers import REPO, WorkerProcess, load_app_with_env, read_topic, wait_for

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "tests" / "apps" / "client_app.py"


@pytest.fixture()
def env() -> dict[str, str]:
    return {"SF_TEST_APP": f"cl-{uuid.uuid4().hex[:8]}"}


def _started(env: dict[str, str], bootstrap: str, tmp_path: Path, name: str = "w", **extra):
    return WorkerProcess(
        APP_FILE, bootstrap, tmp_path / name, {**env, **extra}, tmp_path / f"{name}.log"
    )


def test_get_and_wait_ask_the_worker_that_owns_the_instance(
    kafka_bootstrap: str, tmp_path: Path, env
) -> None:
    app = load_app_with_env(APP_FILE, env)
    worker = _started(env, kafka_bootstrap, tmp_path)
    client = app.client(kafka_bootstrap)
    try:
        client.start("sized", id="a", input="hello")
        view = client.wait("sized", "a", timeout=90)
        assert (view.status, view.result) == ("completed", 5)
        assert [e["name"] for e in view.entries] == ["measure"]
        # Once the worker has joined, the answer comes from it (its endpoint is then known
        # for the task)...
        task = client._owners.task_of(app.workflows.node_of("sized").instances, 3, "a")
        wait_for(lambda: client._owners.endpoints(refresh=True), 60, 0.5, what="an endpoint")
        assert client.get("sized", "a").header == view.header
        first_endpoint = client._owners.owner(task)
        assert first_endpoint is not None
        # ...which says so, too, for an id it does not hold.
        assert client.get("sized", "never-started") is None
        # The worker is replaced (a new port): the client finds the new owner.
        worker.terminate()
        worker = _started(env, kafka_bootstrap, tmp_path, "w2")
        deadline = time.monotonic() + 90
        while client._owners.owner(task) in (None, first_endpoint):
            assert time.monotonic() < deadline, "the new worker never answered"
            client._owners.endpoints(refresh=True)
            assert client.get("sized", "a").result == 5
            time.sleep(0.5)
    finally:
        client.close()
        worker.terminate()


def test_a_fresh_worker_answers_for_an_instance_store_nothing_has_touched_yet(
    kafka_bootstrap: str, tmp_path: Path, env
) -> None:
    app = load_app_with_env(APP_FILE, env)
    worker = _started(env, kafka_bootstrap, tmp_path)
    client = app.client(kafka_bootstrap)
    try:
        wait_for(lambda: client._owners.endpoints(refresh=True), 60, 0.5, what="an endpoint")
        task = client._owners.task_of(app.workflows.node_of("gated").instances, 3, "nobody")
        wait_for(
            lambda: client.get("gated", "nobody") is None and client._owners.owner(task),
            60,
            0.5,
            what="the worker (not the changelog) to say there is no such instance",
        )
    finally:
        client.close()
        worker.terminate()


def test_wait_returns_when_the_commit_ends_the_instance(
    kafka_bootstrap: str, tmp_path: Path, env
) -> None:
    app = load_app_with_env(APP_FILE, env)
    worker = _started(env, kafka_bootstrap, tmp_path)
    client = app.client(kafka_bootstrap)
    try:
        client.start("gated", id="g")
        answers: list = []
        waiting = threading.Thread(
            target=lambda: answers.append(client.wait("gated", "g", timeout=120))
        )
        waiting.start()
        time.sleep(3)
        assert waiting.is_alive() and not answers  # a long poll: nothing answered yet
        client.signal("gated", "g", "go", 7)
        waiting.join(60)
        assert not waiting.is_alive()
        assert answers[0].result == "went 7"
    finally:
        client.close()
        worker.terminate()


def test_list_pages_through_the_workers_filtering_as_they_go(
    kafka_bootstrap: str, tmp_path: Path, env
) -> None:
    app = load_app_with_env(APP_FILE, env)
    worker = _started(env, kafka_bootstrap, tmp_path)
    client = app.client(kafka_bootstrap)
    try:
        ids = client.start_many("sized", [(f"i{n:02d}", "y" * n) for n in range(40)])
        for instance_id in ids:
            client.wait("sized", instance_id, timeout=120)
        wait_for(lambda: client._owners.endpoints(refresh=True), 60, 0.5, what="an endpoint")
        listed = [v.id for v in client.list("sized", page_size=7)]
        assert listed == sorted(ids)
        long_ones = list(client.list("sized", attributes={"length": "long"}, page_size=4))
        assert [v.id for v in long_ones] == [f"i{n:02d}" for n in range(10, 40)]
        assert {v.status for v in long_ones} == {"completed"}
        assert list(client.list("sized", status="running")) == []
    finally:
        client.close()
        worker.terminate()


def test_without_worker_endpoints_the_changelog_answers(
    kafka_bootstrap: str, tmp_path: Path, env
) -> None:
    app = load_app_with_env(APP_FILE, env)
    worker = _started(env, kafka_bootstrap, tmp_path, STREAMFLOW_NO_HTTP="1")
    client = app.client(kafka_bootstrap)
    try:
        client.start("sized", id="quiet", input="abc")
        assert client.wait("sized", "quiet", timeout=90).result == 3
        assert client.get("sized", "quiet").status == "completed"
        assert client._owners.endpoints(refresh=True) == []
        assert [v.id for v in client.list("sized", attributes={"length": "short"})] == ["quiet"]
    finally:
        client.close()
        worker.terminate()


def test_async_client_starts_many_and_waits_for_all(
    kafka_bootstrap: str, tmp_path: Path, env
) -> None:
    app = load_app_with_env(APP_FILE, env)
    worker = _started(env, kafka_bootstrap, tmp_path)

    async def scenario() -> None:
        async with app.async_client(kafka_bootstrap) as client:
            ids = await client.start_many("sized", [(f"m{i}", "x" * i) for i in range(300)])
            assert len(ids) == 300
            views = await asyncio.gather(*(client.wait("sized", i, timeout=120) for i in ids))
            assert [v.result for v in views] == list(range(300))
            await client.start("gated", id="ag")
            waiting = asyncio.create_task(client.wait("gated", "ag", timeout=120))
            await asyncio.sleep(2)
            assert not waiting.done()
            await client.signal("gated", "ag", "go", "now")
            assert (await waiting).result == "went now"
            assert (await client.get("sized", "m5")).result == 5
            assert await client.get("sized", "nobody") is None

    try:
        asyncio.run(scenario())
    finally:
        worker.terminate()
    # Each start was sent once: 300 start records (and the gated one) on the events topic.
    starts = [
        m
        for m in read_topic(kafka_bootstrap, f"{env['SF_TEST_APP']}.sized.events")
        if b'"start"' in (m.value() or b"")
    ]
    assert len(starts) == 300


def _cli(env: dict[str, str], bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "streamflow", "workflows", args[0], str(APP_FILE)),
            *args[1:],
            *("--bootstrap", bootstrap),
        ],
        env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_start_wait_exit_status_says_how_the_instance_ended(
    kafka_bootstrap: str, tmp_path: Path, env
) -> None:
    worker = _started(env, kafka_bootstrap, tmp_path)
    try:
        ok = _cli(env, kafka_bootstrap, "start", "sized", "s1", '"four"', "--wait")
        assert ok.returncode == 0 and "completed: 4" in ok.stdout, ok
        failed = _cli(env, kafka_bootstrap, "start", "refused", "r1", '"no stock"', "--wait")
        assert failed.returncode == 1, failed
        assert "failed" in failed.stderr and "no stock" in failed.stderr
        waiting = _cli(env, kafka_bootstrap, "start", "gated", "g1", "--wait", "--timeout", "2")
        assert waiting.returncode == 3 and "timed out" in waiting.stderr, waiting
        still = _cli(env, kafka_bootstrap, "wait", "gated", "g1", "--timeout", "1")
        assert still.returncode == 3 and "timed out" in still.stderr, still
        done = _cli(env, kafka_bootstrap, "wait", "refused", "r1")
        assert done.returncode == 1 and "no stock" in done.stderr, done
        unknown = _cli(env, kafka_bootstrap, "wait", "sized", "nobody", "--timeout", "1")
        assert unknown.returncode == 4 and "no instance 'nobody'" in unknown.stderr, unknown
        bad = _cli(env, kafka_bootstrap, "start", "sized", "b1", '{"x": 1}')
        assert bad.returncode == 1 and "the input of sized instance 'b1'" in bad.stderr, bad
        nobody = _cli(env, kafka_bootstrap, "signal", "gated", "nobody", "go")
        assert nobody.returncode == 4 and "no instance 'nobody'" in nobody.stderr, nobody
        ended = _cli(env, kafka_bootstrap, "cancel", "sized", "s1")
        assert ended.returncode == 5 and "already ended (completed)" in ended.stderr, ended
        go = _cli(env, kafka_bootstrap, "signal", "gated", "g1", "5")
        assert go.returncode == 0, go
        shown = orjson.loads(_cli(env, kafka_bootstrap, "show", "sized", "s1", "--json").stdout)
        assert shown["header"]["status"] == "completed" and shown["entries"][0]["name"] == "measure"
        rows = _cli(env, kafka_bootstrap, "list", "--workflow", "sized", "--json").stdout
        assert [orjson.loads(r)["id"] for r in rows.splitlines()] == ["s1"]
        missing = _cli(env, kafka_bootstrap, "show", "sized", "nobody")
        assert missing.returncode == 4, missing
        bogus = _cli(env, kafka_bootstrap, "list", "--status", "bogus")
        assert bogus.returncode == 2 and "bogus" in bogus.stderr
    finally:
        worker.terminate()
