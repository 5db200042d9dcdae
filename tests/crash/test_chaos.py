"""The fault suite: a stream with a repartition hop and an aggregate, and workflows with timers
and entity steps, on a local 3-broker cluster, while workers are SIGKILLed (every third with
its state dir deleted), one is SIGSTOPped past its session timeout while its timers are due,
the broker leading a worker's transaction coordinator is SIGKILLed, two workers lose their
connections to every broker for 20 s (a TCP proxy resets them and refuses new ones), and
(`make chaos`) the same two sit behind a 20 s partition (bytes held, nothing closed) and the whole
cluster is stopped and started. An independent checker then proves from the committed outputs
that every input took effect exactly once, and prints a table.

`make test` runs ~20,000 stream records and 400 workflows for about a minute of faults;
`make chaos` (SF_CHAOS_RECORDS=200000) runs 200,000 and adds the partition and the cluster
restart.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streamflow.dev import LocalKafka
from tests.engine_helpers import REPO, WorkerProcess, read_topic

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(
        bool(os.environ.get("STREAMFLOW_BOOTSTRAP"))
        or os.environ.get("STREAMFLOW_TEST_KAFKA", "local") != "local",
        reason="runs its own 3-broker cluster from the local jars",
    ),
]

RECORDS = int(os.environ.get("SF_CHAOS_RECORDS", "20000"))
WORKFLOWS = max(400, RECORDS // 100)
KEYS = 200
POISON_EVERY = 997
FULL = RECORDS >= 100_000
FEED_SECONDS = max(60.0, RECORDS / 1500)
"""Inputs arrive over this long; faults happen while they do."""


def _java_hash(text: str) -> int:
    h = 0
    for ch in text:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def _coordinator_broker(bootstrap: str, transactional_id: str) -> int:
    """The broker leading the ``__transaction_state`` partition of ``transactional_id``."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
    partitions = metadata.topics["__transaction_state"].partitions
    partition = abs(_java_hash(transactional_id)) % len(partitions)
    return partitions[partition].leader


class _Watcher:
    """Notes when committed outputs arrive, per topic partition, to measure how long each fault
    stalled them: a fault stops the partitions of the worker it hits and leaves the others
    flowing, so the figure is the longest gap of any one partition, not the first output."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.times: list[float] = []
        self.arrivals: dict[tuple[str, int], list[float]] = defaultdict(list)
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": uuid.uuid4().hex,
                "auto.offset.reset": "earliest",
                # the workers create the topics after it subscribes
                "topic.metadata.refresh.interval.ms": 1000,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.subscribe(topics)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._consumer.consume(1000, 0.2)
            now = time.monotonic()
            for msg in batch:
                if msg.error() is None:
                    self.times.append(now)
                    self.arrivals[(msg.topic(), msg.partition())].append(now)

    def resumed_after(self, topic: str, start: float, end: float) -> float | None:
        """Seconds from the end of a fault until every partition of ``topic`` that was flowing
        when it began (an output in the 10 s before) has output again; None if none was."""
        waits = []
        for (name, _), times in list(self.arrivals.items()):
            if name != topic or not any(start - 10 <= t <= start for t in times):
                continue
            after = [t for t in times if t > end]
            if after:  # none: the feed ended and the partition had caught up before the fault
                waits.append(after[0] - end)
        return max(waits) if waits else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def test_chaos_every_input_takes_effect_exactly_once(
    three_brokers: LocalKafka, tmp_path: Path
) -> None:
    cluster = three_brokers
    bootstrap = cluster.bootstrap
    run = uuid.uuid4().hex[:6]
    stream_env = {"SF_TEST_APP": f"chaos-s-{run}"}
    flow_env = {"SF_TEST_APP": f"chaos-w-{run}"}
    s_name, w_name = stream_env["SF_TEST_APP"], flow_env["SF_TEST_APP"]
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for topic, parts in ((f"in-{s_name}", 6), (f"out-{s_name}", 6)):
        admin.create_topics([NewTopic(topic, parts, 3, config={"min.insync.replicas": "2"})])[
            topic
        ].result(30)
    stream_app, flow_app = (
        REPO / "tests" / "apps" / "chaos_stream.py",
        REPO / "tests" / "apps" / "chaos_workflows.py",
    )
    proxies = cluster.proxies()  # s1 and f1 reach the brokers only through these: one "host"
    via = {0: bootstrap, 1: cluster.proxied_bootstrap}
    workers = [
        WorkerProcess(stream_app, via[i], tmp_path / f"s{i}", stream_env, tmp_path / f"s{i}.log")
        for i in range(2)
    ] + [
        WorkerProcess(flow_app, via[i], tmp_path / f"f{i}", flow_env, tmp_path / f"f{i}.log")
        for i in range(2)
    ]
    names = ["s0", "s1", "f0", "f1"]
    watcher = _Watcher(bootstrap, [f"out-{s_name}", f"done-{w_name}"])
    faults: list[tuple[str, str, float, float]] = []
    """(kind, what, began, ended): a kill ends as it begins, a SIGSTOP at its SIGCONT."""
    truth_count: Counter[str] = Counter()
    truth_sum: Counter[str] = Counter()
    poison: set[str] = set()
    stop = threading.Event()

    def feed() -> None:
        producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": 5,
                "partitioner": "murmur2_random",
            }
        )
        seqs: Counter[str] = Counter()
        rng = random.Random(7)
        started = time.monotonic()
        for i in range(RECORDS):
            key = f"k{rng.randrange(KEYS)}"
            if i % POISON_EVERY == POISON_EVERY - 1:
                event = {"id": f"p{i}", "key": key, "poison": True}
                poison.add(f"p{i}")
            else:
                event = {"id": f"r{i}", "key": key, "seq": seqs[key]}
                truth_count[key] += 1
                truth_sum[key] += seqs[key]
                seqs[key] += 1
            while True:
                try:
                    producer.produce(f"in-{s_name}", orjson.dumps(event), f"src{i % 64}".encode())
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % (RECORDS // WORKFLOWS) == 0 and i // (RECORDS // WORKFLOWS) < WORKFLOWS:
                wid = f"t{i // (RECORDS // WORKFLOWS)}"  # spread over the feed, so over the faults
                producer.produce(
                    f"{w_name}.tick.events",
                    orjson.dumps(
                        {"type": "start", "id": wid, "input": i // (RECORDS // WORKFLOWS)}
                    ),
                    wid.encode(),
                )
            if i % 500 == 499:  # a steady stream over the fault period
                producer.flush(60)
                ahead = (i + 1) / (RECORDS / FEED_SECONDS) - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        assert producer.flush(120) == 0

    try:
        deadline = time.monotonic() + 90
        while not all("assigned tasks" in w.log_file.read_text(errors="replace") for w in workers):
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.5)
        feeder = threading.Thread(target=feed)
        feeder.start()
        rng = random.Random(11)
        kills = 0
        done_faults: set[str] = set()

        def once(name: str) -> bool:
            if name in done_faults:
                return False
            done_faults.add(name)
            return True

        while feeder.is_alive():
            time.sleep(rng.uniform(2.0, 5.0))
            index = rng.randrange(len(workers))
            victim = workers[index]
            victim.kill()
            kills += 1
            wipe = kills % 3 == 0
            if wipe:
                shutil.rmtree(victim.state_dir, ignore_errors=True)
            at = time.monotonic()
            faults.append(
                (
                    f"worker SIGKILL{' + state dir' if wipe else ''}",
                    f"SIGKILL {names[index]}{' + state dir' if wipe else ''}",
                    at,
                    at,
                )
            )
            victim.start()
            if kills == 3 and once("stop"):
                paused = workers[2]  # a workflow worker: its timers come due while it sleeps
                assert paused.proc is not None
                paused.proc.send_signal(signal.SIGSTOP)
                at = time.monotonic()
                time.sleep(15)
                paused.proc.send_signal(signal.SIGCONT)
                faults.append(
                    (
                        "worker SIGSTOP",
                        "SIGSTOP f0 15 s (past session timeout)",
                        at,
                        time.monotonic(),
                    )
                )
            if kills == 5 and once("coordinator"):
                worker_id = (tmp_path / "f1" / w_name / "worker.id").read_text().strip()
                broker = _coordinator_broker(bootstrap, f"{w_name}-{worker_id}")
                cluster.kill_broker(broker)
                at = time.monotonic()
                time.sleep(5)
                cluster.restart_broker(broker)
                faults.append(
                    (
                        "broker SIGKILL",
                        f"SIGKILL broker {broker} (f1's coordinator) 5 s",
                        at,
                        time.monotonic(),
                    )
                )
            if kills == 2 and once("cut"):
                for w in (workers[1], workers[3]):  # cut workers that serve, not ones starting
                    _wait_serving(w)
                proxies.cut()  # s1 and f1: every connection reset, new ones refused
                at = time.monotonic()
                time.sleep(20)
                proxies.restore()
                faults.append(
                    ("connections cut", "s1+f1 connections cut 20 s", at, time.monotonic())
                )
            if FULL and kills == 8 and once("freeze"):
                for w in (workers[1], workers[3]):
                    _wait_serving(w)
                proxies.freeze()  # s1 and f1: a partition, nothing closes
                at = time.monotonic()
                time.sleep(20)
                proxies.restore()
                faults.append(("network partition", "s1+f1 partitioned 20 s", at, time.monotonic()))
            if FULL and kills == 9 and once("cluster"):
                at = time.monotonic()
                cluster.stop()
                cluster.start()
                faults.append(
                    ("cluster restart", "whole cluster stopped and started", at, time.monotonic())
                )
        feeder.join()
        stop.set()
        deadline = time.monotonic() + 300
        while True:
            totals = _latest(read_topic(bootstrap, f"out-{s_name}", timeout=120))
            finished = read_topic(bootstrap, f"done-{w_name}", timeout=60)
            if (
                sum(v["count"] for v in totals.values()) >= sum(truth_count.values())
                and len({m.key() for m in finished}) >= WORKFLOWS
            ):
                break
            if time.monotonic() > deadline:
                for w in workers:  # incomplete: each worker's stacks go to its log
                    if w.alive() and w.proc is not None:
                        w.proc.send_signal(signal.SIGUSR1)
                break
            time.sleep(5)
        alive = [w.alive() for w in workers]
    finally:
        watcher.close()
        for w in workers:
            if w.alive():
                w.terminate()
        proxies.close()

    outputs = read_topic(bootstrap, f"out-{s_name}")
    per_key: dict[str, list[int]] = defaultdict(list)
    for m in outputs:
        per_key[m.key().decode()].append(orjson.loads(m.value())["count"])
    lost = sum(max(0, truth_count[k] - (max(v) if v else 0)) for k, v in per_key.items()) + sum(
        truth_count[k] for k in truth_count if k not in per_key
    )
    doubled = sum(len(v) - len(set(v)) for v in per_key.values())
    dead = {orjson.loads(m.value())["id"] for m in read_topic(bootstrap, f"{s_name}.dlq")}
    done = Counter(m.key().decode() for m in finished)
    counters = {
        k: v[-1] for k, v in _by_key(read_topic(bootstrap, f"{w_name}-counters-changelog")).items()
    }
    expected_counters = Counter(f"c{n % 20}" for n in range(WORKFLOWS))

    kinds = Counter(kind for kind, _, _, _ in faults)
    print(
        f"\nchaos: {RECORDS:,} stream records, {WORKFLOWS:,} workflows, {len(faults)} faults: "
        + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    )
    print(f"{'fault':<42} {'lasted':>7} {'stream resumed':>15} {'workflows resumed':>18}")
    for _, what, start, end in faults:
        waits = [
            watcher.resumed_after(topic, start, end)
            for topic in (f"out-{s_name}", f"done-{w_name}")
        ]
        cells = ["—" if x is None else f"{x:.1f} s" for x in waits]
        print(f"{what:<42} {end - start:>6.1f}s {cells[0]:>15} {cells[1]:>18}")
    for topic in (f"out-{s_name}", f"done-{w_name}"):
        seen = {p: len(t) for (name, p), t in watcher.arrivals.items() if name == topic}
        print(f"watched {topic}: {sum(seen.values())} outputs on partitions {sorted(seen)}")
    print(
        "(resumed: from the end of the fault until every output partition that was flowing "
        "has output again; faults 2-5 s apart overlap)"
    )
    print(
        f"lost {lost}, doubled {doubled}, dead letters {len(dead)} of {len(poison)} poison, "
        f"workflows finished {len(done)} (twice: {sum(c > 1 for c in done.values())})"
    )

    assert all(alive), "no worker crash-loops"
    assert lost == 0 and doubled == 0
    assert all(sorted(v) == list(range(1, truth_count[k] + 1)) for k, v in per_key.items())
    assert {k: v["sum"] for k, v in totals.items()} == dict(truth_sum)
    assert dead == poison, "the DLQ holds exactly the poison set"
    assert set(done) == {f"t{i}" for i in range(WORKFLOWS)} and max(done.values()) == 1
    assert counters == dict(expected_counters), "each entity step changed its entity once"


def _wait_serving(worker: WorkerProcess, timeout: float = 60) -> None:
    """Until the worker's latest incarnation has been assigned its tasks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = worker.log_file.read_text(errors="replace")
        if text.rfind("assigned tasks") > text.rfind(" started ("):
            return
        time.sleep(0.5)


def _latest(messages: list) -> dict[str, dict]:
    return {m.key().decode(): orjson.loads(m.value()) for m in messages}


def _by_key(messages: list) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for m in messages:
        if m.value() is not None:
            out[m.key().decode()].append(orjson.loads(m.value()))
    return out
