"""`streamflow dev kafka start --brokers 3`: the cluster the failure tests will run on.

Starts its own three brokers (about 20 s on 2 cores), so it runs only with the local jars, not
against STREAMFLOW_BOOTSTRAP or testcontainers.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import ConfigResource

from streamflow.dev import LocalKafka
from tests.kafka_helpers import (
    admin_client,
    consume_values,
    create_topic,
    unique_name,
)

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.skipif(
        bool(os.environ.get("STREAMFLOW_BOOTSTRAP"))
        or os.environ.get("STREAMFLOW_TEST_KAFKA", "local") != "local",
        reason="exercises the local-jar launcher; the session uses another Kafka",
    ),
]


def _commit(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": unique_name("rf3"), "acks": "all"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for value in values:
        producer.produce(topic, key=value, value=value)
    producer.commit_transaction(30)


def _topic_config(admin: Any, topic: str, timeout: float = 30.0) -> Any:
    """The topic's configs. A broker other than the one that answered the metadata may not
    know a new topic for a moment (metadata reaches the brokers one by one): ask again."""
    deadline = time.monotonic() + timeout
    while True:
        (future,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
        try:
            return future.result()
        except KafkaException as exc:
            if (
                exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART
                or time.monotonic() > deadline
            ):
                raise
            time.sleep(0.2)


def test_three_brokers_commit_transactions_with_min_isr_two_while_one_is_down(
    three_brokers: LocalKafka,
) -> None:
    bootstrap = three_brokers.bootstrap
    admin = admin_client(bootstrap)
    topic = unique_name("rf3")
    create_topic(admin, topic, partitions=3, replication_factor=3)

    metadata = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(len(p.replicas) == 3 for p in metadata.partitions.values())
    assert _topic_config(admin, topic)["min.insync.replicas"].value == "2"

    before = [f"before-{i}".encode() for i in range(50)]
    during = [f"during-{i}".encode() for i in range(50)]
    after = [f"after-{i}".encode() for i in range(50)]
    _commit(bootstrap, topic, before)
    three_brokers.kill_broker(2)
    assert [n.alive for n in three_brokers.status().nodes] == [True, False, True]
    _commit(bootstrap, topic, during)  # two in-sync replicas are enough
    three_brokers.restart_broker(2)
    assert three_brokers.is_running()
    _commit(bootstrap, topic, after)

    seen = consume_values(bootstrap, topic, isolation="read_committed", expect=150)
    assert Counter(seen) == Counter(before + during + after)
