"""The broker under the test suite really runs transactions: the ground exactly-once stands on.

If these fail, every exactly-once test above them would fail for the wrong reason, so they run
first in a broken setup's log and say what is wrong with the broker, not with streamflow.
"""

from __future__ import annotations

from collections import Counter

import pytest
from confluent_kafka import Producer

from tests.kafka_helpers import TopicFactory, consume_values, unique_name

pytestmark = pytest.mark.kafka


def _transactional_producer(bootstrap: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": unique_name("test-transactions"),
            "linger.ms": 5,
        }
    )
    producer.init_transactions(30)
    return producer


def test_read_committed_sees_only_committed_batch(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    topic = new_topic(partitions=3)
    committed = [f"committed-{i}".encode() for i in range(60)]
    aborted = [f"aborted-{i}".encode() for i in range(60)]
    producer = _transactional_producer(kafka_bootstrap)

    producer.begin_transaction()
    for i, value in enumerate(committed):
        producer.produce(topic, key=str(i).encode(), value=value)
    producer.commit_transaction(30)

    producer.begin_transaction()
    for i, value in enumerate(aborted):
        producer.produce(topic, key=str(i).encode(), value=value)
    # flush() first so the aborted records are really in the log (not just dropped client-side):
    # the read_uncommitted control below must see them.
    assert producer.flush(30) == 0
    producer.abort_transaction(30)

    seen = consume_values(kafka_bootstrap, topic, isolation="read_committed", expect=len(committed))
    assert Counter(seen) == Counter(committed)

    # Control: the aborted batch is in the log, so the check above could have failed.
    everything = consume_values(
        kafka_bootstrap, topic, isolation="read_uncommitted", expect=len(committed) + len(aborted)
    )
    assert Counter(everything) == Counter(committed + aborted)


def test_records_after_an_aborted_batch_become_visible_once_committed(
    kafka_bootstrap: str, new_topic: TopicFactory
) -> None:
    # One partition, so the aborted batch sits between two committed ones in the same log: the
    # last stable offset must move past the abort marker, or read_committed readers stall.
    topic = new_topic(partitions=1)
    producer = _transactional_producer(kafka_bootstrap)
    batches: dict[str, list[bytes]] = {}
    for name, commit in (("first", True), ("aborted", False), ("second", True)):
        batches[name] = [f"{name}-{i}".encode() for i in range(20)]
        producer.begin_transaction()
        for value in batches[name]:
            producer.produce(topic, value=value)
        if commit:
            producer.commit_transaction(30)
        else:
            assert producer.flush(30) == 0
            producer.abort_transaction(30)

    seen = consume_values(kafka_bootstrap, topic, isolation="read_committed", expect=40)
    assert seen == batches["first"] + batches["second"]
