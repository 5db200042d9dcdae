"""What stands in for Kafka in the test driver: per-topic in-memory logs of records.

A ``DriverMessage`` presents a record as confluent-kafka's ``Message`` presents it to the task
code (the ``SourceMessage`` protocol), so tasks run unchanged; a ``TopicLog`` gives each record
the next offset of its partition, as a broker would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamflow.topology.nodes import Headers


@dataclass
class DriverMessage:
    """Quacks like confluent_kafka.Message for the task code."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _timestamp: int
    _headers: Headers = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def headers(self) -> Headers:
        return self._headers

    def error(self) -> None:
        return None


@dataclass
class TopicLog:
    """One topic: its records in the order they were written, and each partition's next
    offset (``records`` holds every partition's, each ``DriverMessage`` knowing its own)."""

    partitions: int
    records: list[DriverMessage] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def append(
        self, partition: int, key: bytes | None, value: bytes | None, ts: int, headers: Headers
    ) -> DriverMessage:
        while len(self.offsets) < self.partitions:
            self.offsets.append(0)
        msg = DriverMessage("", partition, self.offsets[partition], key, value, ts, headers)
        self.offsets[partition] += 1
        self.records.append(msg)
        return msg
