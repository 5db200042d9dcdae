"""Helpers for tests that talk to a real broker: unique topics, and reading a topic back.

Behind the `kafka_admin`, `topic_factory` and `new_topic` fixtures of `tests/conftest.py`, and
usable from any test as `from tests.kafka_helpers import …`.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def unique_name(prefix: str) -> str:
    """`<prefix>-<12 hex>`, with the prefix cut to Kafka's topic alphabet and a readable length."""
    clean = re.sub(r"[^a-zA-Z0-9._-]+", "-", prefix).strip("-.")[:60] or "t"
    return f"{clean}-{uuid.uuid4().hex[:12]}"


def wait_for_brokers(bootstrap: str, timeout: float = 30.0) -> None:
    """Fail with a clear message if nothing answers at `bootstrap`."""
    admin = admin_client(bootstrap)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if admin.list_topics(timeout=2.0).brokers:
                return
        except KafkaException as exc:
            last = exc
        else:
            last = None
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"no Kafka broker answered at {bootstrap} within {timeout} s: {last}"
            )
        time.sleep(0.2)


def create_topic(
    admin: AdminClient,
    name: str,
    partitions: int = 1,
    *,
    replication_factor: int = -1,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create a topic and wait until every partition has a leader (-1 RF: the broker default)."""
    new = NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=replication_factor,
        config=dict(config or {}),
    )
    admin.create_topics([new], operation_timeout=timeout, request_timeout=timeout)[name].result()
    wait_for_topic(admin, name, partitions, timeout)


def wait_for_topic(admin: AdminClient, name: str, partitions: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        topic = admin.list_topics(name, timeout=5.0).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(p.leader >= 0 for p in topic.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topic {name} did not get leaders for {partitions} partitions")
        time.sleep(0.1)


def delete_topics(admin: AdminClient, names: list[str], timeout: float = 10.0) -> None:
    """Best effort: a test's topics are uniquely named, so one left behind harms no other test."""
    if not names:
        return
    futures = admin.delete_topics(names, operation_timeout=timeout, request_timeout=timeout)
    for future in futures.values():
        try:
            future.result()
        except KafkaException:
            pass


def consume_values(
    bootstrap: str,
    topic: str,
    *,
    isolation: str,
    expect: int,
    timeout: float = 30.0,
    settle: float = 1.0,
) -> list[bytes]:
    """Every value of `topic` from the beginning, as a consumer with `isolation.level=isolation`
    sees it.

    Reads until `expect` values arrived and every partition reported its end, then `settle`
    seconds more, so a reader that sees *more* than expected is caught too. Stops at `timeout`
    with whatever it has (the caller's assertion then shows the difference). Partitions are
    assigned, not subscribed: no consumer group, nothing committed.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique_name("reader"),
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10.0).topics[topic]
        partitions = sorted(metadata.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        values: list[bytes] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while time.monotonic() < deadline:
            if settle_until is not None and time.monotonic() >= settle_until:
                break
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition())
                    if len(values) >= expect and at_end >= set(partitions) and settle_until is None:
                        settle_until = time.monotonic() + settle
                    continue
                raise KafkaException(error)
            at_end.discard(message.partition())
            value = message.value()
            values.append(value if value is not None else b"")
        return values
    finally:
        consumer.close()


class TopicFactory:
    """Creates uniquely named topics for one test and deletes them after it."""

    def __init__(self, admin: AdminClient, prefix: str) -> None:
        self._admin = admin
        self._prefix = prefix
        self.created: list[str] = []

    def __call__(
        self,
        partitions: int = 1,
        *,
        name: str | None = None,
        replication_factor: int = -1,
        config: Mapping[str, str] | None = None,
    ) -> str:
        """Create a topic and return its name: `<test name>[-<name>]-<random hex>`."""
        topic = unique_name(f"{self._prefix}-{name}" if name else self._prefix)
        create_topic(
            self._admin,
            topic,
            partitions,
            replication_factor=replication_factor,
            config=config,
        )
        self.created.append(topic)
        return topic

    def delete_all(self) -> None:
        delete_topics(self._admin, self.created)
        self.created.clear()


FAST_FAILOVER = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}
"""Notice a killed broker in 3 s instead of 9 s, so its partitions move to live leaders soon."""
