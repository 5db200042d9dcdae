"""Faults the SIGKILL tests never reach: slow batches, a worker paused past its session and
transaction timeouts. The truth is the set of inputs this test produced; outputs are read with
read_committed and must hold each input exactly once."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests.engine_helpers import REPO, WorkerProcess, create_topic, produce_events, read_topic

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "tests" / "apps" / "slow_map.py"


def _check_exactly_once(bootstrap: str, name: str, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = Counter(orjson.loads(m.value())["n"] for m in read_topic(bootstrap, f"out-{name}"))
        if len(seen) >= expected or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert sorted(seen) == list(range(expected)), f"missing {expected - len(seen)}"
    assert max(seen.values()) == 1, f"duplicated: {[n for n, c in seen.items() if c > 1][:10]}"


def test_a_batch_slower_than_the_transaction_timeout_commits_in_time(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = f"slowbatch-{uuid.uuid4().hex[:8]}"
    env = {"SF_TEST_APP": name, "SF_MAP_SLEEP": "0.005", "SF_TEST_PARTITIONS": "1"}
    create_topic(kafka_bootstrap, f"in-{name}", 1)
    # One full batch of 3,000 records at 5 ms each: 15 s, past the 10 s transaction timeout.
    produce_events(kafka_bootstrap, f"in-{name}", [(f"k{i}", {"n": i}) for i in range(3000)])
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        _check_exactly_once(kafka_bootstrap, name, 3000, timeout=90)
        assert worker.alive()
    finally:
        assert worker.terminate() == 0
    log = worker.log_file.read_text(errors="replace")
    assert "aborting commit cycle" not in log and "fatal client error" not in log


def test_a_worker_paused_past_its_timeouts_is_fenced_recovers_and_doubles_nothing(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = f"paused-{uuid.uuid4().hex[:8]}"
    env = {"SF_TEST_APP": name, "SF_MAP_SLEEP": "0.002", "SF_TEST_PARTITIONS": "4"}
    create_topic(kafka_bootstrap, f"in-{name}", 4)
    total = 12_000
    workers = [
        WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / f"w{i}", env, tmp_path / f"w{i}.log")
        for i in range(2)
    ]
    try:
        produce_events(kafka_bootstrap, f"in-{name}", [(f"k{i}", {"n": i}) for i in range(4000)])
        time.sleep(8)  # both in the group, processing
        victim = workers[0]
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGSTOP)  # mid-transaction: 2 ms a record, always busy
        produce_events(
            kafka_bootstrap, f"in-{name}", [(f"k{i}", {"n": i}) for i in range(4000, 8000)]
        )
        time.sleep(16)  # past session.timeout.ms and transaction.timeout.ms (10 s each)
        victim.proc.send_signal(signal.SIGCONT)
        produce_events(
            kafka_bootstrap, f"in-{name}", [(f"k{i}", {"n": i}) for i in range(8000, total)]
        )
        _check_exactly_once(kafka_bootstrap, name, total, timeout=120)
        assert all(w.alive() for w in workers), "the paused worker recovers instead of exiting"
    finally:
        for w in workers:
            if w.alive():
                w.terminate()


def test_a_worker_stopping_on_an_error_mid_batch_commits_nothing_it_did_not_process(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = f"unclean-{uuid.uuid4().hex[:8]}"
    env = {
        "SF_TEST_APP": name,
        "SF_INTERRUPT_MARKER": str(tmp_path / "marker"),
        "SF_INTERRUPT_AT": "50",
    }
    app_file = REPO / "tests" / "apps" / "interrupted.py"
    create_topic(kafka_bootstrap, f"in-{name}", 1)
    produce_events(kafka_bootstrap, f"in-{name}", [(f"k{i}", {"n": i}) for i in range(200)])
    worker = WorkerProcess(app_file, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    assert worker.proc is not None
    assert worker.proc.wait(60) != 0, "the interrupt stops the worker"
    worker.start()  # the marker is there now: record 50 passes
    try:
        _check_exactly_once(kafka_bootstrap, name, 200, timeout=90)
    finally:
        assert worker.terminate() == 0
    assert (
        "aborting commit cycle (the worker is stopping on an error)"
        in worker.log_file.read_text(errors="replace")
    )


def test_a_fenced_producer_is_replaced_and_the_worker_goes_on_exactly_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Another producer takes the worker's transactional ids (what a zombie's successor does):
    the worker's next transaction call is fenced, a fatal error. It must close its tasks dirty,
    start new producers (which fence the intruder back) and rejoin, losing and doubling nothing;
    before, the error ended the process."""
    from confluent_kafka import Producer

    name = f"fenced-{uuid.uuid4().hex[:8]}"
    env = {"SF_TEST_APP": name, "SF_MAP_SLEEP": "0.001", "SF_TEST_PARTITIONS": "2"}
    create_topic(kafka_bootstrap, f"in-{name}", 2)
    total = 8000
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        produce_events(kafka_bootstrap, f"in-{name}", [(f"k{i}", {"n": i}) for i in range(4000)])
        id_file = tmp_path / "w" / name / "worker.id"
        deadline = time.monotonic() + 60
        while not (id_file.exists() and "assigned tasks" in worker.log_file.read_text()):
            assert time.monotonic() < deadline, "worker did not start"
            time.sleep(0.5)
        time.sleep(2)  # mid-stream: 1 ms a record
        worker_id = id_file.read_text().strip()
        for tid in (f"{name}-{worker_id}", f"{name}-{worker_id}-2"):
            Producer(
                {"bootstrap.servers": kafka_bootstrap, "transactional.id": tid}
            ).init_transactions(30)
        produce_events(
            kafka_bootstrap, f"in-{name}", [(f"k{i}", {"n": i}) for i in range(4000, total)]
        )
        _check_exactly_once(kafka_bootstrap, name, total, timeout=120)
        assert worker.alive(), "a fenced producer is survivable"
    finally:
        if worker.alive():
            worker.terminate()
    log = worker.log_file.read_text(errors="replace")
    assert "fatal client error" in log, "the fence reached the worker (else this proves nothing)"
