"""Records of a task that reads several topics, processed in timestamp order across them.

A join or a window fed by two topics decides "late" by stream time, the largest timestamp the
task has seen. The consumer fetches partitions independently: a worker that restarts behind a
backlog can get all of one topic's records before the other's, and stream time then jumps past
the other side, which would all be late. So a task with several source topics holds its records
in one queue per topic and always processes the head with the smallest timestamp: its event
time when the source extracts one (decoded once more for it), else the record's timestamp.

While a topic's queue is empty the task waits for it unless its partition is known to be at its
end: the consumer's partition-EOF event says so (under ``read_committed``, the last stable
offset, past transaction markers and aborted records, which offsets alone cannot tell). A
partition that stays behind longer than ``max_wait_s`` (a broker gone) is given up on with a
warning: the other side goes on, and what then comes late goes to the dead-letter topic.

Held records are not committed: each topic's committable offset is its first held record, so a
crash or an abort (which clears the queues: the consumer is rewound) fetches them again. A queue
past ``limit`` records asks for its partition to be paused, so memory stays bounded while the
other side catches up.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from streamflow.topology.nodes import event_time_ms
from streamflow.topology.specs import TopicSpec

log = logging.getLogger(__name__)

TimeOf = Callable[[Any], int]
"""A record's timestamp for ordering: its event time."""


class AlignedInput:
    """One task's held records, one queue per source topic."""

    __slots__ = (
        "_at_end",
        "_gave_up",
        "_limit",
        "_max_wait_s",
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
        max_wait_s: float,
        time_of: dict[str, TimeOf] | None = None,
        limit: int = 20_000,
    ) -> None:
        self.partition = partition
        self._queues: dict[str, deque[tuple[int, Any]]] = {t: deque() for t in topics}
        self._time_of = time_of or {}
        """Per topic whose source extracts event time: how (else the record's timestamp)."""
        self._at_end: set[str] = set()
        """Topics whose partition the consumer has read to its end (nothing to wait for)."""
        self._max_wait_s, self._limit = max_wait_s, limit
        self._waiting_for: str | None = None
        self._waiting_since = 0.0
        self._gave_up = False

    def add(self, msg: Any) -> None:
        topic = msg.topic()
        time_of = self._time_of.get(topic)
        self._queues[topic].append((msg.timestamp()[1] if time_of is None else time_of(msg), msg))
        self._at_end.discard(topic)

    def reached_end(self, topic: str) -> None:
        """The consumer's partition-EOF: every record of ``topic``'s partition up to its end
        has been added."""
        self._at_end.add(topic)

    @property
    def held(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def committable(self, topic: str) -> Callable[[int], int]:
        """For ``InputOffsets.hold``: commit up to the first held record of ``topic``."""
        queue = self._queues[topic]

        def offset(position: int) -> int:
            return queue[0][1].offset() if queue else position

        return offset

    def to_pause(self, paused: set[str]) -> set[str]:
        """The topics whose partitions should be paused now, given those that are: holding
        more than ``limit`` records, and until they are down to half of it."""
        return {
            t
            for t, q in self._queues.items()
            if len(q) > self._limit or (t in paused and len(q) > self._limit // 2)
        }

    def take(self, most: int = 1 << 30) -> list[Any]:
        """Up to ``most`` records that may be processed now, in timestamp order (ties: topic
        order)."""
        out: list[Any] = []
        queues = list(self._queues.values())
        waited = self._waiting_for
        if waited is not None and (self._queues[waited] or waited in self._at_end):
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
            if len(out) >= most:
                return out

    def _wait_for(self, topic: str) -> bool:
        """An empty queue while others hold records: hold them until its partition is known to
        be at its end, for at most ``max_wait_s`` until a record of it comes."""
        if topic in self._at_end or not any(self._queues.values()):
            return False
        now = time.monotonic()
        if self._waiting_for != topic:
            self._waiting_for, self._waiting_since, self._gave_up = topic, now, False
        if now - self._waiting_since < self._max_wait_s:
            return True
        if not self._gave_up:
            self._gave_up = True
            log.warning(
                "%s[%d] sent nothing for %.0f s and is not known to be at its end: going on "
                "without it (its records that then come late go to the dead-letter topic)",
                topic,
                self.partition,
                self._max_wait_s,
            )
        return False

    def clear(self) -> None:
        """The consumer was rewound (an abort): what was held is fetched again."""
        for queue in self._queues.values():
            queue.clear()
        self._at_end.clear()
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
