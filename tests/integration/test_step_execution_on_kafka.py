"""Steps that wait on I/O, on a real broker with a real `streamflow run` worker.

The truth is computed here from each workflow's input; completions are counted from the
``done-<app>`` topic, which each workflow writes once in the transaction that completes it.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from tests.engine_helpers import REPO, WorkerProcess, load_app_with_env, read_topic

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "tests" / "apps" / "slow_steps.py"


def _start_all(bootstrap: str, topic: str, ids: list[str]) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
        }
    )
    for n, wid in enumerate(ids):
        while True:
            try:
                producer.produce(
                    topic, orjson.dumps({"type": "start", "id": wid, "input": n}), wid.encode()
                )
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(30) == 0


def _wait_done(bootstrap: str, topic: str, expected: int, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while True:
        records = read_topic(bootstrap, topic, timeout=30)
        if len(records) >= expected or time.monotonic() > deadline:
            return records
        time.sleep(2)


def _ready(worker: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while "assigned tasks" not in worker.log_file.read_text(errors="replace"):
        assert worker.alive(), worker.log_file.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, "worker got no tasks"
        time.sleep(0.2)


def test_2000_sync_and_2000_async_io_bound_workflows_on_one_worker_complete_once_each(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {"SF_TEST_APP": f"io-{uuid.uuid4().hex[:8]}", "SF_STEP_SLEEP": "0.05"}
    app = load_app_with_env(APP_FILE, env)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    sync_ids = [f"s-{i}" for i in range(2000)]
    async_ids = [f"a-{i}" for i in range(2000)]
    try:
        _ready(worker)
        _start_all(kafka_bootstrap, app.workflows.events_topic("sync3"), sync_ids)
        _start_all(kafka_bootstrap, app.workflows.events_topic("async3"), async_ids)
        records = _wait_done(kafka_bootstrap, f"done-{env['SF_TEST_APP']}", 4000, timeout=240)
        assert worker.alive(), "the worker must survive the burst"
    finally:
        assert worker.terminate() == 0
    results = {m.key().decode(): orjson.loads(m.value()) for m in records}
    counts = Counter(m.key().decode() for m in records)
    assert len(records) == 4000 and max(counts.values()) == 1, "each completes exactly once"
    expected = {wid: (n + 1) * 2 - 1 for ids in (sync_ids, async_ids) for n, wid in enumerate(ids)}
    assert results == expected
    log = worker.log_file.read_text(errors="replace")
    assert "aborting commit cycle" not in log and "fenced" not in log.lower()


def test_a_step_three_times_the_transaction_timeout_completes_while_others_are_served(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {
        "SF_TEST_APP": f"long-{uuid.uuid4().hex[:8]}",
        "SF_STEP_SLEEP": "0.01",
        "SF_LONG_STEP": "30",
    }
    app = load_app_with_env(APP_FILE, env)
    assert app.config.transaction_timeout_ms == 10_000
    client = app.client(kafka_bootstrap)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        _ready(worker)
        started = time.monotonic()
        client.start("long_one", id="long", input=7)
        time.sleep(2)
        quick = [f"q-{i}" for i in range(100)]
        _start_all(kafka_bootstrap, app.workflows.events_topic("sync3"), quick)
        # Served while the long attempt holds its thread and its command's offset.
        finished = _wait_done(kafka_bootstrap, f"done-{env['SF_TEST_APP']}", 100, timeout=25)
        assert sorted(m.key().decode() for m in finished) == sorted(quick)
        assert time.monotonic() - started < 30
        assert client.get("long_one", "long").status == "running"
        view = client.wait("long_one", "long", timeout=90)
        assert view.status == "completed" and view.result == 7
        assert time.monotonic() - started >= 30
        assert worker.alive()
    finally:
        assert worker.terminate() == 0
    log = worker.log_file.read_text(errors="replace")
    assert "aborting commit cycle" not in log and "fenced" not in log.lower()
    records = read_topic(kafka_bootstrap, f"done-{env['SF_TEST_APP']}")
    assert Counter(m.key().decode() for m in records)["long"] == 1


def test_sigterm_during_a_long_step_leaves_after_the_grace_and_the_next_worker_runs_it_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = {"SF_TEST_APP": f"term-{uuid.uuid4().hex[:8]}", "SF_LONG_STEP": "120"}
    app = load_app_with_env(APP_FILE, env)
    client = app.client(kafka_bootstrap)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        _ready(worker)
        client.start("long_one", id="long", input=3)
        deadline = time.monotonic() + 30
        while client.get("long_one", "long") is None:  # started: its step command is sent
            assert time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(2)  # the attempt is running on a step thread
        # A hung step must not hold the process: it leaves after the 10 s grace, not in 120 s.
        assert worker.terminate(timeout=40) == 0
    finally:
        if worker.alive():
            worker.kill()
    log = worker.log_file.read_text(errors="replace")
    assert "still running; they run again" in log
    # The next owner (a redeploy whose service answers fast) runs the attempt again.
    faster = {**env, "SF_LONG_STEP": "0.1"}
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", faster, tmp_path / "w2.log")
    try:
        view = client.wait("long_one", "long", timeout=90)
    finally:
        assert worker.terminate() == 0
    assert view.status == "completed" and view.result == 3
    entry = view.entries[0]
    assert entry["attempt"] == 1, "the same attempt ran again, not a retry"
    records = read_topic(kafka_bootstrap, f"done-{env['SF_TEST_APP']}")
    assert [m.key().decode() for m in records] == ["long"]


def test_cancel_stops_running_attempts_and_nothing_lands_after_cancelled(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """An async entity step waiting on I/O and a sync step polling ``ctx.check_cancelled()``
    are both running when the cancel comes: both stop (the instance is cancelled well within
    the 60 s they would run), the entity write of the cancelled one never lands, and the
    instance reports ``cancelled`` only after both answered."""
    env = {"SF_TEST_APP": f"cancel-{uuid.uuid4().hex[:8]}", "SF_LONG_STEP": "60"}
    app = load_app_with_env(APP_FILE, env)
    client = app.client(kafka_bootstrap)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        _ready(worker)
        client.start("cancellable", id="c", input=1)
        deadline = time.monotonic() + 60
        while True:  # both long attempts were sent: the journal has entries 1 and 2
            view = client.get("cancellable", "c")
            if view is not None and len(view.entries) >= 3:
                break
            assert time.monotonic() < deadline, view
            time.sleep(0.5)
        time.sleep(2)  # both attempts run
        client.cancel("cancellable", "c")
        view = client.wait("cancellable", "c", timeout=45)
    finally:
        assert worker.terminate() == 0
    assert view.status == "cancelled", view.header
    steps = {e["name"]: e for e in view.entries if e["kind"] == "step"}
    assert steps["hold_funds"]["status"] == "cancelled"
    assert steps["polling_export"]["status"] == "cancelled"
    wallets = {
        m.key().decode(): orjson.loads(m.value())
        for m in read_topic(kafka_bootstrap, f"{env['SF_TEST_APP']}-wallets-changelog")
        if m.value() is not None
    }
    # Opened with 100 (no compensation for that); the hold never landed.
    assert wallets == {"w-1": 100}


REBALANCE_APP = REPO / "tests" / "apps" / "entity_rebalance.py"


def test_a_worker_joining_restarts_no_attempt_of_the_partitions_that_stay(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    # The default protocol (auto: the consumer protocol on Kafka 4) rebalances incrementally:
    # the first worker keeps running its staying tasks' attempts; only moved partitions' commands
    # run again, on the newcomer. (Classic with the range assignor revoked every task, so the
    # first worker started every in-flight attempt again itself.)
    attempt_log, gate = tmp_path / "attempts.log", tmp_path / "gate"
    env = {
        "SF_TEST_APP": f"join-{uuid.uuid4().hex[:8]}",
        "SF_ATTEMPT_LOG": str(attempt_log),
        "SF_GATE": str(gate),
    }
    app = load_app_with_env(REBALANCE_APP, env)
    client = app.client(kafka_bootstrap)
    accounts = [f"acct-{i}" for i in range(16)]
    first = WorkerProcess(REBALANCE_APP, kafka_bootstrap, tmp_path / "w1", env, tmp_path / "1.log")
    second = None
    try:
        _ready(first)
        for account in accounts:
            client.start("pay", id=account, input=account)
        deadline = time.monotonic() + 90
        while _starts(attempt_log) < len(accounts):  # every attempt runs on the first worker
            assert time.monotonic() < deadline, "the attempts did not all start"
            time.sleep(0.2)
        second = WorkerProcess(
            REBALANCE_APP, kafka_bootstrap, tmp_path / "w2", env, tmp_path / "2.log"
        )
        _ready(second)
        gate.touch()
        records = _wait_done(kafka_bootstrap, f"done-{env['SF_TEST_APP']}", len(accounts), 120)
    finally:
        gate.touch()
        for worker in (first, second):
            if worker is not None and worker.alive():
                worker.terminate()
    assert sorted(m.key().decode() for m in records) == sorted(accounts)  # each done once
    by_key: dict[str, list[str]] = {}
    for line in attempt_log.read_text().splitlines():
        pid, key = line.split()
        by_key.setdefault(key, []).append(pid)
    assert first.proc is not None
    ran_twice_here = [k for k, pids in by_key.items() if pids.count(str(first.proc.pid)) > 1]
    assert ran_twice_here == [], "the first worker started its own in-flight attempts again"
    assert any(len(pids) == 1 for pids in by_key.values()), "no partition stayed"


def _starts(attempt_log: Path) -> int:
    return len(attempt_log.read_text().splitlines()) if attempt_log.exists() else 0
