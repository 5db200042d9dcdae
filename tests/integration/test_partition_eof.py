"""The worker asks for partition-EOF events (tasks reading several topics wait for a lagging
one until it is at its end, learnt again after a resume or a seek) and commits the consumer's
positions. librdkafka 2.2 to 2.11
advanced the position by 2 after an EOF in batch consumption (librdkafka #4844, fixed by
#5213): a commit after one would skip the partition's next record. This checks the installed
one on a real broker, the way the worker consumes."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from tests.engine_helpers import create_topic

pytestmark = pytest.mark.kafka


def _drain(consumer: Consumer, until_eof: bool) -> list[object]:
    seen: list[object] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for m in consumer.consume(100, 0.2):
            eof = m.error() is not None and m.error().code() == KafkaError._PARTITION_EOF
            seen.append("EOF" if eof else m.offset())
        if (until_eof and "EOF" in seen) or (not until_eof and any(s != "EOF" for s in seen)):
            return seen
    raise AssertionError(f"consumed only {seen}")


def test_the_position_after_a_partition_eof_is_the_next_record(kafka_bootstrap: str) -> None:
    topic = f"eof-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for _ in range(5):
        producer.produce(topic, b"x")
    producer.flush(30)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": topic,
            "enable.partition.eof": True,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        assert _drain(consumer, until_eof=True) == [0, 1, 2, 3, 4, "EOF"]
        assert consumer.position([TopicPartition(topic, 0)])[0].offset == 5
        producer.produce(topic, b"y")
        producer.flush(30)
        assert _drain(consumer, until_eof=False)[0] == 5
        assert consumer.position([TopicPartition(topic, 0)])[0].offset == 6
        _drain(consumer, until_eof=True)
        # A task that starts resumes its paused partitions: one already at its end must say so
        # again, or a task reading several topics would wait for it (runtime/aligned_input.py).
        consumer.pause([TopicPartition(topic, 0)])
        consumer.resume([TopicPartition(topic, 0)])
        assert _drain(consumer, until_eof=True) == ["EOF"]
        consumer.seek(TopicPartition(topic, 0, 6))  # so must a rewound one
        assert _drain(consumer, until_eof=True) == ["EOF"]
    finally:
        consumer.close()
