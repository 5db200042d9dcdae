"""Reading a topic from a point to its end as of now: what the operating commands share.

``streamflow dlq``, ``streamflow state`` (from a changelog, when no worker runs) and ``replay``
read a topic once, outside any consumer group: a consumer with a throwaway group id that never
commits, ``read_committed`` so an aborted transaction's records never show, and partition-EOF
to know each partition's end (offsets alone are off by the transaction markers).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition


class MissingTopic(LookupError):
    """The topic does not exist."""


def reader_consumer(client: Mapping[str, Any], purpose: str) -> Consumer:
    return Consumer(
        {
            **client,
            "group.id": f"{purpose}-{uuid.uuid4().hex[:8]}",  # required; never joins or commits
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )


def read_to_end(
    client: Mapping[str, Any],
    topic: str,
    purpose: str,
    since_ms: int | None = None,
    missing_ok: bool = False,
    partitions: list[int] | None = None,
) -> Iterator[Any]:
    """Every committed record of ``topic`` (of ``partitions``, default all) from ``since_ms``
    (default: the beginning) up to the end it has now. Raises ``MissingTopic`` unless
    ``missing_ok``."""
    consumer = reader_consumer(client, purpose)
    try:
        meta = consumer.list_topics(topic, timeout=15).topics.get(topic)
        if meta is not None and meta.error is not None:
            if meta.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaException(meta.error)  # a refusal or a broker away: not "missing"
            meta = None
        if meta is None:
            if missing_ok:
                return
            raise MissingTopic(topic)
        chosen = sorted(meta.partitions) if partitions is None else partitions
        parts = [TopicPartition(topic, p, 0) for p in chosen]
        if since_ms is not None:
            for tp in parts:
                tp.offset = since_ms
            parts = consumer.offsets_for_times(parts, timeout=15)
        ends: dict[int, int] = {}
        for tp in parts:
            _low, high = consumer.get_watermark_offsets(tp, timeout=15)
            if 0 <= tp.offset < high:
                ends[tp.partition] = high
        if not ends:
            return
        consumer.assign([tp for tp in parts if tp.partition in ends])
        while ends:
            batch: list[Any] = consumer.consume(1000, 1.0)
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ends.pop(msg.partition(), None)
                        continue
                    raise KafkaException(err)
                end = ends.get(msg.partition())
                if end is None:
                    continue
                yield msg
                if msg.offset() + 1 >= end:
                    ends.pop(msg.partition(), None)
    finally:
        consumer.close()
