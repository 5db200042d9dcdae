"""SIGKILL workers at random while they count: nothing is lost, nothing is doubled.

Three `streamflow run` processes share a 6-partition keyed count. While 200,000 events stream
in, a random worker is SIGKILLed every few seconds and restarted (every third time with its
state dir deleted). The independent truth is a plain-Python recomputation of the input.
"""

from __future__ import annotations

import random
import shutil
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streamflow.runtime.partitioner import partition_for
from streamflow.runtime.restore import Restorer
from streamflow.runtime.task import Task
from tests.engine_helpers import (
    REPO,
    WorkerProcess,
    create_topic,
    decoded_by_key,
    load_app_with_env,
    produce_events,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.kafka

PARTITIONS = 6
APP_FILE = REPO / "tests" / "apps" / "keyed_count.py"


def _events(n: int, keys: int, seed: int) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    return [(f"k{rng.randrange(keys)}", {"seq": i}) for i in range(n)]


def _committed_total(bootstrap: str, group: str, topic: str) -> int:
    """Input offsets the group committed; -1 while the broker cannot say yet. OffsetFetch waits
    for offsets still pending in open transactions (KIP-447), and a SIGKILLed worker's stay
    pending until its successor fences it or the transaction times out: a timeout here means
    "not yet", not a failure."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        offsets = consumer.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30
        )
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._TIMED_OUT:
            raise
        return -1
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in offsets)


class _NoOutput:
    def send(self, *args: object) -> None:
        raise AssertionError("restore must not produce")

    send_tracked = send


def restored_store(
    bootstrap: str, app_file: Path, state_dir: Path, partition: int, env: dict
) -> dict:
    """Open a worker's (possibly stale) store for ``partition``, catch it up from its checkpoint."""
    app = load_app_with_env(app_file, env)
    sub = app.topology.sub_topologies()[0]
    nodes = {t.name: app.topology.source_node(t.name) for t in sub.sources}
    task = Task(sub, nodes, partition, state_dir / app.name, _NoOutput(), app.dead_letter_topic)
    restorer = Restorer(bootstrap, app.name)
    try:
        restorer.add(task)
        deadline = time.monotonic() + 60
        while restorer.busy and time.monotonic() < deadline:
            restorer.step(0.1)
        assert not restorer.busy, f"restore of partition {partition} did not finish"
        return dict(task.store("counts").items())
    finally:
        restorer.close()
        task.close()


def test_sigkill_random_workers_loses_and_duplicates_no_update(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    env = {
        "SF_TEST_APP": f"crash-{run}",
        "SF_TEST_INPUT": f"crash-in-{run}",
        "SF_TEST_OUTPUT": f"crash-out-{run}",
    }
    create_topic(kafka_bootstrap, env["SF_TEST_INPUT"], PARTITIONS)
    create_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"], PARTITIONS)
    events = _events(200_000, keys=500, seed=7)

    workers = [
        WorkerProcess(APP_FILE, kafka_bootstrap, tmp_path / f"w{i}", env, tmp_path / f"w{i}.log")
        for i in range(3)
    ]
    producer = threading.Thread(
        target=produce_events, args=(kafka_bootstrap, env["SF_TEST_INPUT"], events, 8_000)
    )
    producer.start()
    rng = random.Random(11)
    kills = wipes = 0
    try:
        while producer.is_alive() or kills < 6:
            time.sleep(rng.uniform(2.0, 4.0))
            victim = rng.choice(workers)
            victim.kill()
            kills += 1
            if kills % 3 == 0:
                shutil.rmtree(victim.state_dir, ignore_errors=True)
                wipes += 1
            victim.start()
        producer.join()
        wait_for(
            lambda: (
                _committed_total(kafka_bootstrap, env["SF_TEST_APP"], env["SF_TEST_INPUT"])
                == len(events)
            ),
            timeout=240,
            interval=2,
            what="all input committed",
        )
    finally:
        for w in workers[1:]:
            w.terminate()
    # The survivor now owns every task: it restores what it lacked, from its own checkpoints.
    time.sleep(5)
    assert workers[0].terminate() == 0

    truth_updates: dict[str, list[dict]] = defaultdict(list)
    for key, event in events:
        truth_updates[key].append({"count": len(truth_updates[key]) + 1, "seq": event["seq"]})
    output = decoded_by_key(read_topic(kafka_bootstrap, env["SF_TEST_OUTPUT"]))
    assert sum(map(len, output.values())) == len(events), "one update per input record"
    assert output == truth_updates, "updates per key, in input order"

    truth_store = {k: v[-1] for k, v in truth_updates.items()}
    for worker in workers:
        if not (worker.state_dir / env["SF_TEST_APP"]).exists():
            continue
        for partition in range(PARTITIONS):
            if not (worker.state_dir / env["SF_TEST_APP"] / f"0_{partition}").exists():
                continue
            store = restored_store(kafka_bootstrap, APP_FILE, worker.state_dir, partition, env)
            expected = {
                k: v
                for k, v in truth_store.items()
                if partition_for(k.encode(), PARTITIONS) == partition
            }
            assert store == expected, f"{worker.state_dir.name} partition {partition}"
    assert kills >= 6 and wipes >= 2
