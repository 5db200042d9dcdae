"""The engine on a real broker: dead letters, state-dir loss, at-least-once, draining on SIGTERM."""

from __future__ import annotations

import shutil
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from streamflow.operate.dead_letter_format import (
    HEADER_ERROR,
    HEADER_OFFSET,
    HEADER_PROCESSOR,
    HEADER_STAGE,
)
from tests.engine_helpers import (
    REPO,
    WorkerProcess,
    create_topic,
    decoded_by_key,
    produce_events,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "tests" / "apps" / "keyed_count.py"


def _env(guarantee: str = "exactly_once") -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {
        "SF_TEST_APP": f"it-{run}",
        "SF_TEST_INPUT": f"it-in-{run}",
        "SF_TEST_OUTPUT": f"it-out-{run}",
        "SF_TEST_GUARANTEE": guarantee,
    }


def _setup(bootstrap: str, env: dict[str, str], partitions: int = 3) -> None:
    create_topic(bootstrap, env["SF_TEST_INPUT"], partitions)
    create_topic(bootstrap, env["SF_TEST_OUTPUT"], partitions)


def _output_count(bootstrap: str, topic: str) -> int:
    return len(read_topic(bootstrap, topic, timeout=20))


def test_poison_records_land_in_dlq_with_reason_and_processing_goes_on(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = _env()
    _setup(kafka_bootstrap, env)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        stamp = 1_700_000_000_000
        producer.produce(env["SF_TEST_INPUT"], orjson.dumps({"seq": 0}), b"a", timestamp=stamp)
        producer.produce(
            env["SF_TEST_INPUT"],
            b"\xff not json",
            b"a",  # undecodable
            headers=[("trace-id", b"abc")],
        )
        producer.produce(env["SF_TEST_INPUT"], orjson.dumps({"seq": 2, "poison": True}), b"a")
        producer.produce(env["SF_TEST_INPUT"], orjson.dumps({"seq": 3}), b"a", timestamp=stamp + 3)
        producer.flush(10)
        wait_for(
            lambda: _output_count(kafka_bootstrap, env["SF_TEST_OUTPUT"]) == 2,
            60,
            what="the two good records processed",
        )
        dead = read_topic(kafka_bootstrap, f"{env['SF_TEST_APP']}.dlq")
    finally:
        assert worker.terminate() == 0
    assert [m.value() for m in dead] == [b"\xff not json", orjson.dumps({"seq": 2, "poison": True})]
    first, second = (dict(m.headers()) for m in dead)
    assert first[HEADER_STAGE] == b"deserialize" and first[HEADER_OFFSET] == b"1"
    assert first["trace-id"] == b"abc"  # the record's own headers travel with it
    assert second[HEADER_STAGE] == b"process" and second[HEADER_PROCESSOR] == b"aggregate:counts"
    assert b"poison event 2" in second[HEADER_ERROR]
    outputs = read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"])
    assert decoded_by_key(outputs) == {"a": [{"count": 1, "seq": 0}, {"count": 2, "seq": 3}]}
    assert [m.timestamp()[1] for m in outputs] == [stamp, stamp + 3]  # event time propagates


def test_deleting_a_worker_state_dir_loses_nothing(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = _env()
    _setup(kafka_bootstrap, env)
    events = [(f"k{i % 40}", {"seq": i}) for i in range(4000)]
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], events[:2000])
        wait_for(
            lambda: _output_count(kafka_bootstrap, env["SF_TEST_OUTPUT"]) == 2000,
            60,
            what="first half processed",
        )
        assert worker.terminate() == 0
        shutil.rmtree(tmp_path / "w")
        worker.start()
        produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], events[2000:])
        wait_for(
            lambda: _output_count(kafka_bootstrap, env["SF_TEST_OUTPUT"]) == 4000,
            60,
            what="second half processed",
        )
    finally:
        assert worker.terminate() == 0
    output = decoded_by_key(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"]))
    totals = Counter(k for k, _ in events)
    # The rebuilt stores continued the counts where the deleted ones stopped.
    assert {k: v[-1]["count"] for k, v in output.items()} == dict(totals)
    assert all([u["count"] for u in v] == list(range(1, totals[k] + 1)) for k, v in output.items())


def test_at_least_once_delivers_every_record_despite_sigkill(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    env = _env("at_least_once")
    _setup(kafka_bootstrap, env)
    events = [(f"k{i % 50}", {"seq": i}) for i in range(20_000)]
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], events[:10_000])
        time.sleep(3)
        worker.kill()
        worker.start()
        produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], events[10_000:])

        def every_seq_seen() -> bool:
            seen = {
                u["seq"]
                for updates in decoded_by_key(
                    read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], timeout=20)
                ).values()
                for u in updates
            }
            return seen == {e["seq"] for _, e in events}

        wait_for(every_seq_seen, 90, interval=2, what="every input seq in the output")
    finally:
        assert worker.terminate() == 0


def test_sigterm_drains_commits_and_leaves_the_group(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = _env()
    _setup(kafka_bootstrap, env)
    events = [(f"k{i % 7}", {"seq": i}) for i in range(3000)]
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], events)
    wait_for(
        lambda: _output_count(kafka_bootstrap, env["SF_TEST_OUTPUT"]) == 3000,
        60,
        what="all processed",
    )
    started = time.monotonic()
    assert worker.terminate(timeout=30) == 0
    assert time.monotonic() - started < 15, "drain must not wait for the session timeout"
    log = (tmp_path / "w.log").read_text()
    assert "draining and leaving the group" in log and "worker stopped" in log


def test_a_changelog_recreated_under_a_store_makes_the_store_rebuild_from_it(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The local store's checkpoint is past the end of its (recreated, empty) changelog: the
    replica holds state the changelog does not, so it is wiped and rebuilt — the store equals
    its changelog again."""
    from confluent_kafka.admin import AdminClient, NewTopic

    env = _env()
    _setup(kafka_bootstrap, env, partitions=1)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        produce_events(
            kafka_bootstrap, env["SF_TEST_INPUT"], [("a", {"seq": i}) for i in range(10)]
        )
        wait_for(
            lambda: _output_count(kafka_bootstrap, env["SF_TEST_OUTPUT"]) == 10,
            60,
            what="ten counts",
        )
    finally:
        assert worker.terminate() == 0
    changelog = f"{env['SF_TEST_APP']}-counts-changelog"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.delete_topics([changelog])[changelog].result(30)
    deadline = time.monotonic() + 60
    while True:  # deletion completes asynchronously on the broker
        try:
            admin.create_topics([NewTopic(changelog, 1, 1, config={"cleanup.policy": "compact"})])[
                changelog
            ].result(30)
            break
        except Exception:  # noqa: BLE001 - still being deleted
            assert time.monotonic() < deadline, "changelog topic not recreated"
            time.sleep(1)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w2.log")
    try:
        produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], [("a", {"seq": 10})])
        wait_for(
            lambda: _output_count(kafka_bootstrap, env["SF_TEST_OUTPUT"]) == 11,
            60,
            what="the count after the rebuild",
        )
    finally:
        assert worker.terminate() == 0
    last = decoded_by_key(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"]))["a"][-1]
    assert last == {"count": 1, "seq": 10}, (
        "rebuilt from the empty changelog, not the stale replica"
    )
    assert "past the end of" in worker.log_file.read_text(errors="replace")


def test_store_data_without_a_checkpoint_is_wiped_and_rebuilt_from_the_changelog(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """RocksDB holds data but no changelog checkpoint: written by no commit we know of (a copied
    directory, a crash of some older version). Replaying the changelog over it would keep keys
    the changelog never had, so the store is wiped first and equals its changelog again."""
    from rocksdict import Options, Rdict

    env = _env()
    _setup(kafka_bootstrap, env, partitions=1)
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w.log")
    try:
        produce_events(kafka_bootstrap, env["SF_TEST_INPUT"], [("a", {"seq": i}) for i in range(5)])
        wait_for(
            lambda: _output_count(kafka_bootstrap, env["SF_TEST_OUTPUT"]) == 5,
            60,
            what="five counts",
        )
    finally:
        assert worker.terminate() == 0
    [store_dir] = [p.parent for p in (tmp_path / "w").rglob("CURRENT") if "counts" in str(p)]
    opts = Options(raw_mode=True)
    db = Rdict(str(store_dir), opts, column_families={"streamflow_meta": Options(raw_mode=True)})
    meta = db.get_column_family("streamflow_meta")
    assert meta.get(b"changelog_next_offset") is not None, "the worker left a checkpoint"
    # How the store encodes key and value, so the ghost below is one the app would read.
    assert orjson.loads(db[b"a"]) == {"count": 5, "seq": 4}
    del meta[b"changelog_next_offset"]  # the checkpoint is gone ...
    db[b"ghost"] = orjson.dumps({"count": 41, "seq": 0})  # ... and a key no changelog holds
    meta.close()
    db.close()
    del meta, db
    worker = WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / "w", env, tmp_path / "w2.log")
    try:
        produce_events(
            kafka_bootstrap, env["SF_TEST_INPUT"], [("ghost", {"seq": 1}), ("a", {"seq": 5})]
        )
        wait_for(
            lambda: _output_count(kafka_bootstrap, env["SF_TEST_OUTPUT"]) == 7,
            60,
            what="the counts after the rebuild",
        )
    finally:
        assert worker.terminate() == 0
    latest = {
        k: v[-1]
        for k, v in decoded_by_key(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"])).items()
    }
    assert latest["ghost"] == {"count": 1, "seq": 1}, "the key no commit wrote is gone"
    assert latest["a"] == {"count": 6, "seq": 5}, "the rest is rebuilt from the changelog"
    assert "holds data but no changelog checkpoint" in worker.log_file.read_text(errors="replace")
