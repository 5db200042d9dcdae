"""Session windows: a key's records less than ``gap`` apart form one session.

A record either starts a session, extends one, or joins several into one (a late-ish record that
fills the gap between two). Two stores per aggregation:

- the sessions, keyed by the record key (length-prefixed) then start and end, so a key's
  sessions are one prefix scan;
- an index keyed by end first, so closing is one range scan from the oldest end, as for time
  windows (``windows.store_key``).

Merged-away sessions are deleted from both (through their changelogs); with ``emit="update"``
each gets a tombstone downstream (value None) before the merged session's new aggregate, as
Kafka Streams does, so a table built from the output holds only live sessions.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from streamflow.state.store import KeyValueStore
from streamflow.topology.window_nodes import _NEVER, _WindowTask
from streamflow.topology.windows import (
    SessionWindows,
    Windowed,
    key_prefix,
    start_prefix,
    store_start,
)

if TYPE_CHECKING:
    from streamflow.topology.nodes import ProcessorRuntime, Push
    from streamflow.topology.window_aggregate import WindowAggregateNode

_LEN = struct.Struct(">I")
_TIMES = struct.Struct(">qq")
_INDEXED = 0


def _session_key(kb: bytes, start: int, end: int) -> bytes:
    return key_prefix(kb) + _TIMES.pack(start, end)


def _index_key(kb: bytes, start: int, end: int) -> bytes:
    return start_prefix(end) + key_prefix(kb) + _TIMES.pack(start, end)


def _from_index(ik: bytes) -> tuple[bytes, int, int]:
    """Record key bytes, start and end of the session an index key points at."""
    (length,) = _LEN.unpack_from(ik, 8)
    kb = ik[12 : 12 + length]
    start, end = _TIMES.unpack_from(ik, 12 + length)
    return kb, start, end


class SessionTask(_WindowTask):
    def __init__(self, node: WindowAggregateNode, rt: ProcessorRuntime, nxt: Push) -> None:
        assert isinstance(node.windows, SessionWindows) and node.index_store is not None
        self.gap = node.windows.gap_ms
        self.index: KeyValueStore = rt.store(node.index_store.name)
        super().__init__(node, rt, nxt)

    def _apply(self, key: Any, value: Any, ts: int, stream_time: int) -> bool:
        kb = self.node.key_serializer(key)
        gap = self.gap
        joined = []
        start, end = ts, ts
        for sk, acc in self.store.prefix_items(key_prefix(kb)):
            s, e = _TIMES.unpack_from(sk, len(sk) - 16)
            if s - gap <= ts <= e + gap:
                joined.append((s, e, acc))
                start, end = min(start, s), max(end, e)
        if end + gap + self.grace <= stream_time:
            return False  # the session it would be part of has closed
        node = self.node
        if joined:
            merge = node.merge
            assert merge is not None
            acc = joined[0][2]
            for _, _, other in joined[1:]:
                acc = merge(acc, other)
            acc = node.fn(acc, value)
        else:
            acc = value if node.initial is None else node.fn(node.initial(), value)
        self._check(acc, key)
        store, index, nxt = self.store, self.index, self.nxt
        for s, e, _ in joined:
            store.delete_encoded(_session_key(kb, s, e))
            index.delete_encoded(_index_key(kb, s, e))
            if self.emit_updates and (s, e) != (start, end):
                nxt(Windowed(key, s, e), None)
        store.put_encoded(_session_key(kb, start, end), acc, key)
        index.put_encoded(_index_key(kb, start, end), _INDEXED, key)
        closes = end + gap + self.grace
        if closes < self.close_at:
            self.close_at = closes
        if self.emit_updates:
            nxt(Windowed(key, start, end), acc)
        return True

    def _close(self, stream_time: int) -> None:
        last_end = stream_time - self.gap - self.grace
        closing = [ik for ik, _ in self.index.items(None, start_prefix(last_end + 1))]
        rt, nxt, kd, emit = self.rt, self.nxt, self.node.key_deserializer, not self.emit_updates
        saved = rt.timestamp_override
        try:
            for ik in closing:
                kb, start, end = _from_index(ik)
                sk = _session_key(kb, start, end)
                if emit:
                    acc = self.store.get_encoded(sk)
                    rt.timestamp_override = end
                    nxt(Windowed(kd(kb), start, end), acc)
                self.store.delete_encoded(sk)
                self.index.delete_encoded(ik)
        finally:
            rt.timestamp_override = saved
        self._find_close_at()

    def _find_close_at(self) -> None:
        first = next(iter(self.index.items()), None)
        self.close_at = _NEVER if first is None else store_start(first[0]) + self.gap + self.grace

    def _late_window(self, ts: int) -> tuple[str, int]:
        return f"a session around {ts}", ts + self.gap + self.grace
