"""The fluent stream DSL users write: ``app.stream(topic).map(...).aggregate(...).to(topic)``.

Each call adds a node to the graph and returns a new ``Stream`` positioned on it, so one stream
can fan out into several pipelines. Nothing runs here: the runtime builds tasks from the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from streamflow.errors import TopologyError
from streamflow.serde.base import BYTES, JSON, STR, Serde, resolve_serde
from streamflow.topology.graph import Topology
from streamflow.topology.nodes import (
    AggregateNode,
    BranchNode,
    FilterNode,
    FlatMapNode,
    ForeachNode,
    JoinNode,
    KeyByNode,
    MapNode,
    Node,
    ProcessNode,
    SinkNode,
    SourceNode,
    TableJoinNode,
    TableSourceNode,
)
from streamflow.topology.options import JoinHow, Late, StreamJoinHow
from streamflow.topology.specs import REPARTITION_CONFIG, StoreSpec, TopicKind, TopicSpec

if TYPE_CHECKING:
    from streamflow.topology.windowed_stream import WindowedStream
    from streamflow.topology.windows import SessionWindows, SlidingWindows, TimeWindows


TABLE_JOINS = ("inner", "left", "outer")


class Table:
    """A store holding the last value per key (of a topic, or of a stream's results);
    streams and tables join against it by key."""

    def __init__(self, topology: Topology, store: StoreSpec, key_serde: Serde, node: Node) -> None:
        self._topology, self.store, self.key_serde, self._node = topology, store, key_serde, node

    def join(
        self,
        other: Table,
        joiner: Callable[[Any, Any], Any],
        *,
        how: JoinHow = "inner",
        name: str | None = None,
        value: str | Serde = "json",
    ) -> Stream:
        """A table joined with ``other`` by key that stays current as either side changes:
        each change of either side emits the joined row ``joiner(this, other)`` for its key,
        or a tombstone (None) when the row stops existing. ``how``: ``"inner"`` (both sides
        present), ``"left"`` (this side present) or ``"outer"`` (either). Both tables must be
        co-partitioned (checked at start)."""
        if how not in TABLE_JOINS:
            raise TopologyError(f"join how={how!r}: use 'inner', 'left' or 'outer'")
        name = name or self._topology.unique_name("table-join")
        out = MapNode(name, fn=_identity)
        for side, node, mine, theirs in (
            ("left", self._node, self.store, other.store),
            ("right", other._node, other.store, self.store),
        ):
            join = TableJoinNode(
                f"{name}-{side}", mine=mine, theirs=theirs, joiner=joiner, how=how, side=side
            )
            node.children.append(join)
            join.children.append(out)
        return Stream(self._topology, out, self.key_serde, resolve_serde(value))


class Stream:
    """A position in the graph, with the serdes records have at that point."""

    def __init__(
        self, topology: Topology, node: Node, key_serde: Serde, value_serde: Serde
    ) -> None:
        self._topology = topology
        self._node = node
        self.key_serde = key_serde
        self.value_serde = value_serde

    def _then(
        self, node: Node, key_serde: Serde | None = None, value_serde: Serde | None = None
    ) -> Stream:
        self._node.children.append(node)
        return Stream(
            self._topology, node, key_serde or self.key_serde, value_serde or self.value_serde
        )

    def _name(self, kind: str, name: str | None) -> str:
        return name or self._topology.unique_name(kind)

    # -- stateless -------------------------------------------------------------------------------

    def map(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        value: str | Serde | None = None,
        with_key: bool = False,
    ) -> Stream:
        """A new value per record, ``fn(value)`` (``with_key``: ``fn(key, value)``); the key
        stays (so partitioning stays valid)."""
        return self._then(
            MapNode(self._name("map", name), fn=fn, with_key=with_key),
            value_serde=None if value is None else resolve_serde(value),
        )

    def filter(self, predicate: Callable[[Any], bool], *, name: str | None = None) -> Stream:
        return self._then(FilterNode(self._name("filter", name), predicate=predicate))

    def flat_map(self, fn: Callable[[Any], Iterable[Any]], *, name: str | None = None) -> Stream:
        """Zero or more values per record, each under the record's key."""
        return self._then(FlatMapNode(self._name("flat_map", name), fn=fn))

    def branch(
        self, *predicates: Callable[[Any], bool], otherwise: bool = False, name: str | None = None
    ) -> list[Stream]:
        """One stream per predicate (first match wins); ``otherwise`` adds a catch-all stream."""
        preds: list[Callable[[Any], bool] | None] = list(predicates)
        if otherwise:
            preds.append(None)
        node = BranchNode(self._name("branch", name), predicates=preds)
        self._node.children.append(node)
        branches = []
        for i in range(len(preds)):
            child = MapNode(f"{node.name}-{i}", fn=_identity)
            node.children.append(child)
            branches.append(Stream(self._topology, child, self.key_serde, self.value_serde))
        return branches

    def foreach(self, fn: Callable[[Any, Any], None], *, name: str | None = None) -> None:
        self._then(ForeachNode(self._name("foreach", name), fn=fn))

    # -- re-keying -------------------------------------------------------------------------------

    def key_by(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        key: str | Serde | None = None,
        value: str | Serde | None = None,
        partitions: int | None = None,
        with_key: bool = False,
    ) -> Stream:
        """Re-key by ``fn(value)`` (``with_key``: ``fn(key, value)``, e.g. a windowed result's
        ``key.key``) through ``<app>-<name>-repartition``.

        Records with equal new keys land in one partition, so the aggregation after this
        sees every record of a key in one task, in order.
        """
        name = self._name("key_by", name)
        key_serde = self.key_serde if key is None else resolve_serde(key)
        value_serde = self.value_serde if value is None else resolve_serde(value)
        topic = self._topology.add_topic(
            TopicSpec(
                f"{self._topology.app_name}-{name}-repartition",
                key_serde,
                value_serde,
                partitions,
                TopicKind.REPARTITION,
                REPARTITION_CONFIG,
            )
        )
        self._then(KeyByNode(name, fn=fn, with_key=with_key))._then(
            SinkNode(f"{name}-sink", topic=topic)
        )
        source = SourceNode(f"{name}-source", topic=topic)
        self._topology.add_source(topic, source)
        return Stream(self._topology, source, key_serde, value_serde)

    # -- stateful --------------------------------------------------------------------------------

    def aggregate(
        self,
        store: str,
        *,
        initial: Callable[[], Any],
        fn: Callable[[Any, Any], Any],
        value: str | Serde = "json",
        ttl: timedelta | None = None,
    ) -> Stream:
        """Fold records per key into ``store``; the result streams every updated aggregate.
        ``ttl``: a key not updated for that long starts again from ``initial()``."""
        spec = self._topology.add_store(store, self.key_serde, resolve_serde(value), ttl)
        return self._then(
            AggregateNode(store, store=spec, initial=initial, fn=fn), value_serde=spec.value_serde
        )

    def reduce(
        self, store: str, fn: Callable[[Any, Any], Any], *, value: str | Serde | None = None
    ) -> Stream:
        """Like ``aggregate`` with the first value as the starting aggregate."""
        spec = self._topology.add_store(
            store, self.key_serde, self.value_serde if value is None else resolve_serde(value)
        )
        return self._then(
            AggregateNode(store, store=spec, initial=None, fn=fn), value_serde=spec.value_serde
        )

    def count(self, store: str) -> Stream:
        return self.aggregate(store, initial=_zero, fn=_plus_one)

    def to_table(self, store: str, *, name: str | None = None) -> Table:
        """Materialize this stream's results into ``store``, the last value per key (None
        deletes), as a table to join against or read: a windowed result's table is keyed by
        ``Windowed(key, start, end)`` (``windows.fetch_windows`` reads a key's windows)."""
        spec = self._topology.add_store(store, self.key_serde, self.value_serde)
        node = TableSourceNode(self._name("to_table", name), topic=None, store=spec)
        self._then(node)
        return Table(self._topology, spec, self.key_serde, node)

    def window(
        self,
        windows: TimeWindows | SessionWindows | SlidingWindows,
        *,
        late: Late = "dead_letter",
        idle_close: timedelta | None = None,
    ) -> WindowedStream:
        """Cut this keyed stream into windows by event time (``tumbling``, ``hopping``,
        ``sliding``, ``session``); follow with ``aggregate``, ``reduce`` or ``count``. Records
        later than the windows' grace go to the dead-letter topic (``late="drop"``: counted
        and dropped); ``idle_close`` closes windows of a quiet partition after that much
        wall-clock time."""
        from streamflow.topology.windowed_stream import WindowedStream

        return WindowedStream(self, windows, late=late, idle_close=idle_close)

    def join(
        self,
        table: Table,
        joiner: Callable[[Any, Any], Any],
        *,
        how: StreamJoinHow = "inner",
        left: bool | None = None,
        name: str | None = None,
    ) -> Stream:
        """Enrich each record with the table's current value for its key (co-partitioned).
        ``how="left"`` also passes records whose key the table lacks (the joiner gets None);
        ``left=True`` is the older spelling of it."""
        if left is not None:
            how = "left" if left else "inner"
        if how not in ("inner", "left"):
            raise TopologyError(f"stream.join how={how!r}: use 'inner' or 'left'")
        return self._then(
            JoinNode(
                self._name("join", name),
                table_store=table.store,
                joiner=joiner,
                inner=how == "inner",
            )
        )

    def join_stream(
        self,
        other: Stream,
        joiner: Callable[[Any, Any], Any],
        *,
        within: timedelta,
        grace: timedelta = timedelta(0),
        how: JoinHow = "inner",
        late: Late = "dead_letter",
        name: str | None = None,
        value: str | Serde = "json",
    ) -> Stream:
        """Join records of this stream and ``other`` with the same key whose event times are
        at most ``within`` apart: ``joiner(this_value, other_value)`` per pair. ``how``:
        ``"inner"``; ``"left"`` also emits this side's records that joined nothing, with None,
        once they can no longer join; ``"outer"`` does so for both sides. Both streams must
        be co-partitioned (checked at start; ``key_by`` fixes it)."""
        from streamflow.topology.stream_join import StreamJoinNode

        if how not in TABLE_JOINS:
            raise TopologyError(f"join_stream how={how!r}: use 'inner', 'left' or 'outer'")
        within_ms = int(within.total_seconds() * 1000)
        if within_ms < 0:
            raise TopologyError(f"join_stream within must not be negative, not {within!r}")
        name = name or self._topology.unique_name("stream-join")
        add = self._topology.add_store
        buffers = (
            add(f"{name}-left", BYTES, self.value_serde),
            add(f"{name}-right", BYTES, other.value_serde),
        )
        indexes = (
            add(f"{name}-left-by-time", BYTES, JSON),
            add(f"{name}-right-by-time", BYTES, JSON),
        )
        times = add(f"{name}-stream-time", STR, JSON)
        out = MapNode(name, fn=_identity)
        for side, stream in (("left", self), ("right", other)):
            node = StreamJoinNode(
                f"{name}-{side}",
                side=side,
                buffers=buffers,
                indexes=indexes,
                time_store=times,
                joiner=joiner,
                key_serializer=stream.key_serde.serialize,
                key_deserializer=stream.key_serde.deserialize,
                within_ms=within_ms,
                grace_ms=int(grace.total_seconds() * 1000),
                how=how,
                late=late,
                join_name=name,
            )
            stream._node.children.append(node)
            node.children.append(out)
        return Stream(self._topology, out, self.key_serde, resolve_serde(value))

    def process(
        self,
        fn: Callable[..., None],
        *,
        stores: Iterable[str | StoreSpec] = (),
        name: str | None = None,
        value: str | Serde | None = None,
    ) -> Stream:
        """Low-level: ``fn(record, ctx)`` may read/write ``stores`` and ``ctx.forward`` records."""
        specs = [self._topology.stores[s] if isinstance(s, str) else s for s in stores]
        return self._then(
            ProcessNode(self._name("process", name), fn=fn, store_specs=specs),
            value_serde=None if value is None else resolve_serde(value),
        )

    def start_workflow(
        self,
        workflow: Any,
        *,
        id: Callable[[Any], str],
        input: Callable[[Any], Any] | None = None,
        name: str | None = None,
    ) -> None:
        """Start one ``workflow`` instance per record, idempotently by ``id(value)``.

        The start event is sent in the same transaction as the record's consumption, so a
        record starts its instance exactly once.
        """
        workflows = self._topology.workflows
        self._then(workflows.start_node(self._name("start_workflow", name), workflow, id, input))

    # -- sinks -----------------------------------------------------------------------------------

    def to(self, topic: TopicSpec | str) -> None:
        spec = self._topology.topics[topic] if isinstance(topic, str) else topic
        self._then(SinkNode(self._topology.unique_name("to"), topic=spec))


def _identity(value: Any) -> Any:
    return value


def _zero() -> int:
    return 0


def _plus_one(acc: int, _value: Any) -> int:
    return acc + 1
