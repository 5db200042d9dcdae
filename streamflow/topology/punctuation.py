"""``app.every(timedelta(minutes=1), fn, stores=["totals"])``: user code on a wall-clock schedule.

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

log = logging.getLogger(__name__)


class PunctuationContext:
    """What a punctuation may do: read and write its stores, send records to topics."""

    __slots__ = ("_allowed", "_rt", "_topics", "now_ms")

    def __init__(
        self, rt: ProcessorRuntime, allowed: set[str], topics: dict[str, TopicSpec], now_ms: int
    ) -> None:
        self._rt, self._allowed, self._topics, self.now_ms = rt, allowed, topics, now_ms

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
    kind: str = field(default="punctuation", init=False)
    standalone: bool = field(default=True, init=False)
    """Built by each task of its sub-topology on its own: no stream feeds it."""

    def detail(self) -> str:
        names = ", ".join(s.name for s in self.store_specs)
        return f"every {self.interval_ms} ms (wall clock), stores {names}"

    def stores(self) -> list[StoreSpec]:
        return list(self.store_specs)

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        allowed = {s.name for s in self.store_specs}
        interval, fn = self.interval_ms, self.fn
        next_at = [rt.now_ms() + interval]

        def due(now_ms: int) -> bool:
            return now_ms >= next_at[0]

        def fire(now_ms: int) -> None:
            # The next point of the schedule after now: a late cycle neither drifts it nor
            # fires the runs it missed in a burst.
            next_at[0] += ((now_ms - next_at[0]) // interval + 1) * interval
            mark = rt.savepoint()
            try:
                fn(PunctuationContext(rt, allowed, self.topics, now_ms))
            except Exception as exc:  # noqa: BLE001 - user code: to the DLQ, the schedule goes on
                rt.rollback(mark)
                rt.dead_letter_record(
                    f"punctuation:{self.name}", None, None, exc, "punctuate", self.name
                )

        rt.schedule(due, fire)
        return _ignore


def _ignore(key: Any, value: Any) -> None:
    """No stream reaches a punctuation."""
