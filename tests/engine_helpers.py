"""Helpers for tests that run real workers against a real broker."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(30)


def produce_events(
    bootstrap: str, topic: str, events: list[tuple[str, dict]], rate_per_s: float | None = None
) -> None:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 10,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
        }
    )
    start = time.monotonic()
    for i, (key, value) in enumerate(events):
        if rate_per_s and i % 100 == 0:
            ahead = i / rate_per_s - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
        while True:
            try:
                producer.produce(topic, orjson.dumps(value), key.encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def read_topic(
    bootstrap: str, topic: str, *, isolation: str = "read_committed", timeout: float = 60.0
) -> list[Any]:
    """Every record of ``topic`` up to its current end, as raw confluent Messages."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": True,
        }
    )
    metadata = consumer.list_topics(topic, timeout=10)
    partitions = len(metadata.topics[topic].partitions)
    consumer.subscribe([topic])
    out, eof = [], set()
    deadline = time.monotonic() + timeout
    while len(eof) < partitions and time.monotonic() < deadline:
        for msg in consumer.consume(5000, 0.5):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
                continue
            eof.discard(msg.partition())
            out.append(msg)
    consumer.close()
    return out


def decoded_by_key(messages: list[Any]) -> dict[str, list[Any]]:
    result: dict[str, list[Any]] = defaultdict(list)
    for msg in messages:
        result[msg.key().decode()].append(orjson.loads(msg.value()))
    return result


class WorkerProcess:
    """A real `streamflow run` process, killable with SIGKILL."""

    def __init__(
        self, app_file: Path, bootstrap: str, state_dir: Path, env: dict[str, str], log_file: Path
    ) -> None:
        self.args = [
            sys.executable,
            "-m",
            "streamflow",
            "run",
            str(app_file),
            "--bootstrap",
            bootstrap,
            "--state-dir",
            str(state_dir),
        ]
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
        self.state_dir = state_dir
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = open(self.log_file, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)  # its stacks go to its log: where it hung
                time.sleep(1)
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_for(
    predicate: Any, timeout: float, interval: float = 1.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def load_app_with_env(app_file: Path, env: dict[str, str]) -> Any:
    """Load an example/test App whose names come from the environment, leaving it as it was.

    Example modules read their settings at import; a test must not leak them into later tests.
    """
    from streamflow.cli.app_file import load_app

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return load_app(str(app_file))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class RunningWorker:
    """A worker in a thread of the test process, for tests that inspect it in-process."""

    def __init__(self, app: Any) -> None:
        from streamflow.runtime.worker import Worker

        self.worker = Worker(app.topology, app.config, app.dead_letter_topic)
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(install_signal_handlers=False)
        except BaseException as exc:  # noqa: BLE001  reported by stop()
            self.errors.append(exc)

    def stop(self) -> None:
        self.worker.stop()
        self.thread.join(60)
        assert not self.thread.is_alive(), "worker did not stop"
        assert not self.errors, self.errors


def kill_while_producing(
    producer: Any, workers: list[WorkerProcess], min_kills: int, seed: int
) -> tuple[int, int]:
    """SIGKILL a random worker every 2–3.5 s while ``producer`` (a thread) runs and until
    ``min_kills`` kills, restarting it at once, every other time with its state dir deleted
    (its stores then come back from the changelogs alone). Returns (kills, wipes)."""
    rng = random.Random(seed)
    kills = wipes = 0
    while min_kills and (producer.is_alive() or kills < min_kills):
        time.sleep(rng.uniform(2.0, 3.5))
        victim = rng.choice(workers)
        victim.kill()
        kills += 1
        if kills % 2 == 0:
            shutil.rmtree(victim.state_dir, ignore_errors=True)
            wipes += 1
        victim.start()
    return kills, wipes
