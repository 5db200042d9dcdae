"""A keyed state store: RocksDB (rocksdict, raw mode) behind a transactional write buffer.

One ``KeyValueStore`` per store per task, under ``state_dir/<app>/<task>/<store>``. Reads see
the write buffer first, then RocksDB. ``prepare_commit`` encodes the buffer once and hands the
changelog records to the caller (who sends them inside the transaction); ``apply`` writes the
same bytes to RocksDB in one ``WriteBatch`` together with the changelog checkpoint, and is
called only after the transaction committed.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict, WriteBatch

from streamflow.errors import StoreError
from streamflow.serde.base import Serde
from streamflow.state.write_buffer import TOMBSTONE, WriteBuffer

log = logging.getLogger(__name__)

_META_CF = "streamflow_meta"
CACHE_ENTRIES = 100_000
"""Decoded committed values kept per store (cleared wholesale when it would grow past this)."""
_CHECKPOINT_KEY = b"changelog_next_offset"
_CHECKPOINT_TIME_KEY = b"changelog_checkpoint_ms"

ChangelogRecord = tuple[bytes, bytes | None]


def _options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    return opts


class KeyValueStore:
    """Keyed state of one task, with read-your-writes inside the open transaction."""

    def __init__(self, name: str, path: Path, key_serde: Serde, value_serde: Serde) -> None:
        self.name = name
        self.path = path
        self._key_serialize = key_serde.serialize
        self._key_deserialize = key_serde.deserialize
        self._value_serialize = value_serde.serialize
        self._value_deserialize = value_serde.deserialize
        self.buffer = WriteBuffer()
        # Decoded values of recently committed writes: a hot key is decoded from RocksDB once,
        # not once per cycle. Only committed values enter it; an abort clears it, because a
        # value mutated in place during the aborted cycle may sit in it.
        self._cache: dict[bytes, Any] = {}
        self._pending: list[ChangelogRecord] = []
        self._db = self._open(path)
        self._meta = self._db.get_column_family_handle(_META_CF)
        self._meta_cf = self._db.get_column_family(_META_CF)

    # -- opening -------------------------------------------------------------------------------

    def _open(self, path: Path) -> Rdict:
        path.mkdir(parents=True, exist_ok=True)
        opts = _options()
        try:
            return Rdict(str(path), opts, column_families={_META_CF: _options()})
        except Exception as exc:  # rocksdict raises plain Exception on corruption
            if "Corruption" not in str(exc):
                raise StoreError(f"store {self.name!r}: cannot open RocksDB at {path}: {exc}") from exc
            log.warning("store %s at %s cannot be opened (%s); rebuilding from changelog",
                        self.name, path, exc)
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True, exist_ok=True)
            try:
                return Rdict(str(path), _options(), column_families={_META_CF: _options()})
            except Exception as exc2:
                raise StoreError(f"store {self.name!r}: cannot open RocksDB at {path}: {exc2}") from exc2

    def close(self) -> None:
        # rocksdict releases the RocksDB LOCK only when every handle is gone, so drop them all:
        # a task that moves away and back to this worker must be able to reopen its store.
        self._meta_cf.close()
        self._db.close()
        del self._meta, self._meta_cf, self._db

    # -- reads and writes (the processor API) ---------------------------------------------------

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``: this cycle's write if there is one, else the committed value."""
        return self.get_encoded(self._key_serialize(key), default)

    @property
    def key_serializer(self) -> Any:
        return self._key_serialize

    @property
    def value_serializer(self) -> Any:
        return self._value_serialize

    @property
    def cached(self) -> dict[bytes, Any]:
        """The committed-value cache (same dict for the store's life: ``clear``ed, never replaced)."""
        return self._cache

    def get_encoded(self, kb: bytes, default: Any = None) -> Any:
        """``get`` for a key already encoded: aggregations encode once for the read and write."""
        value = self.buffer.entries.get(kb, _MISSING)
        if value is not _MISSING:
            return default if value is TOMBSTONE else value
        value = self._cache.get(kb, _MISSING)
        if value is not _MISSING:
            return value
        raw = self._db.get(kb)
        return default if raw is None else self._value_deserialize(raw)

    def put(self, key: Any, value: Any) -> None:
        if value is None:
            raise StoreError(f"store {self.name!r}: None is not a value; use delete({key!r})")
        self.buffer.entries[self._key_serialize(key)] = value

    def delete(self, key: Any) -> None:
        self.buffer.entries[self._key_serialize(key)] = TOMBSTONE

    def __contains__(self, key: Any) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def items(self, start: Any = None, end: Any = None) -> Iterator[tuple[Any, Any]]:
        """Key order scan of ``[start, end)`` in encoded-key byte order, buffer merged in."""
        lo = None if start is None else self._key_serialize(start)
        hi = None if end is None else self._key_serialize(end)
        return self._scan(lo, lambda kb: hi is not None and kb >= hi)

    def prefix_items(self, prefix: bytes) -> Iterator[tuple[Any, Any]]:
        """Every entry whose *encoded* key starts with ``prefix`` (windows, composite keys)."""
        return self._scan(prefix, lambda kb: not kb.startswith(prefix))

    def _scan(self, lo: bytes | None, past_end: Any) -> Iterator[tuple[Any, Any]]:
        # Merge the sorted buffer keys into the RocksDB iteration so a scan sees this cycle's
        # writes exactly as a later read would.
        pending = sorted(k for k in self.buffer.entries if lo is None or k >= lo)
        it = self._db.iter()
        if lo is None:
            it.seek_to_first()
        else:
            it.seek(lo)
        i = 0
        kd, vd, buf = self._key_deserialize, self._value_deserialize, self.buffer.entries
        while True:
            db_key = it.key() if it.valid() else None
            if db_key is not None and past_end(db_key):
                db_key = None
            buf_key = pending[i] if i < len(pending) else None
            if buf_key is not None and past_end(buf_key):
                buf_key = None
            if db_key is None and buf_key is None:
                return
            if buf_key is not None and (db_key is None or buf_key <= db_key):
                value = buf[buf_key]
                if value is not TOMBSTONE:
                    yield kd(buf_key), value
                i += 1
                if db_key == buf_key:
                    it.next()
            else:
                yield kd(db_key), vd(it.value())
                it.next()

    # -- the commit protocol ---------------------------------------------------------------------

    def prepare_commit(self) -> list[ChangelogRecord]:
        """Encode this cycle's writes once; the caller sends them to the changelog in the txn."""
        serialize = self._value_serialize
        self._pending = [
            (kb, None if v is TOMBSTONE else serialize(v)) for kb, v in self.buffer.entries.items()
        ]
        return self._pending

    def apply(self, checkpoint: int | None) -> None:
        """Write the committed cycle to RocksDB atomically with its changelog checkpoint.

        Called only after ``commit_transaction()`` returned: if we crash before this line the
        changelog already holds these writes and restore replays them, so RocksDB never holds
        aborted data. ``checkpoint`` may lag the true changelog end: replaying full values from
        an earlier offset is idempotent.
        """
        if not self._pending and checkpoint is None:
            self.buffer.clear()
            return
        batch = WriteBatch(raw_mode=True)
        for kb, vb in self._pending:
            if vb is None:
                batch.delete(kb)
            else:
                batch.put(kb, vb)
        if checkpoint is not None:
            self._put_checkpoint(batch, checkpoint)
        self._db.write(batch)
        cache = self._cache
        if len(cache) + len(self.buffer.entries) > CACHE_ENTRIES:
            cache.clear()
        for kb, value in self.buffer.entries.items():
            if value is TOMBSTONE:
                cache.pop(kb, None)
            else:
                cache[kb] = value
        self._pending = []
        self.buffer.clear()

    def abort(self) -> None:
        """Forget the open cycle: its writes never happened."""
        self._pending = []
        self.buffer.clear()
        self._cache.clear()

    # -- restore ---------------------------------------------------------------------------------

    def checkpoint(self) -> int | None:
        """Next changelog offset to replay from, or None when the store has never checkpointed."""
        raw = self._meta_cf.get(_CHECKPOINT_KEY)
        return None if raw is None else int.from_bytes(raw, "big")

    def _put_checkpoint(self, batch: WriteBatch, next_offset: int) -> None:
        batch.put(_CHECKPOINT_KEY, next_offset.to_bytes(8, "big"), self._meta)
        batch.put(_CHECKPOINT_TIME_KEY, int(time.time() * 1000).to_bytes(8, "big"), self._meta)

    def checkpoint_age_ms(self) -> int | None:
        """How long ago the checkpoint was written (None: never)."""
        raw = self._meta_cf.get(_CHECKPOINT_TIME_KEY)
        return None if raw is None else int(time.time() * 1000) - int.from_bytes(raw, "big")

    def wipe(self) -> None:
        """Drop everything local; the caller restores from the start of the changelog."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.buffer.clear()
        self._cache.clear()
        self._db = self._open(self.path)
        self._meta = self._db.get_column_family_handle(_META_CF)
        self._meta_cf = self._db.get_column_family(_META_CF)

    def restore_batch(self, records: list[ChangelogRecord], next_offset: int) -> None:
        """Apply already-committed changelog records straight to RocksDB (restore path)."""
        batch = WriteBatch(raw_mode=True)
        for kb, vb in records:
            if vb is None:
                batch.delete(kb)
            else:
                batch.put(kb, vb)
        self._put_checkpoint(batch, next_offset)
        self._db.write(batch)
        self._cache.clear()



_MISSING: Any = object()
