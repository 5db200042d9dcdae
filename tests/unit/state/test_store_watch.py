"""Reading a store from another thread, and waiting for a key's next commit (real RocksDB)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from streamflow.errors import StoreClosed
from streamflow.serde.base import JSON, STR
from streamflow.state.store import KeyValueStore


def _store(tmp_path: Path) -> KeyValueStore:
    return KeyValueStore("s", tmp_path / "s", STR, JSON)


def _commit(store: KeyValueStore) -> None:
    store.prepare_commit()
    store.apply(None)


def test_a_watch_wakes_on_the_commit_of_its_key_only(tmp_path: Path) -> None:
    store = _store(tmp_path)
    event = store.watch(b"a")
    store.put("b", 1)
    _commit(store)
    assert not event.is_set()
    store.put("a", 2)
    assert not event.is_set()  # written, not committed yet
    _commit(store)
    assert event.is_set()
    store.unwatch(b"a", event)
    assert store.committed_get(b"a") == 2
    store.close()


def test_committed_reads_see_no_open_write(tmp_path: Path) -> None:
    store = _store(tmp_path)
    for i in range(5):
        store.put(f"k{i}", i)
    _commit(store)
    store.put("k9", 9)
    assert [k for k, _ in store.committed_prefix(b"k", 3)] == ["k0", "k1", "k2"]
    assert store.committed_get(b"k9", "absent") == "absent"
    store.close()


def test_close_wakes_the_waiters_and_later_reads_say_the_store_moved(tmp_path: Path) -> None:
    store = _store(tmp_path)
    event = store.watch(b"a")
    waiter = threading.Thread(target=event.wait, args=(30,))
    waiter.start()
    store.close()
    waiter.join(5)
    assert not waiter.is_alive()
    with pytest.raises(StoreClosed):
        store.committed_get(b"a")
    with pytest.raises(StoreClosed):
        store.committed_prefix(b"", 10)
