"""Store values larger than one changelog record: chunks and a manifest in the changelog and
RocksDB alike, whole values in every read, and a restore that is a raw copy of the changelog
(compacted or not) reading them whole too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from streamflow.errors import SerializationError
from streamflow.serde.base import BYTES, JSON, STR
from streamflow.state.chunked_values import CHUNK_PREFIX, RESERVED, is_manifest
from streamflow.state.store import KeyValueStore
from streamflow.state.ttl_store import TtlStore

RECORD = 10_000


def _store(path: Path, name: str = "docs") -> KeyValueStore:
    store = KeyValueStore(name, path / name, STR, JSON)
    store.max_record_bytes = RECORD
    store.max_value_bytes = 200_000
    return store


def _commit(store: KeyValueStore, changelog: list[tuple[bytes, bytes | None]]) -> None:
    records = store.prepare_commit()
    for kb, vb in records:
        assert len(kb) + len(vb or b"") <= RECORD, "every changelog record fits the producer"
    changelog += records
    store.apply(len(changelog))


def _restore(path: Path, changelog: list[tuple[bytes, bytes | None]]) -> KeyValueStore:
    """A new replica from the changelog, as the restorer writes it: raw bytes in order."""
    replica = _store(path, "replica")
    replica.restore_batch(changelog, len(changelog))
    return replica


def _compacted(changelog: list[tuple[bytes, bytes | None]]) -> list[tuple[bytes, bytes | None]]:
    """What compaction leaves: the latest record of each key, in offset order."""
    latest = {kb: i for i, (kb, _) in enumerate(changelog)}
    return [record for i, record in enumerate(changelog) if latest[record[0]] == i]


def test_a_big_value_is_written_as_chunks_and_read_whole_before_and_after_commit(
    tmp_path: Path,
) -> None:
    store, changelog = _store(tmp_path), []
    big = "é" * 40_000  # 80,000 bytes of UTF-8: nine records
    store.put("doc", {"text": big})
    assert store.get("doc") == {"text": big}  # this cycle's write
    _commit(store, changelog)
    assert store.get("doc") == {"text": big}  # committed: joined from RocksDB
    chunks = [kb for kb, _ in changelog if kb.startswith(CHUNK_PREFIX)]
    assert len(chunks) == 9
    assert is_manifest(dict(changelog)[b"doc"])
    assert dict(store.items()) == {"doc": {"text": big}}  # a scan shows no chunk key
    assert store.committed_get(b"doc") == {"text": big}
    assert _restore(tmp_path, changelog).get("doc") == {"text": big}
    store.close()


def test_overwrites_and_deletes_tombstone_the_chunks_a_value_no_longer_has(
    tmp_path: Path,
) -> None:
    store, changelog = _store(tmp_path), []
    store.put("doc", "a" * 50_000)
    store.put("other", "small")
    _commit(store, changelog)
    store.put("doc", "b" * 25_000)  # fewer chunks
    _commit(store, changelog)
    assert store.get("doc") == "b" * 25_000
    store.put("doc", "c")  # back to one record
    _commit(store, changelog)
    assert store.get("doc") == "c"
    compacted = _compacted(changelog)
    live = [kb for kb, vb in compacted if kb.startswith(CHUNK_PREFIX) and vb is not None]
    assert live == [], "no chunk outlives the value it belonged to"
    store.put("doc", "d" * 30_000)
    _commit(store, changelog)
    store.delete("doc")
    _commit(store, changelog)
    assert store.get("doc") is None
    compacted = _compacted(changelog)
    assert [kb for kb, vb in compacted if vb is not None] == [b"other"]
    for log in (changelog, compacted):
        replica = _restore(tmp_path, log)
        assert dict(replica.items()) == {"other": "small"}
        assert replica.reserved_keys(RESERVED) == []
        replica.close()
        shutil.rmtree(tmp_path / "replica")
    store.close()


def test_a_restore_of_a_partly_compacted_changelog_reads_the_latest_value_whole(
    tmp_path: Path,
) -> None:
    """Compaction may drop old chunks before the old manifest: once caught up, the latest
    manifest and its chunks agree whatever was dropped."""
    store, changelog = _store(tmp_path), []
    for letter in "xyz":
        store.put("doc", letter * 35_000)
        _commit(store, changelog)
    latest = {kb: i for i, (kb, _) in enumerate(changelog)}
    # Drop superseded chunk records but keep every manifest: the worst order compaction allows.
    partly = [
        record
        for i, record in enumerate(changelog)
        if not record[0].startswith(CHUNK_PREFIX) or latest[record[0]] == i
    ]
    replica = _restore(tmp_path, partly)
    assert replica.get("doc") == "z" * 35_000
    replica.close()
    store.close()


def test_a_value_over_the_store_limit_fails_its_write_naming_the_store_and_key(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    with pytest.raises(SerializationError, match=r"store 'docs'.*'doc'.*limit of 200000"):
        store.put("doc", "x" * 200_000)
    assert store.get("doc") is None
    store.close()


def test_reserved_keys_are_never_user_entries_in_scans_or_ttl_sweeps(tmp_path: Path) -> None:
    now = [1_000_000]
    ttl = TtlStore("sessions", tmp_path / "ttl", STR, JSON, 60_000, lambda: now[0])
    ttl.max_record_bytes = RECORD
    ttl.max_value_bytes = 200_000
    changelog: list[tuple[bytes, bytes | None]] = []
    ttl.put("long", "l" * 30_000)
    ttl.put("short", "s")
    records = ttl.prepare_commit()
    changelog += records
    ttl.apply(len(changelog))
    assert dict(ttl.items()) == {"long": "l" * 30_000, "short": "s"}
    assert ttl.sweep() == 0  # not expired: chunks are not read as expired entries
    now[0] += 61_000
    assert ttl.sweep() == 2
    records = ttl.prepare_commit()
    ttl.apply(len(changelog) + len(records))
    assert dict(ttl.items()) == {}
    assert all(vb is None for kb, vb in records if kb.startswith(CHUNK_PREFIX))
    assert ttl.reserved_keys(CHUNK_PREFIX) == []
    ttl.close()


def test_bytes_keys_in_a_store_sort_before_the_reserved_range(tmp_path: Path) -> None:
    store = KeyValueStore("offsets", tmp_path / "o", BYTES, JSON)
    store.put_bytes(RESERVED + b"p-part", b"raw part")
    store.put((7).to_bytes(8, "big"), 1)
    assert dict(store.items()) == {(7).to_bytes(8, "big"): 1}
    assert store.get_bytes(RESERVED + b"p-part") == b"raw part"
    store.prepare_commit()
    store.apply(1)
    assert dict(store.items()) == {(7).to_bytes(8, "big"): 1}
    assert store.reserved_keys(RESERVED + b"p") == [RESERVED + b"p-part"]
    store.close()
