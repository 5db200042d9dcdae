"""``stream.window(tumbling(timedelta(minutes=5)))``: the DSL of windowed aggregations.

A ``WindowedStream`` is a stream with windows chosen and no aggregation yet; ``aggregate``,
``reduce`` and ``count`` turn it back into a ``Stream`` whose keys are ``Windowed(key, start,
end)`` (their serde: the key's bytes, then start and end) and whose values are the aggregates.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from streamflow.errors import ConfigError
from streamflow.serde.base import BYTES, JSON, STR, Serde, resolve_serde
from streamflow.topology.options import Emit, Late
from streamflow.topology.window_aggregate import WindowAggregateNode
from streamflow.topology.windows import SessionWindows, SlidingWindows, TimeWindows, windowed_serde

if TYPE_CHECKING:
    from streamflow.topology.stream import Stream

EMITS = ("update", "close")
LATE = ("dead_letter", "drop")


class WindowedStream:
    """A keyed stream cut into time windows, waiting for its aggregation."""

    def __init__(
        self,
        stream: Stream,
        windows: TimeWindows | SessionWindows | SlidingWindows,
        *,
        late: Late = "dead_letter",
        idle_close: timedelta | None = None,
    ) -> None:
        if late not in LATE:
            raise ConfigError(f"late={late!r}: use 'dead_letter' (the default) or 'drop'")
        if idle_close is not None and idle_close.total_seconds() <= 0:
            raise ConfigError(f"idle_close must be a positive duration, not {idle_close!r}")
        self._stream, self.windows, self.late = stream, windows, late
        self.idle_close_ms = None if idle_close is None else int(idle_close.total_seconds() * 1000)

    def aggregate(
        self,
        store: str,
        *,
        initial: Callable[[], Any],
        fn: Callable[[Any, Any], Any],
        value: str | Serde = "json",
        emit: Emit = "update",
        merge: Callable[[Any, Any], Any] | None = None,
    ) -> Stream:
        """Fold each window's records with ``fn(acc, value)`` from ``initial()``. ``emit``:
        every updated aggregate (``"update"``), or each window's final one once it closes
        (``"close"``). Sessions also need ``merge(acc1, acc2)``: a record that fills the gap
        between two sessions joins them."""
        if isinstance(self.windows, SessionWindows) and merge is None:
            raise ConfigError(
                f"aggregate({store!r}) over session windows needs merge=fn(acc1, acc2): a "
                "record between two sessions joins them into one"
            )
        return self._build(store, initial, fn, resolve_serde(value), emit, merge)

    def reduce(
        self,
        store: str,
        fn: Callable[[Any, Any], Any],
        *,
        value: str | Serde | None = None,
        emit: Emit = "update",
    ) -> Stream:
        """Like ``aggregate``, the window's first value being its starting aggregate."""
        serde = self._stream.value_serde if value is None else resolve_serde(value)
        return self._build(store, None, fn, serde, emit, fn)

    def count(self, store: str, *, emit: Emit = "update") -> Stream:
        return self._build(store, _zero, _plus_one, JSON, emit, _add)

    def _build(
        self,
        store: str,
        initial: Callable[[], Any] | None,
        fn: Callable[[Any, Any], Any],
        value_serde: Serde,
        emit: Emit,
        merge: Callable[[Any, Any], Any] | None,
    ) -> Stream:
        if emit not in EMITS:
            raise ConfigError(f"emit={emit!r}: use 'update' (every change) or 'close'")
        stream = self._stream
        topology = stream._topology
        key_serde = stream.key_serde
        spec = topology.add_store(store, BYTES, value_serde)
        times = topology.add_store(f"{store}-stream-time", STR, JSON)
        index = buffer = None
        if isinstance(self.windows, SessionWindows):
            index = topology.add_store(f"{store}-by-end", BYTES, JSON)
        elif isinstance(self.windows, SlidingWindows):
            buffer = topology.add_store(f"{store}-records", BYTES, stream.value_serde)
            index = topology.add_store(f"{store}-records-by-time", BYTES, JSON)
        node = WindowAggregateNode(
            store,
            store=spec,
            time_store=times,
            windows=self.windows,
            index_store=index,
            buffer_store=buffer,
            merge=merge,
            key_serializer=key_serde.serialize,
            key_deserializer=key_serde.deserialize,
            initial=initial,
            fn=fn,
            emit=emit,
            late=self.late,
            idle_close_ms=self.idle_close_ms,
        )
        return stream._then(node, key_serde=windowed_serde(key_serde), value_serde=value_serde)


def _zero() -> int:
    return 0


def _plus_one(acc: int, _value: Any) -> int:
    return acc + 1


def _add(a: int, b: int) -> int:
    return a + b
