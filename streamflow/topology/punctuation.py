"""``app.every(timedelta(minutes=1), fn, stores=["totals"])``: user code on a schedule.

The schedule runs on the wall clock (the default), or on stream time (``on="stream_time"``): the
largest event time the task has seen, so a replay or a backfill of last month fires exactly as
the live run did, once per interval of event time, aligned to the epoch. Its stream time is saved
with each commit (a small store of its own), so a restarted task neither fires an interval again
nor skips one.

A punctuation runs in every task that owns its stores, inside the commit cycle like the records
of that task: what it writes to the stores and sends to topics commits in the same transaction,
exactly once. It is a processor with no input; the graph places it by its stores (the sub-topology
that owns them), and each task builds it as a timer.

A punctuation that raises is rolled back (its store writes undone) and dead-lettered with the
reason, as a record that failed would be; the schedule goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamflow.topology.nodes import Node, ProcessorRuntime, Push
from streamflow.topology.specs import StoreSpec, TopicSpec
from streamflow.topology.windows import NO_TIME, StreamTimeState

log = logging.getLogger(__name__)


class PunctuationContext:
    """What a punctuation may do: read and write its stores, send records to topics."""

    __slots__ = ("_allowed", "_rt", "_topics", "now_ms")

    def __init__(
        self, rt: ProcessorRuntime, allowed: set[str], topics: dict[str, TopicSpec], now_ms: int
    ) -> None:
        self._rt, self._allowed, self._topics = rt, allowed, topics
        self.now_ms = now_ms
        """The time of this run: the wall clock, or the stream-time point of the schedule it
        fires for (what ``send`` stamps records with)."""

    @property
    def partition(self) -> int:
        return self._rt.partition

    def store(self, name: str) -> Any:
        if name not in self._allowed:
            raise KeyError(
                f"store {name!r} is not connected to this punctuation; pass stores=[{name!r}]"
            )
        return self._rt.store(name)

    def send(self, topic: str, key: Any, value: Any) -> None:
        """Write a record to a declared topic (its serdes), timestamped now."""
        spec = self._topics.get(topic)
        if spec is None:
            raise KeyError(f"topic {topic!r} is not declared; call app.topic({topic!r}) first")
        self._rt.send(
            topic,
            None if key is None else spec.key_serde.serialize(key),
            None if value is None else spec.value_serde.serialize(value),
            None,
            self.now_ms,
            None,
        )


@dataclass(eq=False, kw_only=True)
class PunctuationNode(Node):
    interval_ms: int
    fn: Callable[[PunctuationContext], None]
    store_specs: list[StoreSpec]
    topics: dict[str, TopicSpec]
    time_store: StoreSpec | None = None
    """Stream-time schedules: where each task's stream time is saved (None: wall clock)."""
    kind: str = field(default="punctuation", init=False)
    standalone: bool = field(default=True, init=False)
    """Built by each task of its sub-topology on its own: no stream feeds it."""

    def detail(self) -> str:
        names = ", ".join(s.name for s in self.store_specs)
        clock = "wall clock" if self.time_store is None else "stream time"
        return f"every {self.interval_ms} ms ({clock}), stores {names}"

    def stores(self) -> list[StoreSpec]:
        extra = [] if self.time_store is None else [self.time_store]
        return [*self.store_specs, *extra]

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        if self.time_store is None:
            self._on_wall_clock(rt)
        else:
            _StreamTimeSchedule(self, rt, self.time_store.name)
        return _ignore

    def run(self, rt: ProcessorRuntime, now_ms: int) -> None:
        """One run of ``fn``: its writes roll back and it is dead-lettered if it raises."""
        allowed = {s.name for s in self.store_specs}
        mark = rt.savepoint()
        try:
            self.fn(PunctuationContext(rt, allowed, self.topics, now_ms))
        except Exception as exc:  # noqa: BLE001 - user code: to the DLQ, the schedule goes on
            rt.rollback(mark)
            rt.dead_letter_record(
                f"punctuation:{self.name}", None, None, exc, "punctuate", self.name
            )

    def _on_wall_clock(self, rt: ProcessorRuntime) -> None:
        interval = self.interval_ms
        next_at = [rt.now_ms() + interval]

        def due(now_ms: int) -> bool:
            return now_ms >= next_at[0]

        def fire(now_ms: int) -> None:
            # The next point of the schedule after now: a late cycle neither drifts it nor
            # fires the runs it missed in a burst.
            next_at[0] += ((now_ms - next_at[0]) // interval + 1) * interval
            self.run(rt, now_ms)

        rt.schedule(due, fire)


class _StreamTimeSchedule(StreamTimeState):
    """A stream-time schedule in one task: fires when stream time reaches the next multiple of
    the interval after the stream time it fired at (or began with); once per jump, however many
    intervals the jump spans, stamped with the last point it passed."""

    def __init__(self, node: PunctuationNode, rt: ProcessorRuntime, time_store: str) -> None:
        super().__init__(rt, time_store)
        self.node, self.rt = node, rt
        self.next_at = 0
        rt.on_record_time(self.observe)

    def observe(self, event_time: int) -> None:
        if not self.loaded:
            self.load_time()
            if self.stream_time == NO_TIME:
                self.stream_time = event_time  # the first record: the schedule starts here
            self.next_at = self._after(self.stream_time)
        if event_time <= self.stream_time:
            return
        self.stream_time = event_time
        if event_time >= self.next_at:
            point = event_time - event_time % self.node.interval_ms
            self.next_at = self._after(event_time)
            self.node.run(self.rt, point)

    def _after(self, stream_time: int) -> int:
        interval = self.node.interval_ms
        return stream_time - stream_time % interval + interval


def _ignore(key: Any, value: Any) -> None:
    """No stream reaches a punctuation."""
