"""Sliding windows: one window per distinct set of a key's records less than ``size`` apart.

Windows are ``[start, start + size)`` as for tumbling and hopping windows, but placed by the
records, not by a clock. A record at ``t`` *ends* the window ``[t - size + 1, t + 1)`` (it is the
last record in it) and *starts* the one that no longer holds it, ``[t + 1, t + 1 + size)`` (kept
only when a record falls in it). Between those points a window's set of records does not change,
so these are all the windows there are, and none is empty (Kafka Streams' sliding windows, with
the exclusive end of our other windows).

A new window's aggregate is folded from the records it holds, so each task keeps the key's
records of the last ``size + grace`` in a buffer store (key, then event time, then offset): an
out-of-order record can create a window that reaches back over records seen earlier. An existing
window takes the new record as any window does (``fn(acc, value)``, arrival order). Windows
close by stream time and are deleted like time windows (same store layout); the buffer drops a
record once no open window can hold it, through an index by time.

A record is late when every window that would hold it has closed: it then counts nowhere and
goes to the dead-letter topic (or is dropped, counted). A record that counts anywhere is kept.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from streamflow.state.store import KeyValueStore
from streamflow.topology.window_nodes import _UNSET, _WindowTask
from streamflow.topology.windows import (
    SlidingWindows,
    Windowed,
    key_prefix,
    start_prefix,
    store_key,
)

if TYPE_CHECKING:
    from streamflow.topology.nodes import ProcessorRuntime, Push
    from streamflow.topology.window_aggregate import WindowAggregateNode

_SEQ = struct.Struct(">QI")
_SIGN = 1 << 63
_INDEXED = 0


def _buffer_key(kb: bytes, ts: int, offset: int, n: int) -> bytes:
    """Key, then event time (ordered), then where the record came from (unique, and the same
    on every replay)."""
    return key_prefix(kb) + start_prefix(ts) + _SEQ.pack(offset & (_SIGN - 1), n)


def _index_key(ts: int, buffer_key: bytes) -> bytes:
    return start_prefix(ts) + buffer_key


class SlidingTask(_WindowTask):
    def __init__(self, node: WindowAggregateNode, rt: ProcessorRuntime, nxt: Push) -> None:
        assert isinstance(node.windows, SlidingWindows)
        assert node.buffer_store is not None and node.index_store is not None
        self.buffer: KeyValueStore = rt.store(node.buffer_store.name)
        self.by_time: KeyValueStore = rt.store(node.index_store.name)
        self.last_offset, self.at_offset = -1, 0
        super().__init__(node, rt, nxt)
        self.size = node.windows.size_ms

    def _apply(self, key: Any, value: Any, ts: int, stream_time: int) -> bool:
        size, grace = self.size, self.grace
        if ts + size + grace <= stream_time:
            return False  # the newest window that could hold it, [ts, ts + size), has closed
        kb = self.node.key_serializer(key)
        prefix = key_prefix(kb)
        # The key's records that share a window with this one, event times in (ts - size,
        # ts + size), and those of the window right after it, up to ts + size.
        neighbours = [
            _buffered_time(bk, len(prefix))
            for bk, _ in self.buffer.items(
                prefix + start_prefix(ts - size + 1), prefix + start_prefix(ts + size + 1)
            )
        ]
        starts = {ts - size + 1}  # the window this record ends
        for t in neighbours:
            if ts <= t:
                starts.add(t - size + 1)  # a later record's window now holds this one too
            if t < ts:
                starts.add(t + 1)  # the window after an earlier record starts holding this one
        offset = self.rt.msg.offset()
        self.at_offset = self.at_offset + 1 if offset == self.last_offset else 0
        self.last_offset = offset
        bk = _buffer_key(kb, ts, offset, self.at_offset)
        applied = False
        store, fn = self.store, self.node.fn
        for start in sorted(starts):
            end = start + size
            if not start <= ts < end or end + grace <= stream_time:
                continue  # does not hold this record, or closed already
            wk = store_key(start, kb)
            acc = store.get_encoded(wk, _UNSET)
            acc = self._fold(prefix, start, end, ts, value) if acc is _UNSET else fn(acc, value)
            self._put(key, wk, start, acc)
            applied = True
        if applied and any(t > ts for t in neighbours):
            self._open_after(key, kb, prefix, ts, stream_time)
        if applied:
            self.buffer.put_encoded(bk, value, key)
            self.by_time.put_encoded(_index_key(ts, bk), _INDEXED, key)
        return applied

    def _open_after(self, key: Any, kb: bytes, prefix: bytes, ts: int, stream_time: int) -> None:
        """An out-of-order record starts the window of the records after it, ``[ts + 1,
        ts + 1 + size)``, unless it exists: it does not hold this record, so it is folded from
        the buffer alone."""
        start, end = ts + 1, ts + 1 + self.size
        wk = store_key(start, kb)
        if end + self.grace <= stream_time or self.store.get_encoded(wk, _UNSET) is not _UNSET:
            return
        self._put(key, wk, start, self._fold(prefix, start, end, None, None))

    def _put(self, key: Any, wk: bytes, start: int, acc: Any) -> None:
        """Store a window's new aggregate, and emit it (``emit="update"``)."""
        self._check(acc, key)
        self.store.put_encoded(wk, acc, key)
        end = start + self.size
        if end + self.grace < self.close_at:
            self.close_at = end + self.grace
        if self.emit_updates:
            self.nxt(Windowed(key, start, end), acc)

    def _fold(self, prefix: bytes, start: int, end: int, ts: int | None, value: Any) -> Any:
        """A new window's aggregate: its buffered records and this one (``ts`` None: none),
        in event-time order."""
        values = []
        pending = ts is not None
        for bk, v in self.buffer.items(prefix + start_prefix(start), prefix + start_prefix(end)):
            if pending and _buffered_time(bk, len(prefix)) > ts:  # type: ignore[operator]
                values.append(value)
                pending = False
            values.append(v)
        if pending:
            values.append(value)
        fn, initial = self.node.fn, self.node.initial
        acc = values[0] if initial is None else fn(initial(), values[0])
        for v in values[1:]:
            acc = fn(acc, v)
        return acc

    def _close(self, stream_time: int) -> None:
        super()._close(stream_time)
        # A record no open window can hold any more: event time + size + grace <= stream time.
        bound = start_prefix(stream_time - self.size - self.grace + 1)
        for ik, _ in list(self.by_time.items(None, bound)):
            self.buffer.delete_encoded(ik[8:])
            self.by_time.delete_encoded(ik)

    def _late_window(self, ts: int) -> tuple[str, int]:
        return f"sliding window [{ts}, {ts + self.size})", ts + self.size + self.grace


def _buffered_time(buffer_key: bytes, prefix_length: int) -> int:
    return int.from_bytes(buffer_key[prefix_length : prefix_length + 8], "big") - _SIGN
