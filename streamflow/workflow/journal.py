"""An instance's journal: a header plus one store entry per call, so journals have no size cap.

Keys in the ``<workflow>-instances`` store:
  ``<id>\\x00``               the header (status, pinned version, input, result, signal inbox)
  ``<id>\\x01<seq:010d>``     one entry per call the workflow made (step, sleep, signal, ...)

One changelog record per changed entry keeps every record far below Kafka's message size limit,
however long an instance runs (``continue_as_new`` exists for endless loops, not for size).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

HEADER = "\x00"
ENTRY = "\x01"
COMPENSATION_BASE = 1_000_000_000
"""Compensation steps get sequence numbers from here, apart from the workflow's own calls."""

RUNNING, COMPLETED, FAILED = "running", "completed", "failed"
COMPENSATING, COMPENSATED, CANCELLED = "compensating", "compensated", "cancelled"
CANCELLING, SUSPENDED = "cancelling", "suspended"
InstanceStatus = Literal[
    "running",
    "suspended",
    "cancelling",
    "compensating",
    "completed",
    "failed",
    "compensated",
    "cancelled",
]
"""What ``InstanceView.status`` says and what ``list(status=...)`` takes."""
TERMINAL = frozenset({COMPLETED, FAILED, COMPENSATED, CANCELLED})
STATUSES = (RUNNING, SUSPENDED, CANCELLING, COMPENSATING, COMPLETED, FAILED, COMPENSATED, CANCELLED)
"""Every status an instance can report: ``suspended`` waits for fixed code (or an operator),
``cancelling`` unwinds the workflow function after a cancel, ``compensating`` runs the saga's
undo steps; the last four are final."""
assert get_args(InstanceStatus) == STATUSES  # one list, in one order


def header_key(instance_id: str) -> str:
    return instance_id + HEADER


def entry_key(instance_id: str, seq: int) -> str:
    return f"{instance_id}{ENTRY}{seq:010d}"


@dataclass
class Journal:
    """The in-memory view of one instance; ``save`` writes back only what changed."""

    id: str
    header: dict[str, Any]
    entries: dict[int, dict[str, Any]] = field(default_factory=dict)
    dirty: set[int] = field(default_factory=set)
    header_dirty: bool = False
    saved_status: str | None = None
    """The status the store holds (None: the instance is new): a save that changes it is a
    transition (metrics)."""

    @classmethod
    def load(cls, store: Any, instance_id: str) -> Journal | None:
        header = store.get(header_key(instance_id))
        if header is None:
            return None
        journal = cls(instance_id, header, saved_status=header.get("status"))
        prefix = (instance_id + ENTRY).encode()
        for _, entry in store.prefix_items(prefix):
            journal.entries[entry["seq"]] = entry
        return journal

    def save(self, store: Any) -> None:
        """Write what changed. The store encodes each write at once, so a later transition
        that changes these dicts in place and raises cannot reach the committed bytes (the
        orchestrator then drops the journal, the task the store's decoded view)."""
        if self.header_dirty:
            store.put(header_key(self.id), self.header)
            self.header_dirty = False
        for seq in self.dirty:
            store.put(entry_key(self.id, seq), self.entries[seq])
        self.dirty.clear()

    def set(self, **changes: Any) -> None:
        self.header.update(changes)
        self.header_dirty = True

    def put_entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        self.entries[entry["seq"]] = entry
        self.dirty.add(entry["seq"])
        return entry

    def touch(self, seq: int) -> None:
        self.dirty.add(seq)

    @property
    def status(self) -> str:
        status: str = self.header["status"]
        return status

    @property
    def cancel_requested(self) -> bool:
        return bool(self.header.get("cancel_requested"))

    def in_flight(self) -> list[dict[str, Any]]:
        """Step calls (the workflow's own and compensations) that still wait for an attempt's
        answer (not those waiting on a retry timer): an instance reports no final status while
        any is left, so nothing changes an entity after it ended."""
        return [
            e
            for e in self.entries.values()
            if e["kind"] == "step" and e["status"] == "pending" and e.get("timer_due") is None
        ]

    def compensations(self) -> list[dict[str, Any]]:
        """Registered compensations, in registration order."""
        return [
            e
            for s, e in sorted(self.entries.items())
            if e["kind"] == "compensate" and s < COMPENSATION_BASE
        ]
