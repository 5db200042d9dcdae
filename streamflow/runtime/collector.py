"""Where a task's output records go: Kafka in a worker, in-memory lists in the test driver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from streamflow.cluster.record_chunks import send_chunks
from streamflow.kafka.record_size import DEFAULT_MAX_RECORD_BYTES, check_record_size
from streamflow.topology.nodes import Headers, Send

DeliveryCallback = Callable[[int], None]


class RecordCollector(Protocol):
    """Collectors refuse a record whose key + value exceeds their ``max_record_bytes`` with
    ``RecordTooLarge``, at ``send``: the worker's and the driver's alike, so a test through
    the driver fails where production would."""

    @property
    def send(self) -> Send:
        """Queue one record for the open transaction (or the next flush, at-least-once)."""
        ...

    def send_tracked(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int,
        delivered: DeliveryCallback,
    ) -> None:
        """Like ``send``; ``delivered(offset)`` runs once the record has its offset."""


class KafkaCollector:
    """Sends through confluent-kafka's producer; a full local queue is waited out, not failed."""

    def __init__(
        self,
        producer: object,
        limit: int = DEFAULT_MAX_RECORD_BYTES,
        chunked: frozenset[str] = frozenset(),
    ) -> None:
        self.max_record_bytes = limit
        """The largest key + value of one record (``max_record_bytes`` of the producers'
        settings)."""
        self.chunked = chunked
        """Topics whose larger records are sent as chunks (``record_chunks``); on any other
        topic a larger record is refused."""
        self.use(producer)

    def use(self, producer: object) -> None:
        """Send through ``producer`` from now on: the commit cycle's producer of this cycle."""
        self._producer = producer
        self._produce = producer.produce  # type: ignore[attr-defined]

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: int | None,
        headers: Headers,
    ) -> None:
        if (0 if value is None else len(value)) + (0 if key is None else len(key)) > (
            self.max_record_bytes
        ):  # check_record_size, inline: this is the hot path of every record sent
            if topic in self.chunked and value is not None:
                send_chunks(
                    self.send,
                    topic,
                    key,
                    value,
                    partition,
                    timestamp,
                    headers,
                    self.max_record_bytes,
                )
                return
            check_record_size(topic, key, value, self.max_record_bytes)
        # topic, value, key and partition positionally (faster to parse); the rest by keyword,
        # because produce()'s fifth and sixth positional slots are both delivery callbacks.
        try:
            if headers is None:
                self._produce(
                    topic,
                    value,
                    key,
                    -1 if partition is None else partition,
                    timestamp=timestamp or 0,
                )
            else:
                self._produce(
                    topic,
                    value,
                    key,
                    -1 if partition is None else partition,
                    timestamp=timestamp or 0,
                    headers=headers,
                )
        except BufferError:
            self._send_when_room(topic, key, value, partition, timestamp, headers)

    def _send_when_room(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: int | None,
        headers: Headers,
    ) -> None:
        while True:
            try:
                self._produce(
                    topic,
                    value,
                    key,
                    -1 if partition is None else partition,
                    timestamp=timestamp or 0,
                    headers=headers,
                )
                return
            except BufferError:
                # The local queue is full: serve delivery reports until librdkafka has room.
                self._producer.poll(0.05)  # type: ignore[attr-defined]

    def send_tracked(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int,
        delivered: DeliveryCallback,
    ) -> None:
        def on_delivery(err: object, msg: object) -> None:
            if err is None:
                delivered(msg.offset())  # type: ignore[attr-defined]

        while True:
            try:
                self._produce(topic, value, key, partition, on_delivery=on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)  # type: ignore[attr-defined]
