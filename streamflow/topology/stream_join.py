"""Stream-stream joins within a time window: ``left.join_stream(right, joiner, within=...)``.

Records of the two streams with the same key whose event times are at most ``within`` apart are
joined. Both sides are buffered in RocksDB (with changelogs), so a restarted worker joins a new
record with what arrived before the crash:

- a buffer per side, keyed by the record key (length-prefixed), event time and offset: a key's
  records in a time range are one range scan;
- an index per side keyed by event time first, whose value says whether the record has joined
  anything yet: expiring records (and, for ``left``/``outer`` joins, emitting the ones that never
  joined, with None for the other side) is one range scan from the oldest.

A record that arrives more than ``within + grace`` behind stream time is late (dead-letter topic,
or ``late="drop"``). A buffered record is kept until no record that is not late could still
join it: until stream time passes its time + 2 × ``within`` + ``grace``. Only then is a record of
a left or outer join that joined nothing emitted, with None for the other side. Joined records
carry the later of the two event times.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamflow.state.store import KeyValueStore
from streamflow.topology.nodes import Node, ProcessorRuntime, Push, _fanout
from streamflow.topology.specs import StoreSpec
from streamflow.topology.windows import (
    LateRecord,
    StreamTimeState,
    key_prefix,
    late_record,
    start_prefix,
    store_start,
)

_LEN = struct.Struct(">I")
_TS_SEQ = struct.Struct(">QQ")
_SIGN = 1 << 63
"""Both numbers sign-flipped: byte order is then numeric order, negative ones included."""
_NEVER = float("inf")


def _times(ts: int, seq: int) -> bytes:
    return _TS_SEQ.pack(ts + _SIGN, seq + _SIGN)


def _times_of(key: bytes) -> tuple[int, int]:
    ts, seq = _TS_SEQ.unpack_from(key, len(key) - 16)
    return ts - _SIGN, seq - _SIGN


def _buffer_key_of(ik: bytes) -> bytes:
    return ik[8:]


@dataclass(eq=False, kw_only=True)
class StreamJoinNode(Node):
    """One side (``side`` "left" or "right") of a windowed stream-stream join."""

    side: str
    buffers: tuple[StoreSpec, StoreSpec]
    """Left and right buffers."""
    indexes: tuple[StoreSpec, StoreSpec]
    time_store: StoreSpec
    joiner: Callable[[Any, Any], Any]
    key_serializer: Callable[[Any], bytes]
    key_deserializer: Callable[[bytes], Any]
    within_ms: int
    grace_ms: int
    how: str
    late: str = "dead_letter"
    join_name: str
    kind: str = field(default="stream-join", init=False)

    def detail(self) -> str:
        return f"{self.how} join within {self.within_ms} ms, grace {self.grace_ms} ms ({self.side})"

    def stores(self) -> list[StoreSpec]:
        return [*self.buffers, *self.indexes, self.time_store]

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        state = rt.local(f"stream-join:{self.join_name}", lambda: _JoinTask(self, rt))
        # Both sides lead to the same downstream nodes; the first side built emits for both.
        state.out = state.out or _fanout(downstream)
        mine = 0 if self.side == "left" else 1
        node = self

        def push(key: Any, value: Any, _sf_node: Node = node) -> None:
            state.push(mine, key, value)

        return push


class _JoinTask(StreamTimeState):
    """The state both sides of one join share in one task: buffers, stream time, closing."""

    def __init__(self, node: StreamJoinNode, rt: ProcessorRuntime) -> None:
        super().__init__(rt, node.time_store.name)
        self.node, self.rt = node, rt
        self.buffers: list[KeyValueStore] = [rt.store(s.name) for s in node.buffers]
        self.indexes: list[KeyValueStore] = [rt.store(s.name) for s in node.indexes]
        self.out: Push | None = None
        self.within, self.grace = node.within_ms, node.grace_ms
        self.retention = 2 * node.within_ms + node.grace_ms
        """How long after its event time a buffered record may still meet a record that is not
        late (one that arrives up to ``within + grace`` behind stream time, ``within`` away)."""
        # Which sides' records that never joined are emitted when they expire.
        self.keep_unmatched = (node.how in ("left", "outer"), node.how == "outer")
        self.close_at = _NEVER
        self.dropped = 0

    def _load(self) -> None:
        self.load_time()
        self._find_close_at()

    def _find_close_at(self) -> None:
        firsts = [next(iter(index.items()), None) for index in self.indexes]
        times = [store_start(f[0]) for f in firsts if f is not None]
        self.close_at = min(times) + self.retention if times else _NEVER

    def _emit(self, key: Any, left: Any, right: Any, ts: int) -> None:
        rt = self.rt
        saved = rt.timestamp_override
        rt.timestamp_override = ts
        try:
            assert self.out is not None
            self.out(key, self.node.joiner(left, right))
        finally:
            rt.timestamp_override = saved

    def push(self, mine: int, key: Any, value: Any) -> None:
        if not self.loaded:
            self._load()
        rt = self.rt
        ts = rt.timestamp_override
        if ts is None:
            ts = rt.msg.timestamp()[1]
        stream_time = ts if ts > self.stream_time else self.stream_time
        if ts + self.within + self.grace <= stream_time:
            self._late(key, ts, stream_time)
            return
        # The key's length-prefixed bytes are the head of every store key this record touches.
        kp = key_prefix(self.node.key_serializer(key))
        theirs = 1 - mine
        other, other_index = self.buffers[theirs], self.indexes[theirs]
        lo = kp + _TS_SEQ.pack(ts - self.within + _SIGN, 0)
        hi = kp + _TS_SEQ.pack(ts + self.within + 1 + _SIGN, 0)
        matched = False
        for bk, their_value in list(other.range_encoded(lo, hi)):
            their_ts = _times_of(bk)[0]
            left, right = (value, their_value) if mine == 0 else (their_value, value)
            self._emit(key, left, right, their_ts if their_ts > ts else ts)
            matched = True
            if self.keep_unmatched[theirs]:
                ik = start_prefix(their_ts) + bk
                if other_index.get_encoded(ik) is False:
                    other_index.put_encoded(ik, True, key)
        bk = kp + _times(ts, rt.msg.offset())
        self.buffers[mine].put_encoded(bk, value, key)
        self.indexes[mine].put_encoded(start_prefix(ts) + bk, matched, key)
        if ts + self.retention < self.close_at:
            self.close_at = ts + self.retention
        if stream_time > self.stream_time:
            self.stream_time = stream_time
            if stream_time >= self.close_at:
                self._close(stream_time)

    def _close(self, stream_time: int) -> None:
        """Drop every buffered record that can no longer join; emit the unmatched ones of the
        sides a left or outer join keeps."""
        cutoff = start_prefix(stream_time - self.retention + 1)
        for side in (0, 1):
            index, buffer = self.indexes[side], self.buffers[side]
            for ik, was_matched in list(index.items(None, cutoff)):
                bk = _buffer_key_of(ik)
                if self.keep_unmatched[side] and not was_matched:
                    value = buffer.get_encoded(bk)
                    (length,) = _LEN.unpack_from(bk)
                    key = self.node.key_deserializer(bk[4 : 4 + length])
                    ts = store_start(ik)
                    left, right = (value, None) if side == 0 else (None, value)
                    self._emit(key, left, right, ts)
                buffer.delete_encoded(bk)
                index.delete_encoded(ik)
        self._find_close_at()

    def _late(self, key: Any, ts: int, stream_time: int) -> None:
        reason = LateRecord(
            f"late record for key {key!r} in join {self.node.join_name!r}: event time {ts} "
            f"can join records up to {ts + self.within}, and stream time {stream_time} is past "
            f"that by more than the grace ({self.grace} ms)"
        )
        self.dropped = late_record(
            self.rt, self.node.late, reason, "join", self.node.join_name, self.dropped
        )
