"""Reading the dead-letter topic and replaying its records, each exactly once.

A dead letter (``operate/dead_letter_format.py``) is the original record plus headers that
say where it was read (topic, partition, offset), what failed and why. After the bug is fixed,
``replay`` writes each chosen record back to the partition it came from, with its own headers,
so the fixed code processes it as if it had just arrived.

Exactly once per dead letter, even when a replay is interrupted or run twice: every replayed
record leaves a marker (key ``partition:offset`` of the dead letter) on the compacted topic
``<app>.dlq-replayed``, written in the *same transaction* as the replayed record. A replay first
fences any other replay of the app (one transactional id per app), then reads the markers
(read_committed) and skips what they name. So a crash mid-replay leaves either both the record
and its marker or neither, and the next run replays exactly what is missing. Filters
(``--error``, ``--since``) only choose among dead letters not yet replayed.

A dead letter that was cut to fit the topic (``streamflow.truncated``) is not the original
record and is never replayed; nor is one whose source is unknown. Both are reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streamflow.cluster.record_chunks import ChunkReader, is_chunk, split_value
from streamflow.cluster.topic_reader import MissingTopic, read_to_end, reader_consumer
from streamflow.errors import StreamflowError
from streamflow.kafka.record_size import max_record_bytes
from streamflow.operate.dead_letter_format import (
    HEADER_ANSWERED,
    HEADER_ERROR,
    HEADER_ERROR_TYPE,
    HEADER_OFFSET,
    HEADER_PARTITION,
    HEADER_PROCESSOR,
    HEADER_STAGE,
    HEADER_TOPIC,
    HEADER_TRACE,
    HEADER_TRUNCATED,
)

log = logging.getLogger(__name__)

OWN_HEADER_PREFIX = "streamflow."
HEADER_REPLAYED_FROM = "streamflow.replayed.from"
"""On a replayed record: the dead letter it came from (``<dlq>:<partition>:<offset>``), so a
record that fails again says it was replayed before."""
TRANSACTION_BATCH = 500
"""Replayed records per transaction: a long replay commits as it goes."""


class DeadLetterError(StreamflowError):
    """A dead-letter command cannot do what it was asked (the message says why)."""


@dataclass
class DeadLetter:
    """One record of the dead-letter topic, its headers read."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode(errors="replace") if value is not None else None
        return None

    @property
    def id(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def error_type(self) -> str:
        return self.header(HEADER_ERROR_TYPE) or "?"

    @property
    def error(self) -> str:
        return self.header(HEADER_ERROR) or ""

    @property
    def source(self) -> tuple[str, int, int] | None:
        topic, partition, offset = (
            self.header(HEADER_TOPIC),
            self.header(HEADER_PARTITION),
            self.header(HEADER_OFFSET),
        )
        if not topic or partition is None or offset is None:
            return None
        return topic, int(partition), int(offset)

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        """The record's own headers, without what the dead-lettering added."""
        return [(k, v) for k, v in self.headers if not k.startswith(OWN_HEADER_PREFIX)]

    @property
    def replayable(self) -> str | None:
        """None if it can be replayed; else why not."""
        if self.header(HEADER_TRUNCATED) is not None:
            return "cut to fit the dead-letter topic (not the original record)"
        if self.header(HEADER_ANSWERED) is not None:
            return (
                "a step command its workflow was already answered for (a non-retryable "
                "failure): replaying it would run the step for a call the workflow gave up "
                "on; start the workflow again instead"
            )
        if self.source is None:
            return "no source topic in its headers"
        return None

    def to_json(self) -> dict[str, Any]:
        source = self.source
        return {
            "id": self.id,
            "timestamp_ms": self.timestamp_ms,
            "error_type": self.error_type,
            "error": self.error,
            "stage": self.header(HEADER_STAGE),
            "processor": self.header(HEADER_PROCESSOR),
            "truncated": self.header(HEADER_TRUNCATED),
            "source": None
            if source is None
            else {"topic": source[0], "partition": source[1], "offset": source[2]},
            "trace": self.header(HEADER_TRACE),
            "replayed_from": self.header(HEADER_REPLAYED_FROM),
            "key": _text(self.key),
            "value": _text(self.value),
            "headers": {k: _text(v) for k, v in self.original_headers},
        }


def _text(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return "0x" + data.hex()


def parse_since(text: str | None) -> int | None:
    """``--since``: epoch milliseconds, an ISO 8601 time, or an age like ``30m``, ``2h``, ``7d``."""
    if text is None:
        return None
    units = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    if text[-1:] in units and text[:-1].isdigit():
        return int(time.time() * 1000) - int(text[:-1]) * units[text[-1]]
    if text.isdigit():
        return int(text)
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DeadLetterError(
            f"--since {text!r}: give epoch milliseconds, an ISO 8601 time or an age (30m, 2h, 7d)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


class DeadLetters:
    """The dead-letter topic of one app, read and replayed with the app's client settings."""

    def __init__(self, app_name: str, bootstrap: str, client: dict[str, Any]) -> None:
        self.app = app_name
        self.topic = f"{app_name}.dlq"
        self.marker_topic = f"{app_name}.dlq-replayed"
        self.bootstrap = bootstrap
        self.client = {"bootstrap.servers": bootstrap, **client}
        self.record_bytes = max_record_bytes(self.client)
        """Replayed records larger than this go as chunks, as their first sender sent them."""

    # -- reading ---------------------------------------------------------------------------------

    def _consumer(self) -> Consumer:
        return reader_consumer(self.client, f"{self.app}.dlq-reader")

    def _read(
        self, topic: str, since_ms: int | None = None, missing_ok: bool = False
    ) -> Iterator[Any]:
        try:
            yield from read_to_end(
                self.client, topic, f"{self.app}.dlq-reader", since_ms, missing_ok
            )
        except MissingTopic:
            raise DeadLetterError(
                f"topic {topic!r} does not exist on {self.bootstrap}: has app {self.app!r} "
                "run there?"
            ) from None

    def list(
        self, error_type: str | None = None, since_ms: int | None = None
    ) -> Iterator[DeadLetter]:
        """The dead letters in order; one larger than a record, written as chunks, is joined
        and listed once, under the id of its last chunk."""
        chunks = ChunkReader()
        for msg in self._read(self.topic, since_ms):
            complete, value = chunks.whole(msg.value())
            if not complete:
                continue
            letter = DeadLetter(
                msg.partition(),
                msg.offset(),
                msg.timestamp()[1],
                msg.key(),
                value,
                list(msg.headers() or []),
            )
            if error_type is None or _matches(letter.error_type, error_type):
                yield letter

    def get(self, letter_id: str) -> DeadLetter:
        try:
            partition_text, offset_text = letter_id.split(":")
            partition, offset = int(partition_text), int(offset_text)
        except ValueError:
            raise DeadLetterError(
                f"dead letter {letter_id!r}: give PARTITION:OFFSET as `dlq list` prints it"
            ) from None
        consumer = self._consumer()
        try:
            consumer.assign([TopicPartition(self.topic, partition, offset)])
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                msg: Any = consumer.poll(1.0)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        break
                    raise KafkaException(msg.error())
                if msg.offset() != offset:
                    break  # compacted away or a transaction marker: not there
                letter = DeadLetter(
                    partition,
                    offset,
                    msg.timestamp()[1],
                    msg.key(),
                    msg.value(),
                    list(msg.headers() or []),
                )
                if is_chunk(letter.value):  # a big one: joined from its chunks by the list
                    return next((d for d in self.list() if d.id == letter_id), letter)
                return letter
        finally:
            consumer.close()
        raise DeadLetterError(f"no dead letter {letter_id} in {self.topic!r}")

    def replayed(self) -> dict[str, dict[str, Any]]:
        """The markers: dead-letter id → where and when it was replayed."""
        marks: dict[str, dict[str, Any]] = {}
        for msg in self._read(self.marker_topic, missing_ok=True):
            key = (msg.key() or b"").decode()
            if msg.value() is None:
                marks.pop(key, None)
            else:
                marks[key] = orjson.loads(msg.value())
        return marks

    # -- replaying -------------------------------------------------------------------------------

    def _ensure_marker_topic(self) -> None:
        admin = AdminClient(self.client)
        spec = NewTopic(
            self.marker_topic,
            num_partitions=1,
            replication_factor=-1,
            config={"cleanup.policy": "compact"},
        )
        for future in admin.create_topics([spec]).values():
            try:
                future.result(30)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise

    def replay(
        self,
        error_type: str | None = None,
        since_ms: int | None = None,
        dry_run: bool = False,
        progress: Callable[[DeadLetter, str], None] | None = None,
    ) -> dict[str, int]:
        """Replay the chosen dead letters not replayed yet; returns counts by outcome
        (``replayed``, ``already``, ``skipped``)."""
        counts = {"replayed": 0, "already": 0, "skipped": 0}
        producer: Producer | None = None
        if not dry_run:
            self._ensure_marker_topic()
            producer = Producer(
                {
                    **self.client,
                    "transactional.id": f"{self.app}.dlq-replay",
                    "enable.idempotence": True,
                    "acks": "all",
                }
            )
            producer.init_transactions(60)  # fences any other replay of this app first
        marks = self.replayed()  # read after fencing: what a fenced replay committed is here
        batch = 0
        try:
            for letter in self.list(error_type, since_ms):
                if letter.id in marks:
                    counts["already"] += 1
                    continue
                why_not = letter.replayable
                if why_not is not None:
                    counts["skipped"] += 1
                    if progress:
                        progress(letter, f"skipped: {why_not}")
                    continue
                counts["replayed"] += 1
                if progress:
                    progress(letter, "would replay" if dry_run else "replayed")
                if producer is None:
                    continue
                if batch == 0:
                    producer.begin_transaction()
                self._send(producer, letter)
                batch += 1
                if batch >= TRANSACTION_BATCH:
                    producer.commit_transaction(60)
                    batch = 0
            if producer is not None and batch:
                producer.commit_transaction(60)
                batch = 0
        finally:
            if producer is not None and batch:
                producer.abort_transaction(30)
        return counts

    def _send(self, producer: Producer, letter: DeadLetter) -> None:
        source = letter.source
        assert source is not None
        topic, partition, _offset = source
        headers: list[Any] = [
            *letter.original_headers,
            (HEADER_REPLAYED_FROM, f"{self.topic}:{letter.id}".encode()),
        ]
        values = [letter.value]
        size = len(letter.value or b"") + len(letter.key or b"")
        if letter.value is not None and size > self.record_bytes:  # a big one: as chunks
            values = list(split_value(letter.key, letter.value, self.record_bytes))
        for i, value in enumerate(values):
            last = i == len(values) - 1
            if partition >= 0:
                producer.produce(
                    topic, value, letter.key, partition, headers=headers if last else None
                )
            else:
                producer.produce(topic, value, letter.key, headers=headers if last else None)
        mark = {"topic": topic, "partition": partition, "at_ms": int(time.time() * 1000)}
        producer.produce(self.marker_topic, orjson.dumps(mark), letter.id.encode(), 0)
        producer.poll(0)


def _matches(actual: str, wanted: str) -> bool:
    """``--error ValueError`` matches ``ValueError`` and ``module.ValueError``."""
    return actual == wanted or actual.rsplit(".", 1)[-1] == wanted
