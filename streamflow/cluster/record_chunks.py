"""Workflow records larger than the producer's limit: sent as chunks, processed whole.

A start with a 20 MB input, a step's 20 MB result or a signal carrying a document is one
logical record that the producer (``message.max.bytes``, 1 MB by default) and the broker
refuse. Its sender splits it into chunk records with the record's key, so they land on the
record's partition, in order (idempotent and transactional producers keep a partition's order,
and a worker sends all of them inside one transaction).

The receiving task keeps each chunk but the last as a *part* in one of its changelogged stores
(the reserved key range, ``state/chunked_values``), in the cycle that reads it: a chunk is then
processed like any record, its offset committed with the part, and records of other producers
between the chunks are processed as they come. The last chunk joins the parts, deletes them
and is processed as the whole record at its own offset. Nothing waits in memory and no offset
is held back, so exactly-once is the task's ordinary one (docs/architecture.md, "Big
payloads"). Parts whose last chunk never comes (a client that died mid-send) are dropped after
``PART_TIMEOUT_MS`` with a dead letter that says so.

Only streamflow's own workflow topics carry chunks: a user topic's other readers could not join
them, so a record too large for it is still refused at its send.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

from streamflow.errors import RecordTooLarge
from streamflow.state.chunked_values import PART_PREFIX
from streamflow.state.store import KeyValueStore
from streamflow.topology.nodes import Send
from streamflow.topology.specs import TopicKind

CHUNK_MAGIC = b"\x00\xffstreamflow-record-chunk\x00"
"""How a chunk's value starts: no JSON value (what workflow topics carry) begins with 0x00."""
_HEAD = struct.Struct(">16sIIQ")  # group id, index, count, whole size
HEAD_BYTES = len(CHUNK_MAGIC) + _HEAD.size
HEADROOM = 1024
"""Kept free in each chunk record for the producer's own overhead."""
PART_TIMEOUT_MS = 15 * 60 * 1000
"""Parts older than this whose last chunk has not come are dropped (dead-lettered)."""
SWEEP_EVERY_MS = 60_000

_TIME = struct.Struct(">q")


def is_chunk(value: bytes | None) -> bool:
    return value is not None and value.startswith(CHUNK_MAGIC)


def split_value(key: bytes | None, value: bytes, record_bytes: int) -> list[bytes]:
    """The chunk values of ``value``: each, with ``key``, within ``record_bytes``."""
    room = record_bytes - HEAD_BYTES - HEADROOM - (0 if key is None else len(key))
    if room < 1024:
        raise RecordTooLarge(f"a key of {len(key or b'')} bytes leaves no room for chunks")
    group = os.urandom(16)
    count = -(-len(value) // room)
    return [
        CHUNK_MAGIC + _HEAD.pack(group, i, count, len(value)) + value[i * room : (i + 1) * room]
        for i in range(count)
    ]


def chunk_head(value: bytes) -> tuple[bytes, int, int, int]:
    """(group id, index, count, whole size) of a chunk's value."""
    group, index, count, size = _HEAD.unpack_from(value, len(CHUNK_MAGIC))
    return group, index, count, size


class ChunkReader:
    """Joins chunked records for a reader of a whole topic (the dead-letter tools): chunks are
    kept in memory until their last one, which becomes the record. Only for reading a topic
    from its start to its end; a task keeps its parts in a store instead (``ChunkJoiner``)."""

    def __init__(self) -> None:
        self._parts: dict[bytes, list[bytes]] = {}

    def whole(self, value: bytes | None) -> tuple[bool, bytes | None]:
        """(complete, value): an ordinary value as it is; a chunk's record once its last
        chunk came (``(False, None)`` before, or when earlier chunks were not read)."""
        if value is None or not is_chunk(value):
            return True, value
        group, index, count, size = chunk_head(value)
        parts = self._parts.setdefault(group, [])
        if len(parts) != index:  # a chunk before this one was not read (a later start)
            self._parts.pop(group, None)
            return False, None
        parts.append(value[HEAD_BYTES:])
        if index + 1 < count:
            return False, None
        whole = b"".join(self._parts.pop(group))
        return len(whole) == size, whole if len(whole) == size else None


class ChunkError(ValueError):
    """A chunk that cannot be joined: its earlier parts are missing or do not add up."""


class JoinedMessage:
    """The whole record a last chunk completes: the chunk's topic, partition, offset, key,
    timestamp and headers, with the joined value."""

    __slots__ = ("_msg", "_value")

    def __init__(self, msg: Any, value: bytes) -> None:
        self._msg, self._value = msg, value

    def key(self) -> bytes | None:
        return self._msg.key()  # type: ignore[no-any-return]

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return self._msg.topic()  # type: ignore[no-any-return]

    def partition(self) -> int:
        return self._msg.partition()  # type: ignore[no-any-return]

    def offset(self) -> int:
        return self._msg.offset()  # type: ignore[no-any-return]

    def timestamp(self) -> tuple[int, int]:
        return self._msg.timestamp()  # type: ignore[no-any-return]

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._msg.headers()  # type: ignore[no-any-return]


def _part_key(group: bytes, index: int) -> bytes:
    return PART_PREFIX + group + index.to_bytes(4, "big")


class ChunkJoiner:
    """Joins the chunked records of one task's workflow topics, keeping parts in ``store``."""

    def __init__(self, store: KeyValueStore, now_ms: Callable[[], int]) -> None:
        self.store = store
        self.now_ms = now_ms
        self.next_sweep = now_ms() + SWEEP_EVERY_MS
        self.may_have_parts = bool(store.reserved_keys(PART_PREFIX))
        """Parts may wait for their last chunk: only then is a sweep due. A task that never
        saw a chunk has no timer firing every minute (the test driver's ``advance_time`` over
        a year would step through each one)."""
        self._stored_since_sweep = False

    def take(self, msg: Any) -> JoinedMessage | None:
        """Keep a chunk as a part (None), or join the last one with its parts. Raises
        ``ChunkError`` when the parts are not all there."""
        value: bytes = msg.value()
        group, index, count, size = _HEAD.unpack_from(value, len(CHUNK_MAGIC))
        data = value[HEAD_BYTES:]
        store = self.store
        if index + 1 < count:
            store.put_bytes(_part_key(group, index), _TIME.pack(self.now_ms()) + data)
            self.may_have_parts = self._stored_since_sweep = True
            return None
        pieces = []
        for i in range(index):
            part = store.get_bytes(_part_key(group, i))
            if part is None:
                raise ChunkError(
                    f"chunk {index + 1} of {count} of a {size}-byte record came without chunk "
                    f"{i + 1} (it was dropped after {PART_TIMEOUT_MS // 60_000} min, or the "
                    "offsets were reset between the chunks); send the record again"
                )
            pieces.append(part[_TIME.size :])
        pieces.append(data)
        whole = b"".join(pieces)
        if len(whole) != size or index + 1 != count:
            raise ChunkError(
                f"the {count} chunks of a record make {len(whole)} bytes, not the {size} "
                "their first one announced"
            )
        for i in range(index):
            store.delete_encoded(_part_key(group, i))
        return JoinedMessage(msg, whole)

    def due(self, now_ms: int) -> bool:
        return self.may_have_parts and now_ms >= self.next_sweep

    def stale_groups(self, now_ms: int) -> list[tuple[bytes, int, int]]:
        """Parts older than ``PART_TIMEOUT_MS``, deleted (in this cycle): (group id, parts,
        bytes) for each group dropped, so the caller can dead-letter a note of it."""
        self.next_sweep = now_ms + SWEEP_EVERY_MS
        store = self.store
        dropped: dict[bytes, list[int]] = {}
        kept = 0
        for kb in store.reserved_keys(PART_PREFIX):
            group = kb[len(PART_PREFIX) : len(PART_PREFIX) + 16]
            part = store.get_bytes(kb)
            if group in dropped or (
                part is not None and _TIME.unpack_from(part)[0] < now_ms - PART_TIMEOUT_MS
            ):
                counted = dropped.setdefault(group, [0, 0])
                counted[0] += 1
                counted[1] += len(part or b"")
                store.delete_encoded(kb)
            else:
                kept += 1
        # Parts stored in this cycle are not committed yet, so not among the keys above.
        self.may_have_parts = kept > 0 or self._stored_since_sweep
        self._stored_since_sweep = False
        return [(group, parts, size) for group, (parts, size) in dropped.items()]


def send_chunks(
    send: Send,
    topic: str,
    key: bytes | None,
    value: bytes,
    partition: int | None,
    timestamp: int | None,
    headers: list[tuple[str, bytes]] | None,
    record_bytes: int,
) -> None:
    """Send ``value`` as chunk records through ``send`` (a collector's): the record's key on
    each, so they share its partition; its headers on the last, which becomes the record."""
    chunks = split_value(key, value, record_bytes)
    last = len(chunks) - 1
    for i, chunk in enumerate(chunks):
        send(topic, key, chunk, partition, timestamp, headers if i == last else None)


def chunked_topics(topics: Any) -> frozenset[str]:
    """The topics whose records may travel as chunks: streamflow's workflow and step topics
    (``topics``: a topology's topic specs by name), read only by tasks that join them."""
    return frozenset(name for name, spec in topics.items() if spec.kind == TopicKind.WORKFLOW)
