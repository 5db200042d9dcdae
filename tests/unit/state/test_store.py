"""The RocksDB store: buffered writes, commit protocol, scans, checkpoints, reopen."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from streamflow.serde.base import JSON, STR
from streamflow.state.store import KeyValueStore


def test_writes_are_invisible_to_rocksdb_until_applied(tmp_path: Path) -> None:
    store = KeyValueStore("s", tmp_path / "s", STR, JSON)
    store.put("a", {"n": 1})
    assert store.get("a") == {"n": 1}  # read-your-writes from the buffer
    store.close()
    reopened = KeyValueStore("s", tmp_path / "s", STR, JSON)
    assert reopened.get("a") is None  # never committed: RocksDB never saw it
    reopened.put("a", 1)
    assert reopened.prepare_commit() == [(b"a", b"1")]
    reopened.apply(checkpoint=7)
    reopened.close()
    again = KeyValueStore("s", tmp_path / "s", STR, JSON)
    assert again.get("a") == 1 and again.checkpoint() == 7
    again.close()


def test_abort_drops_the_cycle(tmp_path: Path) -> None:
    store = KeyValueStore("s", tmp_path / "s", STR, JSON)
    store.put("a", 1)
    store.prepare_commit()
    store.apply(None)
    store.put("a", 2)
    store.delete("a")
    store.prepare_commit()
    store.abort()
    assert store.get("a") == 1
    store.close()


def test_delete_emits_tombstone(tmp_path: Path) -> None:
    store = KeyValueStore("s", tmp_path / "s", STR, JSON)
    store.put("a", 1)
    store.prepare_commit()
    store.apply(None)
    store.delete("a")
    assert store.prepare_commit() == [(b"a", None)]
    store.apply(3)
    assert store.get("a") is None and "a" not in store
    store.close()


@settings(max_examples=60, deadline=None)
@given(
    committed=st.dictionaries(
        st.text("abcde", min_size=1, max_size=3), st.integers(-(2**63), 2**63 - 1), max_size=15
    ),
    pending=st.dictionaries(
        st.text("abcde", min_size=1, max_size=3),
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        max_size=15,
    ),
    lo=st.text("abcde", max_size=2),
    prefix=st.text("abc", max_size=2),
)
def test_scans_merge_buffer_and_rocksdb_like_a_dict(
    tmp_path_factory, committed, pending, lo, prefix
) -> None:
    path = tmp_path_factory.mktemp("scan") / "s"
    store = KeyValueStore("s", path, STR, JSON)
    for k, v in committed.items():
        store.put(k, v)
    store.prepare_commit()
    store.apply(None)
    truth = dict(committed)
    for k, v in pending.items():
        if v is None:
            store.delete(k)
            truth.pop(k, None)
        else:
            store.put(k, v)
            truth[k] = v
    assert list(store.items()) == sorted(truth.items())
    assert list(store.items(start=lo or None)) == sorted(
        (k, v) for k, v in truth.items() if k >= lo
    )
    assert list(store.prefix_items(prefix.encode())) == sorted(
        (k, v) for k, v in truth.items() if k.startswith(prefix)
    )
    store.close()


def test_corrupt_store_is_rebuilt_empty_for_restore(tmp_path: Path) -> None:
    store = KeyValueStore("s", tmp_path / "s", STR, JSON)
    store.put("a", 1)
    store.prepare_commit()
    store.apply(5)
    store.close()
    for f in (tmp_path / "s").glob("MANIFEST-*"):
        f.write_bytes(b"garbage")
    rebuilt = KeyValueStore("s", tmp_path / "s", STR, JSON)
    assert rebuilt.checkpoint() is None and rebuilt.get("a") is None
    rebuilt.close()


def test_wipe_forgets_data_and_checkpoint_but_stays_usable(tmp_path: Path) -> None:
    store = KeyValueStore("s", tmp_path / "s", STR, JSON)
    store.put("a", 1)
    store.prepare_commit()
    store.apply(9)
    assert store.checkpoint() == 9 and 0 <= store.checkpoint_age_ms() < 60_000
    store.wipe()
    assert store.checkpoint() is None and store.get("a") is None
    store.put("b", 2)
    store.prepare_commit()
    store.apply(10)
    assert dict(store.items()) == {"b": 2}
    store.close()


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(
                st.just("put"), st.text("ab\xff", min_size=1, max_size=3), st.integers(0, 99)
            ),
            st.tuples(st.just("delete"), st.text("ab\xff", min_size=1, max_size=3), st.none()),
            st.tuples(st.just("scan"), st.text("ab\xff", max_size=2), st.none()),
            st.tuples(st.just("undo"), st.just(""), st.none()),
        ),
        max_size=40,
    )
)
def test_scans_between_writes_and_undos_see_exactly_the_buffer(tmp_path_factory, steps) -> None:
    """The sorted index of the cycle's keys, built by its first scan, follows every later
    write and every undo (a failed record's rollback)."""
    store = KeyValueStore("s", tmp_path_factory.mktemp("scan2") / "s", STR, JSON)
    store.put("b", 1)
    store.prepare_commit()
    store.apply(None)
    truth: dict[str, int] = {"b": 1}
    mark, truth_at_mark = len(store.undo), dict(truth)
    for op, key, value in steps:
        if op == "put":
            store.put(key, value)
            truth[key] = value
        elif op == "delete":
            store.delete(key)
            truth.pop(key, None)
        elif op == "undo":  # what Task.rollback does with the undo log
            undo = store.undo
            for i in range(len(undo) - 3, mark - 1, -3):
                undo[i].undo_write(undo[i + 1], undo[i + 2])
            del undo[mark:]
            truth = dict(truth_at_mark)
        else:
            prefix = key.encode()
            assert list(store.prefix_items(prefix)) == sorted(
                (k, v) for k, v in truth.items() if k.encode().startswith(prefix)
            )
            assert list(store.items(start=key or None)) == sorted(
                (k, v) for k, v in truth.items() if k >= key
            )
            mark, truth_at_mark = len(store.undo), dict(truth)
    assert list(store.items()) == sorted(truth.items())
    store.close()
