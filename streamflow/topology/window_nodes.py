"""The windowed aggregation's per-task state for time windows (the node that picks it is
``window_aggregate``; sessions and sliding windows extend it): fold records into time windows,
close them by stream time.

Per task it keeps the stream time (the largest event time seen) and the end of the oldest open
window. A record updates every window of its event time that is still open; when stream time
passes a window's ``end + grace`` the window closes: with ``emit="close"`` its final value goes
downstream then (Kafka Streams' suppression), and either way it is deleted from the store, through
the changelog, so a restore does not bring it back.

Stream time is state like any other: it is written to a small store of its own once per commit
(not per record) and read back after a restart or an abort, so a replay decides "late" exactly
as the first run did. ``idle_close`` lets wall-clock time stand in for event time on a partition
that has gone quiet: windows close without waiting for the next record (opt-in: it makes results
depend on when records arrive, not only on their timestamps).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from streamflow.state.store import KeyValueStore
from streamflow.topology.nodes import ProcessorRuntime, Push
from streamflow.topology.windows import (
    LateRecord,
    StreamTimeState,
    TimeWindows,
    Windowed,
    late_record,
    start_prefix,
    store_key,
    store_start,
)

if TYPE_CHECKING:
    from streamflow.topology.window_aggregate import WindowAggregateNode

log = logging.getLogger(__name__)

_UNSET: Any = object()
_NEVER = float("inf")


class _WindowTask(StreamTimeState):
    """One task's side of a `WindowAggregateNode` (a class: the state is several fields)."""

    def __init__(self, node: WindowAggregateNode, rt: ProcessorRuntime, nxt: Push) -> None:
        super().__init__(rt, node.time_store.name)
        self.node, self.rt, self.nxt = node, rt, nxt
        w = node.windows
        self.grace = w.grace_ms
        if isinstance(w, TimeWindows):
            self.size, self.starts = w.size_ms, w.starts
        self.emit_updates = node.emit == "update"
        self.idle = node.idle_close_ms is not None
        """Quiet partitions close on the wall clock: only then is it read per record."""
        self.store: KeyValueStore = rt.store(node.store.name)
        self.close_at = _NEVER
        """When stream time reaches this, the oldest open window closes."""
        self.last_record_wall = 0
        self.wall_base = 0
        self.dropped = 0

    # -- state ---------------------------------------------------------------------------------

    def _load(self) -> None:
        self.load_time()
        self._find_close_at()
        self.last_record_wall = self.wall_base = self.rt.now_ms()
        log.debug(
            "window store %s, partition %d: stream time %d, next close at %s",
            self.node.store.name,
            self.rt.partition,
            self.stream_time,
            self.close_at,
        )

    def _find_close_at(self) -> None:
        first = next(iter(self.store.items()), None)
        self.close_at = _NEVER if first is None else store_start(first[0]) + self.size + self.grace

    # -- records -------------------------------------------------------------------------------

    def push(self, key: Any, value: Any) -> None:
        if not self.loaded:
            self._load()
        rt = self.rt
        ts = rt.timestamp_override
        if ts is None:
            ts = rt.msg.timestamp()[1]
        stream_time = ts if ts > self.stream_time else self.stream_time
        if not self._apply(key, value, ts, stream_time):
            self._late(key, ts, stream_time)
        # Only now, with every write and output made: a record that raised changes nothing.
        if self.idle:
            self.last_record_wall = self.wall_base = rt.now_ms()
        if stream_time > self.stream_time:
            self.stream_time = stream_time
            if stream_time >= self.close_at:
                self._close(stream_time)

    def _apply(self, key: Any, value: Any, ts: int, stream_time: int) -> bool:
        """Fold the record into each of its windows still open; False: none was (late)."""
        kb = self.node.key_serializer(key)
        store, fn, initial = self.store, self.node.fn, self.node.initial
        size, grace, nxt = self.size, self.grace, self.nxt
        applied = False
        for start in self.starts(ts):
            end = start + size
            if end + grace <= stream_time:
                continue  # this window has closed: the record is late for it
            wk = store_key(start, kb)
            acc = store.get_encoded(wk, _UNSET)
            if acc is _UNSET:
                acc = value if initial is None else fn(initial(), value)
            else:
                acc = fn(acc, value)
            if acc is None:
                self._check(acc, key)
            store.put_encoded(wk, acc, key)
            applied = True
            if end + grace < self.close_at:
                self.close_at = end + grace
            if self.emit_updates:
                nxt(Windowed(key, start, end), acc)
        return applied

    def _check(self, acc: Any, key: Any) -> None:
        if acc is None:
            raise ValueError(
                f"window aggregate of store {self.node.store.name!r} returned None for {key!r}"
            )

    def _late_window(self, ts: int) -> tuple[str, int]:
        """The window a late record would have gone to, and when it closed (for the reason)."""
        newest = self.starts(ts)[-1]
        return f"window [{newest}, {newest + self.size})", newest + self.size + self.grace

    def _late(self, key: Any, ts: int, stream_time: int) -> None:
        window, closed_at = self._late_window(ts)
        reason = LateRecord(
            f"late record for key {key!r}: event time {ts} is in {window} of store "
            f"{self.node.store.name!r}, which closed at {closed_at} (grace {self.grace} ms); "
            f"stream time is {stream_time}"
        )
        self.dropped = late_record(
            self.rt, self.node.late, reason, "window", self.node.name, self.dropped
        )

    def _close(self, stream_time: int) -> None:
        """Emit (``emit="close"``) and delete every window that ``stream_time`` closes."""
        # Windows that start at or before this close by now (all share size and grace).
        last_start = stream_time - self.size - self.grace
        closing = list(self.store.items(None, start_prefix(last_start + 1)))
        rt, nxt, kd, emit = self.rt, self.nxt, self.node.key_deserializer, not self.emit_updates
        saved = rt.timestamp_override
        try:
            for wk, acc in closing:
                start = store_start(wk)
                if emit:
                    # A closed window's result carries its last instant as its event time.
                    rt.timestamp_override = start + self.size - 1
                    nxt(Windowed(kd(wk[8:]), start, start + self.size), acc)
                self.store.delete(wk)
        finally:
            rt.timestamp_override = saved
        self._find_close_at()

    # -- partitions gone quiet -----------------------------------------------------------------

    def idle_due(self, now_ms: int) -> bool:
        idle = self.node.idle_close_ms
        if idle is None or self.close_at == _NEVER or not self.loaded:
            return False
        return (
            now_ms - self.last_record_wall >= idle
            and self.stream_time + (now_ms - self.wall_base) >= self.close_at
        )

    def idle_fire(self, now_ms: int) -> None:
        """Stream time moves with the wall clock while the partition is quiet."""
        if not self.idle_due(now_ms):
            return
        self.stream_time += now_ms - self.wall_base
        self.wall_base = now_ms
        self._close(self.stream_time)
