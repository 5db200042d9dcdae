"""The per-task write buffer that keeps uncommitted store writes out of RocksDB.

docs/architecture.md, "Commit protocol": writes made inside a Kafka transaction must not reach
RocksDB until the transaction has committed, or a crash after an abort would leave RocksDB
holding state the changelog never saw.

Each write is encoded when it is made (``encoded``: the truth the cycle commits), so a value
that cannot be serialized fails the record that wrote it, not the commit. ``entries`` keeps the
decoded values too, so reads inside the cycle need no decode; it is only a view of ``encoded``
and may be dropped at any time (``forget_decoded``: after a record failed, in case its code
mutated one of those objects in place before raising).
"""

from __future__ import annotations

from typing import Any

TOMBSTONE: Any = object()
"""Marks a key deleted in this cycle; encoded as a changelog tombstone (value ``None``)."""


class WriteBuffer:
    """Uncommitted writes of one store of one task, keyed by the encoded key."""

    __slots__ = ("encoded", "entries")

    def __init__(self) -> None:
        self.entries: dict[bytes, Any] = {}
        self.encoded: dict[bytes, bytes | None] = {}

    def __len__(self) -> int:
        return len(self.encoded)

    def clear(self) -> None:
        """Drop every write: what an aborted transaction requires."""
        self.entries.clear()
        self.encoded.clear()

    def forget_decoded(self) -> None:
        """Keep the writes, drop their decoded objects: later reads decode ``encoded``."""
        self.entries.clear()
