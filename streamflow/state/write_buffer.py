"""The per-task write buffer that keeps uncommitted store writes out of RocksDB.

docs/architecture.md, "Commit protocol": writes made inside a Kafka transaction must not reach RocksDB until the transaction
has committed, or a crash after an abort would leave RocksDB holding state the changelog never
saw. The buffer holds decoded values (reads inside the cycle see them first, with no decode), and
is encoded once per key per cycle when the cycle commits — not once per write.
"""

from __future__ import annotations

from typing import Any

TOMBSTONE: Any = object()
"""Marks a key deleted in this cycle; encoded as a changelog tombstone (value ``None``)."""


class WriteBuffer:
    """Uncommitted writes of one store of one task, keyed by the encoded key."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[bytes, Any] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        """Drop every write: what an aborted transaction requires."""
        self.entries.clear()
