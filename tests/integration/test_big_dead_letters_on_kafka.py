"""A dead letter over one record: in the dead-letter topic as chunks (as a task writes it),
listed and shown whole by ``streamflow dlq``, and replayed whole: as chunks again, to the
partition it came from, joined by whoever reads the source topic."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from streamflow.cluster.record_chunks import ChunkReader, split_value
from streamflow.kafka.record_size import DEFAULT_MAX_RECORD_BYTES
from streamflow.operate.dead_letter_format import (
    HEADER_ERROR,
    HEADER_ERROR_TYPE,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_TOPIC,
)
from streamflow.operate.dead_letters import DeadLetters
from tests.engine_helpers import create_topic, read_topic

pytestmark = pytest.mark.kafka


def test_a_big_dead_letter_is_listed_shown_and_replayed_whole(kafka_bootstrap: str) -> None:
    app = f"bigdlq-{uuid.uuid4().hex[:8]}"
    source = f"{app}.w.events"
    create_topic(kafka_bootstrap, f"{app}.dlq", 1)
    create_topic(kafka_bootstrap, source, 2)
    big = b'{"type":"signal","id":"i-1","name":"doc","payload":"' + b"p" * 2_500_000 + b'"}'

    def letter_headers(offset: int) -> list[tuple[str, bytes]]:
        return [
            (HEADER_ERROR, b"ValueMismatch: the payload of signal 'doc' does not fit"),
            (HEADER_ERROR_TYPE, b"ValueMismatch"),
            (HEADER_TOPIC, source.encode()),
            (HEADER_PARTITION, b"1"),
            (HEADER_OFFSET, str(offset).encode()),
        ]

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    chunks = split_value(b"i-1", big, DEFAULT_MAX_RECORD_BYTES)
    for i, chunk in enumerate(chunks):
        last = i == len(chunks) - 1
        producer.produce(f"{app}.dlq", chunk, b"i-1", headers=letter_headers(7) if last else None)
    producer.produce(f"{app}.dlq", b'{"small": 1}', b"i-2", headers=letter_headers(8))
    assert producer.flush(30) == 0

    letters = DeadLetters(app, kafka_bootstrap, {})
    listed = list(letters.list())
    assert [(d.key, len(d.value or b"")) for d in listed] == [(b"i-1", len(big)), (b"i-2", 12)]
    assert listed[0].id == f"0:{len(chunks) - 1}" and listed[0].value == big
    assert letters.get(listed[0].id).value == big  # `dlq show`: whole too
    assert listed[0].replayable is None

    assert letters.replay() == {"replayed": 2, "already": 0, "skipped": 0}
    replayed = read_topic(kafka_bootstrap, source)
    assert {m.partition() for m in replayed} == {1}
    reader = ChunkReader()
    wholes = [value for complete, value in map(reader.whole, (m.value() for m in replayed))]
    assert [v for v in wholes if v is not None] == [big, b'{"small": 1}']
    assert all(len(m.value()) <= DEFAULT_MAX_RECORD_BYTES for m in replayed)
    assert letters.replay() == {"replayed": 0, "already": 2, "skipped": 0}
