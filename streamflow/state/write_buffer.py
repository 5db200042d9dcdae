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

import bisect
from typing import Any

TOMBSTONE: Any = object()
"""Marks a key deleted in this cycle; encoded as a changelog tombstone (value ``None``)."""


class WriteBuffer:
    """Uncommitted writes of one store of one task, keyed by the encoded key."""

    __slots__ = ("encoded", "entries", "keys")

    def __init__(self) -> None:
        self.entries: dict[bytes, Any] = {}
        self.encoded: dict[bytes, bytes | None] = {}
        self.keys: list[bytes] | None = None
        """The written keys in order, for range scans: made by the cycle's first scan and kept
        sorted from then on (so a store that is never scanned never sorts, and one scanned per
        record pays a bisection per new key, not a sort of the cycle's writes per scan)."""

    def __len__(self) -> int:
        return len(self.encoded)

    def clear(self) -> None:
        """Drop every write: what an aborted transaction requires."""
        self.entries.clear()
        self.encoded.clear()
        self.keys = None

    def added(self, kb: bytes) -> None:
        """``kb`` was written for the first time in this cycle."""
        if self.keys is not None:
            bisect.insort(self.keys, kb)

    def removed(self, kb: bytes) -> None:
        """``kb``'s only write of this cycle was undone."""
        keys = self.keys
        if keys is not None:
            i = bisect.bisect_left(keys, kb)
            if i < len(keys) and keys[i] == kb:
                del keys[i]

    def sorted_keys(self, lo: bytes | None, hi: bytes | None) -> list[bytes]:
        """The written keys in ``[lo, hi)`` (None: open), in order; a copy, so writes made
        while a scan walks it do not move it."""
        keys = self.keys
        if keys is None:
            keys = self.keys = sorted(self.encoded)
        i = 0 if lo is None else bisect.bisect_left(keys, lo)
        j = len(keys) if hi is None else bisect.bisect_left(keys, hi)
        return keys[i:j]

    def forget_decoded(self) -> None:
        """Keep the writes, drop their decoded objects: later reads decode ``encoded``."""
        self.entries.clear()
