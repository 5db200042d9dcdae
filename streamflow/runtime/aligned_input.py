"""Records of a task that reads several topics, processed in timestamp order across them.

A join or a window fed by two topics decides "late" by stream time, the largest timestamp the
task has seen. The consumer fetches partitions independently: a worker that restarts behind a
backlog can get all of one topic's records before the other's, and stream time then jumps past
the other side, which would all be late. So a task with several source topics holds its records
in one queue per topic and always processes the head with the smallest timestamp: its event
time when the source extracts one (decoded once more for it), else the record's timestamp. While a
topic's queue is empty but its partition has records the consumer has not fetched yet (its high
watermark is ahead), the task waits for them, up to ``max_wait_s`` (Kafka Streams' task idling);
a partition that is caught up is not waited for.

Held records are not committed: each topic's committable offset is its first held record, so a
crash or an abort (which clears the queues: the consumer is rewound) fetches them again.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from streamflow.topology.nodes import event_time_ms
from streamflow.topology.specs import TopicSpec

TimeOf = Callable[[Any], int]
"""A record's timestamp for ordering: its event time."""

Lagging = Callable[[str, int, int], bool]
"""``lagging(topic, partition, next_offset)``: does the partition hold records from
``next_offset`` on that the consumer has not returned yet?"""


class AlignedInput:
    """One task's held records, one queue per source topic."""

    __slots__ = (
        "_lagging",
        "_max_wait_s",
        "_next",
        "_queues",
        "_time_of",
        "_waiting_for",
        "_waiting_since",
        "partition",
    )

    def __init__(
        self,
        topics: list[str],
        partition: int,
        lagging: Lagging,
        max_wait_s: float,
        time_of: dict[str, TimeOf] | None = None,
    ) -> None:
        self.partition = partition
        self._time_of = time_of or {}
        """Per topic whose source extracts event time: how (else the record's timestamp)."""
        self._queues: dict[str, deque[tuple[int, Any]]] = {t: deque() for t in topics}
        self._next: dict[str, int] = {}
        """Per topic, the offset after the last record added: where a lag check starts."""
        self._lagging, self._max_wait_s = lagging, max_wait_s
        self._waiting_for: str | None = None
        self._waiting_since = 0.0

    def add(self, msg: Any) -> None:
        topic = msg.topic()
        time_of = self._time_of.get(topic)
        self._queues[topic].append((msg.timestamp()[1] if time_of is None else time_of(msg), msg))
        self._next[topic] = msg.offset() + 1

    @property
    def held(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def committable(self, topic: str) -> Callable[[int], int]:
        """For ``InputOffsets.hold``: commit up to the first held record of ``topic``."""
        queue = self._queues[topic]

        def offset(position: int) -> int:
            return queue[0][1].offset() if queue else position

        return offset

    def take(self) -> list[Any]:
        """The records that may be processed now, in timestamp order (ties: topic order)."""
        out: list[Any] = []
        queues = list(self._queues.values())
        waited = self._waiting_for
        if waited is not None and self._queues[waited]:
            self._waiting_for = None  # what it waited for came
        while True:
            best = None
            for topic, queue in zip(self._queues, queues, strict=True):
                if not queue:
                    if self._wait_for(topic):
                        return out
                    continue
                if best is None or queue[0][0] < best[0][0]:
                    best = queue
            if best is None:
                return out
            out.append(best.popleft()[1])

    def _wait_for(self, topic: str) -> bool:
        """An empty queue while others hold records: hold them while its partition has records
        not fetched yet, for at most ``max_wait_s`` until one of them comes."""
        if not any(self._queues.values()):
            return False
        if not self._lagging(topic, self.partition, self._next.get(topic, -1)):
            return False
        now = time.monotonic()
        if self._waiting_for != topic:
            self._waiting_for, self._waiting_since = topic, now
        return now - self._waiting_since < self._max_wait_s

    def clear(self) -> None:
        """The consumer was rewound (an abort): what was held is fetched again."""
        for queue in self._queues.values():
            queue.clear()
        self._next.clear()
        self._waiting_for = None


def extracted_time(topic: TopicSpec, extract: Callable[[Any], Any]) -> TimeOf:
    """Order a source's records by the event time its extractor gives; a record it cannot
    decode or date keeps its Kafka timestamp (processing dead-letters it with the reason)."""
    deserialize, name = topic.value_serde.deserialize, topic.name

    def time_of(msg: Any) -> int:
        try:
            return event_time_ms(extract(deserialize(msg.value())), name)
        except Exception:  # noqa: BLE001 - the record is refused where it is processed
            return int(msg.timestamp()[1])

    return time_of
