"""A keyed state store: RocksDB (rocksdict, raw mode) behind a transactional write buffer.

One ``KeyValueStore`` per store per task, under ``state_dir/<app>/<task>/<store>``. Reads see
the write buffer first, then RocksDB. A write is encoded when it is made, so a value that
cannot be serialized fails its record (which goes to the dead-letter topic), never the commit.
``prepare_commit`` hands the buffer's bytes to the caller as changelog records (sent inside the
transaction); ``apply`` writes the same bytes to RocksDB in one ``WriteBatch`` together with
the changelog checkpoint, and is called only after the transaction committed.

Committed values are cached as bytes and decoded on each read: a value the store hands out is
never an object it keeps, so code that mutates what it read and then raises cannot change
committed state (docs/architecture.md, "Promises").

A value larger than one changelog record is written as chunks in the store's reserved key
range, with a manifest under its key (``chunked_values``); reads join them, scans of user keys
end where the reserved range begins.

Size: ``KeyValueStore`` is one object over one RocksDB handle, and each group of its methods
(reads and writes, scans, committed reads, watches, the commit, restore) reads or changes the
same private fields: the write buffer, the committed-bytes cache, the ``_chunked`` flag and the
handle itself, which ``wipe`` reopens and ``close`` drops under the close guard. Split into
classes, each group would reach into the others' fields, and the per-record path
(``get_encoded``, ``put_encoded``) would pay a call through another object. What needs none of
those fields is apart already: the buffer (``write_buffer``) and value chunking
(``chunked_values``).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rocksdict import Options, Rdict, WriteBatch

from streamflow.errors import SerializationError, StoreClosed, StoreError
from streamflow.serde.base import Serde
from streamflow.state import chunked_values
from streamflow.state.chunked_values import CHUNK_PREFIX, MANIFEST, RESERVED, ChunkMismatch
from streamflow.state.write_buffer import TOMBSTONE, WriteBuffer

log = logging.getLogger(__name__)

_META_CF = "streamflow_meta"
CACHE_ENTRIES = 10_000
"""Committed values (bytes) kept per store (cleared wholesale when it would grow past this).
A task has several stores and a worker many tasks: at 100,000 a stream-stream join over
400,000 records reached 3.5 GB of RSS (10,000: 1.0 GB, and faster), while a keyed count's hot
keys still fit."""
NO_LIMIT = 1 << 62
"""``max_value_bytes`` of a store no task writes through (restores, queries)."""
ONE_RECORD = 1 << 62
"""``max_record_bytes`` of a store that never chunks (no changelog producer to fit)."""
_CHECKPOINT_KEY = b"changelog_next_offset"
_CHECKPOINT_TIME_KEY = b"changelog_checkpoint_ms"

ChangelogRecord = tuple[bytes, bytes | None]
UndoLog = list[Any]
"""Flat triples (store, encoded key, what the write buffer held for it before the write), one
per write: flat, so a write allocates no tuple."""


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
        # Bytes of recently committed writes: a hot key is read from memory, not RocksDB. Only
        # committed bytes enter it and bytes cannot be mutated, so an abort keeps it.
        self._cache: dict[bytes, bytes] = {}
        self._pending: list[ChangelogRecord] = []
        self.max_record_bytes = ONE_RECORD
        """The largest key + value one changelog record may have (the task sets it from its
        producer's settings): a bigger value is written as chunks at the commit."""
        self.max_value_bytes = NO_LIMIT
        """The largest key + value a write may have (the app's ``max_payload_bytes`` plus
        room for an envelope). Checked at the write, so an oversize value fails the record
        that made it; at the commit it would fail the commit of every owner of the partition."""
        self._oversize = False
        """A write of this cycle is over ``max_record_bytes``: the commit splits it."""
        self.undo: UndoLog = []
        """Where each write notes what it replaced; the task shares one log among its stores
        and rolls a failed record's writes back with it (a savepoint is the log's length)."""
        self._closed = False
        self._close_guard = threading.Lock()
        """Held by a committed read from another thread (a query) and by ``close``: a read
        never touches a closed RocksDB handle. The worker's own reads and writes skip it."""
        self._watchers: dict[bytes, list[threading.Event]] = {}
        """Keys someone waits to see committed (``watch``): woken by ``apply`` and ``close``."""
        self._db = self._open(path)
        self._meta = self._db.get_column_family_handle(_META_CF)
        self._meta_cf = self._db.get_column_family(_META_CF)
        self._chunked = self._holds_chunks()
        """RocksDB may hold chunked values: reads look for manifests, commits for chunks to
        tombstone. False for most stores, so they pay nothing for big values."""
        self._pending_chunks: list[ChangelogRecord] = []

    # -- opening -------------------------------------------------------------------------------

    def _open(self, path: Path) -> Rdict:
        path.mkdir(parents=True, exist_ok=True)
        opts = _options()
        try:
            return Rdict(str(path), opts, column_families={_META_CF: _options()})
        except Exception as exc:  # rocksdict raises plain Exception on corruption
            if "Corruption" not in str(exc):
                raise StoreError(
                    f"store {self.name!r}: cannot open RocksDB at {path}: {exc}"
                ) from exc
            log.warning(
                "store %s at %s cannot be opened (%s); rebuilding from changelog",
                self.name,
                path,
                exc,
            )
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True, exist_ok=True)
            try:
                return Rdict(str(path), _options(), column_families={_META_CF: _options()})
            except Exception as exc2:
                raise StoreError(
                    f"store {self.name!r}: cannot open RocksDB at {path}: {exc2}"
                ) from exc2

    def close(self) -> None:
        # rocksdict releases the RocksDB LOCK only when every handle is gone, so drop them all:
        # a task that moves away and back to this worker must be able to reopen its store.
        with self._close_guard:
            self._closed = True
            self._meta_cf.close()
            self._db.close()
            del self._meta, self._meta_cf, self._db
        self._wake(list(self._watchers))  # their answer is elsewhere now: let them ask again

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reads and writes (the processor API) ---------------------------------------------------

    def get(self, key: Any, default: Any = None) -> Any:
        """The value of ``key``: this cycle's write if there is one, else the committed value."""
        return self.get_encoded(self._key_serialize(key), default)

    @property
    def key_serializer(self) -> Any:
        return self._key_serialize

    def get_encoded(self, kb: bytes, default: Any = None) -> Any:
        """``get`` for a key already encoded: aggregations encode once for the read and write."""
        buffer = self.buffer
        value = buffer.entries.get(kb, _MISSING)
        if value is not _MISSING:
            return default if value is TOMBSTONE else value
        raw = buffer.encoded.get(kb, _MISSING)
        if raw is _MISSING:
            raw = self._cache.get(kb, _MISSING)
            if raw is _MISSING:
                raw = self._db.get(kb)
            if raw is None:
                return default
            if self._chunked and raw.startswith(MANIFEST):
                raw = self._join(kb, raw)
            return self._value_deserialize(raw)
        if raw is None:
            return default
        value = buffer.entries[kb] = self._value_deserialize(raw)
        return value

    def put(self, key: Any, value: Any) -> None:
        self.put_encoded(self._key_serialize(key), value, key)

    def put_encoded(self, kb: bytes, value: Any, key: Any = None) -> None:
        """``put`` for a key already encoded. Raises ``SerializationError`` naming the store
        when the value cannot be encoded (the write is not made)."""
        if value is None:
            raise StoreError(f"store {self.name!r}: None is not a value; use delete({key!r})")
        try:
            vb = self._value_serialize(value)
        except Exception as exc:  # noqa: BLE001 - which serde and what it said
            raise SerializationError(
                f"store {self.name!r}: the value for key {key if key is not None else kb!r} "
                f"cannot be serialized: {type(exc).__name__}: {exc}"
            ) from None
        if len(kb) + len(vb) > self.max_record_bytes:
            if len(kb) + len(vb) > self.max_value_bytes:
                raise self._too_large(kb, vb, key)
            self._oversize = True  # written as chunks at the commit
        buffer = self.buffer
        encoded = buffer.encoded
        before = encoded.get(kb, _MISSING)
        self.undo += (self, kb, before)
        encoded[kb] = vb
        buffer.entries[kb] = value
        if before is _MISSING and buffer.keys is not None:
            buffer.added(kb)

    def _too_large(self, kb: bytes, vb: bytes, key: Any) -> SerializationError:
        shown = repr(key if key is not None else kb)
        shown = shown if len(shown) <= 120 else f"{shown[:100]}... ({len(kb)} bytes)"
        return SerializationError(
            f"store {self.name!r}: the value for key {shown} is {len(kb) + len(vb)} bytes "
            f"encoded (key + value), over the limit of {self.max_value_bytes} bytes a stored "
            "value may have (App(max_payload_bytes=...) plus room for its envelope); keep "
            "less per key (split the value over several keys, or bound what it accumulates)"
        )

    def delete(self, key: Any) -> None:
        self.delete_encoded(self._key_serialize(key))

    def delete_encoded(self, kb: bytes) -> None:
        buffer = self.buffer
        encoded = buffer.encoded
        before = encoded.get(kb, _MISSING)
        self.undo += (self, kb, before)
        encoded[kb] = None
        buffer.entries[kb] = TOMBSTONE
        if before is _MISSING and buffer.keys is not None:
            buffer.added(kb)

    def put_bytes(self, kb: bytes, vb: bytes) -> None:
        """Write bytes as they are, no serde: streamflow's own keys in the reserved range
        (parts of a chunked record being reassembled). Read back with ``get_bytes``."""
        if len(kb) + len(vb) > self.max_record_bytes:
            self._oversize = True
        buffer = self.buffer
        before = buffer.encoded.get(kb, _MISSING)
        self.undo += (self, kb, before)
        buffer.encoded[kb] = vb
        buffer.entries.pop(kb, None)
        if before is _MISSING and buffer.keys is not None:
            buffer.added(kb)

    def get_bytes(self, kb: bytes) -> bytes | None:
        """The bytes ``put_bytes`` wrote under ``kb`` (this cycle's, else committed)."""
        raw: Any = self.buffer.encoded.get(kb, _MISSING)
        if raw is _MISSING:
            raw = self._cache.get(kb)
            if raw is None:
                raw = self._db.get(kb)
        if raw is None:
            return None
        if self._chunked and raw.startswith(MANIFEST):
            return self._join(kb, raw)
        return bytes(raw)

    def reserved_keys(self, prefix: bytes) -> list[bytes]:
        """Committed keys of the reserved range starting with ``prefix`` (sweeps of parts)."""
        it = self._db.iter()
        it.seek(prefix)
        found = []
        while it.valid():
            kb = it.key()
            if not kb.startswith(prefix):
                break
            found.append(kb)
            it.next()
        return found

    def undo_write(self, kb: bytes, before: Any) -> None:
        """Put back what the buffer held for ``kb`` before a write (``_MISSING``: nothing):
        how a task rolls a failed record's writes back (``Task.rollback``)."""
        if before is _MISSING:
            if self.buffer.encoded.pop(kb, _MISSING) is not _MISSING:
                self.buffer.removed(kb)
        else:
            self.buffer.encoded[kb] = before
        self.buffer.entries.pop(kb, None)

    def forget_decoded(self) -> None:
        """A record failed: drop decoded objects it may have mutated in place; the writes of
        the cycle stay, as bytes."""
        self.buffer.forget_decoded()

    def __contains__(self, key: Any) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def items(self, start: Any = None, end: Any = None) -> Iterator[tuple[Any, Any]]:
        """Key order scan of ``[start, end)`` in encoded-key byte order, buffer merged in."""
        lo = None if start is None else self._key_serialize(start)
        hi = RESERVED if end is None else min(self._key_serialize(end), RESERVED)
        return self._scan(lo, hi, hi.__le__)

    def prefix_items(self, prefix: bytes) -> Iterator[tuple[Any, Any]]:
        """Every entry whose *encoded* key starts with ``prefix`` (windows, composite keys)."""
        hi = _after_prefix(prefix)
        hi = RESERVED if hi is None else min(hi, RESERVED)
        return self._scan(prefix, hi, lambda kb: kb >= RESERVED or not kb.startswith(prefix))

    def range_encoded(self, lo: bytes, hi: bytes) -> Iterator[tuple[bytes, Any]]:
        """``items`` over encoded keys ``[lo, hi)``, yielding the encoded keys: composite keys
        (joins, windows) are built and taken apart as bytes, never through the key serde."""
        return self._scan(lo, hi, hi.__le__, _same)

    def _scan(
        self, lo: bytes | None, hi: bytes | None, past_end: Any, kd: Any = None
    ) -> Iterator[tuple[Any, Any]]:
        # Merge the sorted buffer keys into the RocksDB iteration so a scan sees this cycle's
        # writes exactly as a later read would.
        pending = self.buffer.sorted_keys(lo, hi)
        it = self._db.iter()
        if lo is None:
            it.seek_to_first()
        else:
            it.seek(lo)
        i = 0
        kd = kd or self._key_deserialize
        vd, buf = self._value_deserialize, self.buffer.encoded
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
                if buf[buf_key] is not None:
                    yield kd(buf_key), self.get_encoded(buf_key)
                i += 1
                if db_key == buf_key:
                    it.next()
            else:
                assert db_key is not None  # both None returned above
                raw = it.value()
                if self._chunked and raw.startswith(MANIFEST):
                    raw = self._join(db_key, raw)
                yield kd(db_key), vd(raw)
                it.next()

    # -- committed reads (interactive queries) ---------------------------------------------------

    def committed_get(self, kb: bytes, default: Any = None) -> Any:
        """The committed value of an encoded key, never this cycle's write: what a query
        outside the transaction may see (``operate/state_query``). Safe from any thread:
        RocksDB reads run beside the worker's writes; a closed store raises ``StoreClosed``."""
        with self._close_guard:
            if self._closed:
                raise StoreClosed(f"store {self.name!r} was closed (its task moved)")
            raw = self._cache.get(kb)
            if raw is None:
                raw = self._db.get(kb)
            if raw is not None and self._chunked and raw.startswith(MANIFEST):
                raw = self._join(kb, raw)
        return default if raw is None else self._value_deserialize(raw)

    def committed_prefix(
        self, prefix: bytes, limit: int, after: bytes | None = None
    ) -> list[tuple[Any, Any]]:
        """``committed_items`` read whole, at most ``limit`` entries: the thread-safe form (an
        iterator could outlive the store's close)."""
        with self._close_guard:
            if self._closed:
                raise StoreClosed(f"store {self.name!r} was closed (its task moved)")
            found = []
            for item in self.committed_items(prefix, after):
                found.append(item)
                if len(found) >= limit:
                    break
            return found

    # -- watching keys (long polls) --------------------------------------------------------------

    def watch(self, kb: bytes) -> threading.Event:
        """An event set when a commit writes ``kb`` (or the store closes): how a query waits
        for a change without polling. Call ``unwatch`` with it when done waiting."""
        event = threading.Event()
        self._watchers.setdefault(kb, []).append(event)
        if self._closed:
            event.set()
        return event

    def unwatch(self, kb: bytes, event: threading.Event) -> None:
        waiting = self._watchers.get(kb)
        if waiting is not None:
            try:
                waiting.remove(event)
            except ValueError:
                pass
            if not waiting:
                self._watchers.pop(kb, None)

    def _wake(self, keys: list[bytes]) -> None:
        watchers = self._watchers
        for kb in keys:
            for event in tuple(watchers.get(kb, ())):
                event.set()

    def committed_items(
        self, prefix: bytes = b"", after: bytes | None = None
    ) -> Iterator[tuple[Any, Any]]:
        """Committed entries whose encoded key starts with ``prefix`` (and is greater than
        ``after``, a page's cursor), in key order."""
        it = self._db.iter()
        start = prefix if after is None or after < prefix else after
        it.seek(start) if start else it.seek_to_first()
        if after is not None and it.valid() and it.key() == after:
            it.next()
        kd, vd = self._key_deserialize, self._value_deserialize
        while it.valid():
            kb = it.key()
            if (prefix and not kb.startswith(prefix)) or kb >= RESERVED:
                return
            raw = it.value()
            if self._chunked and raw.startswith(MANIFEST):
                raw = self._join(kb, raw)
            yield kd(kb), vd(raw)
            it.next()

    # -- the commit protocol ---------------------------------------------------------------------

    def prepare_commit(self) -> list[ChangelogRecord]:
        """This cycle's writes as changelog records (encoded already, when they were made):
        values over a record as chunks and a manifest, chunks first."""
        self._pending = list(self.buffer.encoded.items())
        if not self._oversize and not self._chunked:
            return self._pending
        self._pending, self._pending_chunks = self._split_big(self._pending)
        return self._pending_chunks + self._pending

    def _split_big(
        self, records: list[ChangelogRecord]
    ) -> tuple[list[ChangelogRecord], list[ChangelogRecord]]:
        """(the records to write under their own keys, the chunk records and the tombstones
        of chunks a value no longer has)."""
        plain: list[ChangelogRecord] = []
        chunks: list[ChangelogRecord] = []
        limit = self.max_record_bytes
        for kb, vb in records:
            old = chunked_values.chunk_count(self._committed_raw(kb)) if self._chunked else 0
            if vb is not None and len(kb) + len(vb) > limit:
                pieces, manifest = chunked_values.split(kb, vb, limit)
                chunks += pieces
                chunks += chunked_values.stale_chunks(kb, old, len(pieces))
                plain.append((kb, manifest))
            else:
                chunks += chunked_values.stale_chunks(kb, old, 0)
                plain.append((kb, vb))
        return plain, chunks

    def _committed_raw(self, kb: bytes) -> bytes | None:
        raw = self._cache.get(kb)
        return self._db.get(kb) if raw is None else raw

    def _join(self, kb: bytes, manifest: bytes) -> bytes:
        """The whole value behind a manifest. A read from another thread may race a commit
        that rewrites the chunks: it reads the manifest again and retries."""
        for _ in range(3):
            try:
                return chunked_values.join(kb, manifest, self._db.get)
            except ChunkMismatch as exc:
                error = exc
                again = self._db.get(kb)
                if again is None or not again.startswith(MANIFEST):
                    raise StoreError(
                        f"store {self.name!r}: the value of key {kb[:100]!r} changed while "
                        "it was read; read it again"
                    ) from None
                manifest = again
        raise StoreError(
            f"store {self.name!r}: the chunked value of key {kb[:100]!r} cannot be read: "
            f"{error}; rebuild the store from its changelog (streamflow state rebuild)"
        )

    def _holds_chunks(self) -> bool:
        it = self._db.iter()
        it.seek(CHUNK_PREFIX)
        return it.valid() and it.key().startswith(CHUNK_PREFIX)

    def apply(self, checkpoint: int | None) -> None:
        """Write the committed cycle to RocksDB atomically with its changelog checkpoint.

        Called only after ``commit_transaction()`` returned: if we crash before this line the
        changelog already holds these writes and restore replays them, so RocksDB never holds
        aborted data. ``checkpoint`` may lag the true changelog end: replaying full values from
        an earlier offset is idempotent.
        """
        self._oversize = False
        if not self._pending and checkpoint is None:
            self.buffer.clear()
            return
        batch = WriteBatch(raw_mode=True)
        if self._pending_chunks:
            for kb, vb in self._pending_chunks:  # never cached: each may be a megabyte
                if vb is None:
                    batch.delete(kb)
                else:
                    batch.put(kb, vb)
                    self._chunked = True  # before a manifest enters the cache
            self._pending_chunks = []
        cache = self._cache
        if len(cache) + len(self._pending) > CACHE_ENTRIES:
            cache.clear()
        for kb, vb in self._pending:
            if vb is None:
                batch.delete(kb)
                cache.pop(kb, None)
            else:
                batch.put(kb, vb)
                cache[kb] = vb
        if checkpoint is not None:
            self._put_checkpoint(batch, checkpoint)
        self._db.write(batch)
        if self._watchers:  # one check per commit: nobody waits in the common case
            self._wake([kb for kb, _ in self._pending])
        self._pending = []
        self.buffer.clear()
        self.undo.clear()

    def abort(self) -> None:
        """Forget the open cycle: its writes never happened (the cache holds committed bytes
        only, so it stays)."""
        self._pending = []
        self._pending_chunks = []
        self._oversize = False
        self.buffer.clear()
        self.undo.clear()

    # -- restore ---------------------------------------------------------------------------------

    def checkpoint(self) -> int | None:
        """Next changelog offset to replay from, or None when the store has never checkpointed."""
        raw = self._meta_cf.get(_CHECKPOINT_KEY)
        return None if raw is None else int.from_bytes(raw, "big")

    def _put_checkpoint(self, batch: WriteBatch, next_offset: int) -> None:
        batch.put(_CHECKPOINT_KEY, next_offset.to_bytes(8, "big"), self._meta)
        batch.put(_CHECKPOINT_TIME_KEY, int(time.time() * 1000).to_bytes(8, "big"), self._meta)

    def has_data(self) -> bool:
        """True when RocksDB holds at least one entry (checkpoints are kept apart)."""
        it = self._db.iter()
        it.seek_to_first()
        return it.valid()

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
        self._chunked = False

    def restore_write(self, batch: WriteBatch, next_offset: int) -> None:
        """Write a restore slice the caller filled with raw changelog bytes, with its
        checkpoint, in one atomic write (the restore's hot path: ``runtime/restore``)."""
        self._put_checkpoint(batch, next_offset)
        self._db.write(batch)
        self._cache.clear()
        self._chunked = self._chunked or self._holds_chunks()

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
        self._chunked = self._chunked or self._holds_chunks()


_MISSING: Any = object()


def _same(kb: bytes) -> bytes:
    return kb


def _after_prefix(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: there is none,
    the prefix being all 0xff bytes)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])
