"""Durable timers of one orchestrator task: sleeps, signal-wait timeouts and retry backoffs.

A timer is an entry in the task's ``<workflow>-timers`` store (so in its changelog): it survives
restarts, rebalances and months of waiting. Keys sort by due time, so the wall-clock punctuator
reads the store's head and stops at the first timer still in the future. A timer belongs to one
run of its instance; the orchestrator drops one that fires into another run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from streamflow.workflow.messages import TimerFired, record

SLEEP, SIGNAL_TIMEOUT, RETRY = "sleep", "signal_timeout", "retry"
STEP_DEADLINE, WORKFLOW_TIMEOUT = "step_deadline", "workflow_timeout"
"""A step call's ``schedule_to_close`` and an instance's ``timeout``."""
RETENTION = "retention"
"""A finished instance's retention is over: it is deleted."""

MAX_FIRED_PER_PUNCTUATION = 1000
"""Timers fired per punctuation: a backlog of due timers must not make one huge transaction."""


@record
class Timer:
    due_ms: int
    instance_id: str
    seq: int
    kind: str
    run: int | None = None

    def key(self) -> bytes:
        return timer_key(self.due_ms, self.instance_id, self.seq)

    def event(self) -> TimerFired:
        return TimerFired(self.instance_id, self.seq, self.kind, self.run)

    def value(self) -> dict[str, Any]:
        return {"id": self.instance_id, "seq": self.seq, "timer": self.kind, "run": self.run}


def timer_key(due_ms: int, instance_id: str, seq: int) -> bytes:
    """Big-endian due time first: the store's key order is the firing order."""
    return due_ms.to_bytes(8, "big") + instance_id.encode() + b"\x00" + str(seq).encode()


class TimerStore:
    """The timers of one task over its store, with the next due time cached."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._next_due: int | None = None
        self._known = False  # False: look at the store's head

    def add(self, timer: Timer) -> None:
        self._store.put(timer.key(), timer.value())
        if self._known:
            self._next_due = (
                timer.due_ms if self._next_due is None else min(self._next_due, timer.due_ms)
            )

    def delete(self, timer: Timer) -> None:
        self._store.delete(timer.key())

    def forget(self) -> None:
        """The cycle aborted: the cached next due time may belong to dropped writes."""
        self._known = False

    def due(self, now_ms: int) -> bool:
        if not self._known:
            head = next(iter(self._store.items()), None)
            self._next_due = None if head is None else int.from_bytes(head[0][:8], "big")
            self._known = True
        return self._next_due is not None and self._next_due <= now_ms

    def take_due(self, now_ms: int) -> Iterator[Timer]:
        """Due timers, oldest first, each deleted as it is taken (in the open transaction)."""
        fired: list[tuple[bytes, Timer]] = []
        for key, value in self._store.items():
            due_ms = int.from_bytes(key[:8], "big")
            if due_ms > now_ms or len(fired) >= MAX_FIRED_PER_PUNCTUATION:
                break
            fired.append(
                (
                    key,
                    Timer(due_ms, value["id"], int(value["seq"]), value["timer"], value.get("run")),
                )
            )
        self._known = False
        for key, timer in fired:
            self._store.delete(key)
            yield timer
