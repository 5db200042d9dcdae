"""Store values larger than a changelog record: written as chunks, read whole.

A journal entry holding a 20 MB step result, or an entity whose state is 5 MB, must commit
through a changelog whose records the producer caps near 1 MB (``message.max.bytes``). A value
over that size is written as chunks under keys in streamflow's own part of the key space (the
reserved range at the end of every store), with a small *manifest* under the value's own key,
all in the cycle's transaction. RocksDB holds exactly what the changelog holds, so a restore, a
standby and ``state rebuild`` stay raw copies that know nothing of chunks; a read of the key
finds the manifest and joins the chunks (docs/architecture.md, "Big payloads").

Compaction keeps the latest record per key. Every new version of a value rewrites its chunks,
and the chunks a longer old version had beyond the new count get tombstones (as do all of them
when the key is deleted), so once a restore has caught up, a manifest and its chunks come from
the same write. The manifest carries the size and a CRC-32 of the whole value: a disagreement
(a read racing a commit, a damaged copy) is an error naming the key, never a wrong value.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

RESERVED = b"\xff\xfe\xfd"
"""Keys starting with these bytes are streamflow's own in every store: they sort after every
key a str or JSON serde can make (0xff never starts UTF-8), and scans of user keys stop here."""
CHUNK_PREFIX = RESERVED + b"c"
"""Chunks of big values: ``CHUNK_PREFIX + len(key) + key + index``."""
PART_PREFIX = RESERVED + b"p"
"""Parts of chunked input records being reassembled (``cluster/record_chunks``)."""
MANIFEST = b"\x00\xffstreamflow-chunked\x00"
"""How a manifest value starts: no JSON, str or TTL-prefixed value begins with 0x00 0xff."""
_FIELDS = struct.Struct(">IQI")  # chunk count, whole size, CRC-32 of the whole value
MANIFEST_BYTES = len(MANIFEST) + _FIELDS.size


class ChunkMismatch(ValueError):
    """The chunks under a manifest do not make the value it describes."""


def chunk_key(kb: bytes, index: int) -> bytes:
    """Where chunk ``index`` of the value of ``kb`` lives (the key's length first, so the
    chunk keys of two different keys never collide)."""
    return CHUNK_PREFIX + len(kb).to_bytes(4, "big") + kb + index.to_bytes(4, "big")


def split(kb: bytes, vb: bytes, record_bytes: int) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The chunk records of ``vb`` (each key + value within ``record_bytes``) and the manifest
    to write under ``kb``."""
    room = record_bytes - len(chunk_key(kb, 0))
    if room < 1024:
        raise ValueError(f"a key of {len(kb)} bytes leaves no room for chunks in a record")
    chunks = [
        (chunk_key(kb, i), vb[start : start + room])
        for i, start in enumerate(range(0, len(vb), room))
    ]
    manifest = MANIFEST + _FIELDS.pack(len(chunks), len(vb), zlib.crc32(vb))
    return chunks, manifest


def is_manifest(raw: bytes) -> bool:
    return len(raw) == MANIFEST_BYTES and raw.startswith(MANIFEST)


def chunk_count(raw: bytes | None) -> int:
    """How many chunks the value ``raw`` (as stored) has: 0 for an ordinary value."""
    if raw is None or not is_manifest(raw):
        return 0
    return int(_FIELDS.unpack_from(raw, len(MANIFEST))[0])


def join(kb: bytes, manifest: bytes, read: Callable[[bytes], bytes | None]) -> bytes:
    """The whole value a manifest stands for, its chunks read with ``read(chunk key)``."""
    count, size, crc = _FIELDS.unpack_from(manifest, len(MANIFEST))
    pieces = []
    for i in range(count):
        piece = read(chunk_key(kb, i))
        if piece is None:
            raise ChunkMismatch(f"chunk {i} of {count} is missing")
        pieces.append(piece)
    value = b"".join(pieces)
    if len(value) != size or zlib.crc32(value) != crc:
        raise ChunkMismatch(
            f"its {count} chunks make {len(value)} bytes that do not match the manifest "
            f"({size} bytes, crc {crc:#010x})"
        )
    return value


def stale_chunks(kb: bytes, old_count: int, new_count: int) -> list[tuple[bytes, None]]:
    """Tombstones for the chunks an older version had beyond the new version's count."""
    return [(chunk_key(kb, i), None) for i in range(new_count, old_count)]


def whole_values(latest: dict[bytes, bytes | None]) -> dict[bytes, bytes | None]:
    """A changelog folded to its latest record per key, as user keys and whole values: what
    a reader of the changelog itself (no worker running) needs."""
    out: dict[bytes, bytes | None] = {}
    for kb, raw in latest.items():
        if kb.startswith(RESERVED):
            continue
        out[kb] = join(kb, raw, latest.get) if raw is not None and is_manifest(raw) else raw
    return out
