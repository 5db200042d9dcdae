"""A store whose keys expire ``ttl`` after their last write: ``app.store(name, ttl=...)``.

Each value is written with the wall-clock time of its write in front (8 bytes, big-endian), in
RocksDB and in the changelog alike, so a restored store knows every key's age. Reads treat an
expired key as absent at once; a sweep, run by the task's timer and so inside a commit cycle,
deletes expired keys through the write buffer: their tombstones reach the changelog in the same
transaction, and neither a restore nor compaction can bring them back.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from streamflow.serde.base import Serde
from streamflow.state.chunked_values import MANIFEST, RESERVED, chunk_key
from streamflow.state.store import KeyValueStore

_WRITTEN = struct.Struct(">q")
_ABSENT: Any = object()
_EXPIRED: Any = object()
SWEEP_BATCH = 10_000
"""Keys deleted per sweep at most: a cycle's transaction stays small; the rest waits a sweep."""


class TtlStore(KeyValueStore):
    def __init__(
        self,
        name: str,
        path: Path,
        key_serde: Serde,
        value_serde: Serde,
        ttl_ms: int,
        clock: Callable[[], int],
    ) -> None:
        self.ttl_ms, self._clock = ttl_ms, clock
        serialize, deserialize = value_serde.serialize, value_serde.deserialize
        pack, unpack = _WRITTEN.pack, _WRITTEN.unpack_from

        def write(value: Any) -> bytes:
            return pack(clock()) + serialize(value)

        def read(data: bytes) -> Any:
            if unpack(data)[0] + ttl_ms <= clock():
                return _EXPIRED
            return deserialize(data[8:])

        super().__init__(name, path, key_serde, Serde(f"ttl<{value_serde.name}>", write, read))

    def get_encoded(self, kb: bytes, default: Any = None) -> Any:
        value = super().get_encoded(kb, _ABSENT)
        return default if value is _ABSENT or value is _EXPIRED else value

    def items(self, start: Any = None, end: Any = None) -> Iterator[tuple[Any, Any]]:
        return ((k, v) for k, v in super().items(start, end) if v is not _EXPIRED)

    def prefix_items(self, prefix: bytes) -> Iterator[tuple[Any, Any]]:
        return ((k, v) for k, v in super().prefix_items(prefix) if v is not _EXPIRED)

    def committed_get(self, kb: bytes, default: Any = None) -> Any:
        value = super().committed_get(kb, _ABSENT)
        return default if value is _ABSENT or value is _EXPIRED else value

    def committed_items(
        self, prefix: bytes = b"", after: bytes | None = None
    ) -> Iterator[tuple[Any, Any]]:
        return ((k, v) for k, v in super().committed_items(prefix, after) if v is not _EXPIRED)

    # -- the sweep -----------------------------------------------------------------------------

    def sweep_interval_ms(self) -> int:
        """A quarter of the ttl, between a second and a minute: expired keys do not linger
        long, and a short ttl does not mean a scan every cycle."""
        return max(1_000, min(60_000, self.ttl_ms // 4))

    def sweep(self) -> int:
        """Delete up to `SWEEP_BATCH` expired committed keys (tombstones in this cycle);
        returns how many."""
        cutoff = self._clock() - self.ttl_ms
        unpack = _WRITTEN.unpack_from
        pending = self.buffer.encoded
        expired: list[bytes] = []
        it = self._db.iter()
        it.seek_to_first()
        while it.valid() and len(expired) < SWEEP_BATCH:
            kb = it.key()
            if kb >= RESERVED:
                break  # streamflow's own keys (chunks of big values): not entries
            raw = it.value()
            if self._chunked and raw.startswith(MANIFEST):
                raw = self._db.get(chunk_key(kb, 0)) or raw  # the write time leads chunk 0
            if kb not in pending and unpack(raw)[0] <= cutoff:
                expired.append(kb)
            it.next()
        for kb in expired:
            self.delete_encoded(kb)
        return len(expired)
