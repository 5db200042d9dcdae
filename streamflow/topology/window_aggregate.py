"""The windowed aggregation node: which per-task state a window kind gets (time windows in
``window_nodes``, sessions in ``session_nodes``, sliding windows in ``sliding_nodes``), built
once per task."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamflow.topology.nodes import Node, ProcessorRuntime, Push, _fanout
from streamflow.topology.session_nodes import SessionTask
from streamflow.topology.sliding_nodes import SlidingTask
from streamflow.topology.specs import StoreSpec
from streamflow.topology.window_nodes import _WindowTask
from streamflow.topology.windows import SessionWindows, SlidingWindows, TimeWindows


@dataclass(eq=False, kw_only=True)
class WindowAggregateNode(Node):
    store: StoreSpec
    """Windows: key = window start + record key (``windows.store_key``), value = aggregate."""
    time_store: StoreSpec
    """The stream time, one entry per task."""
    windows: TimeWindows | SessionWindows | SlidingWindows
    index_store: StoreSpec | None = None
    """Sessions: their keys ordered by end, for closing them by stream time. Sliding windows:
    the buffered records ordered by time, for dropping them."""
    buffer_store: StoreSpec | None = None
    """Sliding windows only: the key's recent records, to fold a new window from."""
    merge: Callable[[Any, Any], Any] | None = None
    """Sessions only: how two sessions' aggregates combine when a record joins them."""
    key_serializer: Callable[[Any], bytes]
    key_deserializer: Callable[[bytes], Any]
    initial: Callable[[], Any] | None
    fn: Callable[[Any, Any], Any]
    emit: str = "update"
    late: str = "dead_letter"
    idle_close_ms: int | None = None
    kind: str = field(default="window", init=False)

    def detail(self) -> str:
        return f"store {self.store.name}, {self.windows.describe()}, emit on {self.emit}"

    def stores(self) -> list[StoreSpec]:
        extra = [s for s in (self.index_store, self.buffer_store) if s is not None]
        return [self.store, self.time_store, *extra]

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        state: _WindowTask
        if isinstance(self.windows, SessionWindows):
            state = SessionTask(self, rt, _fanout(downstream))
        elif isinstance(self.windows, SlidingWindows):
            state = SlidingTask(self, rt, _fanout(downstream))
        else:
            state = _WindowTask(self, rt, _fanout(downstream))
        if self.idle_close_ms is not None:
            rt.schedule(state.idle_due, state.idle_fire)
        return state.push
