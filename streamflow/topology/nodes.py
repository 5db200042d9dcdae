"""Processor nodes: each turns into one ``push(key, value)`` closure inside a task.

A task builds its sub-topology once, child first, so every node holds a direct reference to the
next callable: a record crosses the pipeline as nested function calls with no dispatch, no
per-record objects and no queue. Every closure keeps its node in a local named ``_sf_node`` so
the task can name the failing processor in a dead-letter record without a per-node ``try``.

Size: one module on purpose. Every node is small, and together they are the processor vocabulary
a reader wants side by side (how map, aggregate and join differ is the point of reading them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from streamflow.errors import SerializationError
from streamflow.topology.specs import StoreSpec, TopicSpec

if TYPE_CHECKING:  # the runtime implements what these describe; only their types are needed
    from streamflow.runtime.step_executor import StepExecutor
    from streamflow.state.store import KeyValueStore

T = TypeVar("T")

Push = Callable[[Any, Any], None]


NODE_MARKER = "_sf_node"
"""Every push closure a node builds takes ``_sf_node: Node = self`` as a default argument, so
the frame of a processor that raised names its node: ``operate/dead_letter_format`` finds the
innermost one on the traceback to say which processor failed, at no cost per record (no
wrapper, no try/except around each push)."""

Headers = list[tuple[str, bytes]] | None
Send = Callable[[str, bytes | None, bytes | None, int | None, int | None, Headers], None]
"""How a record leaves a task: ``send(topic, key, value, partition, timestamp, headers)``;
partition None: by key; timestamp None: the record's being processed."""


class SourceMessage(Protocol):
    """The record being processed, as confluent-kafka's ``Message`` (or the test driver's)
    presents it. Never an error event (the worker handles those), so topic, partition and
    offset are always there; confluent-kafka's own stubs allow None for error events."""

    def key(self) -> bytes | None: ...

    def value(self) -> bytes | None: ...

    def topic(self) -> str: ...

    def partition(self) -> int: ...

    def offset(self) -> int: ...

    def timestamp(self) -> tuple[int, int]: ...

    def headers(self) -> list[tuple[str, bytes]] | None: ...


class ProcessorRuntime(Protocol):
    """What a node needs from the task running it (implemented by ``runtime.task.Task``)."""

    msg: SourceMessage
    partition: int
    timestamp_override: int | None
    headers_override: list[tuple[str, bytes]] | None
    record_event_time: int | None
    max_record_bytes: int
    """The largest key + value of one record (the producer's ``message.max.bytes`` less
    headroom; the test driver enforces the same): larger raises ``RecordTooLarge`` at the send,
    failing the record being processed, except on workflow topics, where it goes as chunks."""
    max_payload_bytes: int
    """The largest payload (``App(max_payload_bytes=...)``): inputs, step arguments and
    results, signals; stores refuse values over it plus an envelope."""

    def store(self, name: str) -> KeyValueStore: ...

    def schedule(self, due: Callable[[int], bool], fire: Callable[[int], None]) -> None: ...

    def on_abort(self, hook: Callable[[], None]) -> None: ...

    def on_prepare_commit(self, hook: Callable[[], None]) -> None: ...

    def on_record_time(self, hook: Callable[[int], None]) -> None: ...

    def savepoint(self) -> int: ...

    def rollback(self, savepoint: int) -> None: ...

    def dead_letter(
        self, msg: SourceMessage, exc: BaseException, stage: str, processor: str
    ) -> None: ...

    def now_ms(self) -> int: ...

    def dead_letter_record(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        exc: BaseException,
        stage: str,
        processor: str,
    ) -> None: ...

    # Step tasks: attempts run on the worker's executor and finish out of order.
    step_executor: StepExecutor

    def hold_offsets(self, topic: str, committable: Callable[[int], int]) -> None: ...

    def local(self, name: str, make: Callable[[], T]) -> T: ...

    def on_close(self, hook: Callable[[], None]) -> None: ...

    def pause_input(self, topic: str) -> None: ...

    def resume_input(self, topic: str) -> None: ...

    @property
    def send(self) -> Send:
        """Send a record from the task (its collector's ``send``)."""
        ...


@dataclass(frozen=True)
class Record:
    """One record as ``process()`` functions see it."""

    key: Any
    value: Any
    timestamp: int
    headers: list[tuple[str, bytes]]
    topic: str
    partition: int
    offset: int


def _fanout(children: list[Push]) -> Push:
    if len(children) == 1:
        return children[0]
    if not children:
        return lambda key, value: None

    def push(key: Any, value: Any) -> None:
        for child in children:
            child(key, value)

    return push


@dataclass(eq=False)
class Node:
    """One processor of the graph. ``kind`` and ``detail`` are what ``describe`` prints."""

    name: str
    children: list[Node] = field(default_factory=list, init=False)
    kind: str = field(default="node", init=False)
    standalone: bool = field(default=False, init=False)
    """A processor no stream feeds (a punctuation): each task builds it on its own."""

    def detail(self) -> str:
        return ""

    def stores(self) -> list[StoreSpec]:
        return []

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        raise NotImplementedError


@dataclass(eq=False, kw_only=True)
class SourceNode(Node):
    topic: TopicSpec
    timestamp: Callable[[Any], Any] | None = None
    """Event time from the value (ms, or a datetime); None: the record's timestamp."""
    parts_store: StoreSpec | None = None
    """The topic carries chunked records (workflow topics): the task keeps their parts in
    this store until the last chunk comes (``cluster/record_chunks``)."""
    kind: str = field(default="source", init=False)

    def stores(self) -> list[StoreSpec]:
        return [] if self.parts_store is None else [self.parts_store]

    def detail(self) -> str:
        serdes = f"{self.topic.key_serde.name}/{self.topic.value_serde.name}"
        when = ", event time from the value" if self.timestamp else ""
        return f"{self.topic.name} [{serdes}]{when}"

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        nxt, extract = _fanout(downstream), self.timestamp
        if extract is None:
            return nxt

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            # The extracted time is the record's event time downstream (windows read it, and
            # sinks write it as the output's timestamp), for this record only.
            rt.timestamp_override = rt.record_event_time = event_time_ms(
                extract(value), self.topic.name
            )
            try:
                nxt(key, value)
            finally:
                rt.timestamp_override = None

        return push


def event_time_ms(value: Any, topic: str) -> int:
    """A timestamp extractor's answer as epoch milliseconds; anything else fails the record
    (to the dead-letter topic) with a message that names the topic."""
    if isinstance(value, bool) or value is None:
        raise TypeError(f"the timestamp of a record of {topic!r} is {value!r}, not a time")
    if isinstance(value, int | float):
        return int(value)
    timestamp = getattr(value, "timestamp", None)
    if callable(timestamp):  # a datetime
        # A naive one would be read in the worker's local zone: results would differ by host.
        if getattr(value, "tzinfo", None) is None:
            raise TypeError(
                f"the timestamp of a record of {topic!r} is a naive datetime ({value!r}); give "
                "it a timezone, or return epoch milliseconds"
            )
        return int(timestamp() * 1000)
    raise TypeError(
        f"the timestamp of a record of {topic!r} is a {type(value).__name__} ({value!r}), "
        "not epoch milliseconds or a datetime"
    )


@dataclass(eq=False, kw_only=True)
class MapNode(Node):
    fn: Callable[..., Any]
    with_key: bool = False
    kind: str = field(default="map", init=False)

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        nxt, fn = _fanout(downstream), self.fn
        if self.with_key:

            def push_keyed(key: Any, value: Any, _sf_node: Node = self) -> None:
                nxt(key, fn(key, value))

            return push_keyed

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            nxt(key, fn(value))

        return push


@dataclass(eq=False, kw_only=True)
class FilterNode(Node):
    predicate: Callable[[Any], bool]
    kind: str = field(default="filter", init=False)

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        nxt, predicate = _fanout(downstream), self.predicate

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            if predicate(value):
                nxt(key, value)

        return push


@dataclass(eq=False, kw_only=True)
class FlatMapNode(Node):
    fn: Callable[[Any], Iterable[Any]]
    kind: str = field(default="flat_map", init=False)

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        nxt, fn = _fanout(downstream), self.fn

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            for item in fn(value):
                nxt(key, item)

        return push


@dataclass(eq=False, kw_only=True)
class BranchNode(Node):
    """Routes each record to the first branch whose predicate holds (Kafka Streams' rule)."""

    predicates: list[Callable[[Any], bool] | None] = field(default_factory=list)
    kind: str = field(default="branch", init=False)

    def detail(self) -> str:
        return f"{len(self.predicates)} branches"

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        # children[i] is the branch of predicates[i]; None is the catch-all.
        routes = list(zip(self.predicates, downstream, strict=True))

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            for predicate, child in routes:
                if predicate is None or predicate(value):
                    child(key, value)
                    return

        return push


@dataclass(eq=False, kw_only=True)
class KeyByNode(Node):
    """Re-keys a record and writes it to a repartition topic, so equal keys meet in one task."""

    fn: Callable[..., Any]
    with_key: bool = False
    kind: str = field(default="key_by", init=False)

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        nxt, fn = _fanout(downstream), self.fn
        if self.with_key:

            def push_keyed(key: Any, value: Any, _sf_node: Node = self) -> None:
                nxt(fn(key, value), value)

            return push_keyed

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            nxt(fn(value), value)

        return push


@dataclass(eq=False, kw_only=True)
class SinkNode(Node):
    topic: TopicSpec
    kind: str = field(default="sink", init=False)

    def detail(self) -> str:
        return self.topic.name

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        topic = self.topic.name
        kser, vser = self.topic.key_serde.serialize, self.topic.value_serde.serialize
        send = rt.send

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            # Outputs carry the input's event time (Kafka Streams' rule): windows downstream
            # depend on it, and it keeps reprocessing deterministic.
            ts = rt.timestamp_override
            if ts is None:
                ts = rt.msg.timestamp()[1]
            try:
                kb = None if key is None else kser(key)
            except Exception as exc:  # noqa: BLE001 - said in plain words, then dead-lettered
                raise unencodable("key", topic, self.topic.key_serde.name, key, exc) from None
            try:
                vb = None if value is None else vser(value)
            except Exception as exc:  # noqa: BLE001
                raise unencodable("value", topic, self.topic.value_serde.name, value, exc) from None
            send(topic, kb, vb, None, ts, rt.headers_override)

        return push


_UNSET: Any = object()


def unencodable(
    what: str, topic: str, serde: str, value: Any, exc: Exception
) -> SerializationError:
    """A key or value its topic's serde cannot write, in plain words: which topic, which
    serde, what type arrived, and where such a value comes from."""
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    expected = {"str": "a str", "bytes": "bytes", "json": "JSON (dicts, lists, str, numbers)"}
    wanted = expected.get(serde, f"what the {serde} serde writes")
    return SerializationError(
        f"the {what} for topic {topic!r} is {type(value).__name__} {shown}, but the topic's "
        f"{what} serde is {serde!r} and wants {wanted} ({type(exc).__name__}: {exc}); "
        f"return {wanted} from the function that made the {what} (key_by, map, aggregate), "
        f"or declare the topic with a {what} serde that fits"
    )


@dataclass(eq=False, kw_only=True)
class AggregateNode(Node):
    """Folds each key's records into a store and forwards every new aggregate downstream."""

    store: StoreSpec
    initial: Callable[[], Any] | None = None
    fn: Callable[[Any, Any], Any]
    kind: str = field(default="aggregate", init=False)

    def detail(self) -> str:
        return f"store {self.store.name}"

    def stores(self) -> list[StoreSpec]:
        return [self.store]

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        nxt, fn, initial = _fanout(downstream), self.fn, self.initial
        store = rt.store(self.store.name)
        encode, load, save = store.key_serializer, store.get_encoded, store.put_encoded

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            kb = encode(key)
            acc = load(kb, _UNSET)
            if acc is _UNSET:
                # reduce(): the first value is the aggregate.
                acc = value if initial is None else fn(initial(), value)
            else:
                acc = fn(acc, value)
            if acc is None:
                raise ValueError(
                    f"aggregate of store {self.store.name!r} returned None for {key!r}"
                )
            save(kb, acc, key)  # encoded now: a value that cannot be fails this record
            nxt(key, acc)

        return push


@dataclass(eq=False, kw_only=True)
class TableSourceNode(Node):
    """Materializes a (compacted) topic, or a stream's results (``topic`` None), into a
    store: last value per key, None deletes."""

    topic: TopicSpec | None
    store: StoreSpec
    kind: str = field(default="table", init=False)

    def detail(self) -> str:
        return f"{'stream' if self.topic is None else self.topic.name} → store {self.store.name}"

    def stores(self) -> list[StoreSpec]:
        return [self.store]

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        store = rt.store(self.store.name)
        nxt = _fanout(downstream)

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            if value is None:
                store.delete(key)
            else:
                store.put(key, value)
            nxt(key, value)

        return push


@dataclass(eq=False, kw_only=True)
class JoinNode(Node):
    """Stream-table join: looks the record's key up in the table's store of the same task."""

    table_store: StoreSpec
    joiner: Callable[[Any, Any], Any]
    inner: bool = True
    kind: str = field(default="join", init=False)

    def detail(self) -> str:
        return f"{'inner' if self.inner else 'left'} join store {self.table_store.name}"

    def stores(self) -> list[StoreSpec]:
        return [self.table_store]

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        nxt, joiner, inner = _fanout(downstream), self.joiner, self.inner
        get = rt.store(self.table_store.name).get

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            row = get(key)
            if row is None and inner:
                return
            nxt(key, joiner(value, row))

        return push


@dataclass(eq=False, kw_only=True)
class TableJoinNode(Node):
    """One side of a table-table join: on each change of this side's table, the joined row of
    its key with the other side's current value (or a tombstone when there is none)."""

    mine: StoreSpec
    theirs: StoreSpec
    joiner: Callable[[Any, Any], Any]
    how: str
    side: str
    kind: str = field(default="table-join", init=False)

    def detail(self) -> str:
        return f"{self.how} join of store {self.mine.name} with store {self.theirs.name}"

    def stores(self) -> list[StoreSpec]:
        return [self.mine, self.theirs]

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        nxt, joiner, how = _fanout(downstream), self.joiner, self.how
        other = rt.store(self.theirs.name).get
        left_side = self.side == "left"

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            theirs = other(key)
            left, right = (value, theirs) if left_side else (theirs, value)
            if how == "inner":
                exists = left is not None and right is not None
            elif how == "left":
                exists = left is not None
            else:
                exists = left is not None or right is not None
            if exists:
                nxt(key, joiner(left, right))
            elif value is None:
                nxt(key, None)  # this side's delete took the row away: a tombstone

        return push


class ProcessorContext:
    """What a ``process()`` function may do: read/write its stores, forward records."""

    __slots__ = ("_allowed", "_nxt", "_rt")

    def __init__(self, rt: ProcessorRuntime, nxt: Push, allowed: set[str]) -> None:
        self._rt, self._nxt, self._allowed = rt, nxt, allowed

    def store(self, name: str) -> Any:
        if name not in self._allowed:
            raise KeyError(
                f"store {name!r} is not connected to this processor; "
                f"pass stores=[{name!r}] to process()"
            )
        return self._rt.store(name)

    def forward(
        self,
        key: Any,
        value: Any,
        *,
        timestamp: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        rt = self._rt
        saved = rt.timestamp_override, rt.headers_override
        rt.timestamp_override, rt.headers_override = timestamp, headers
        try:
            self._nxt(key, value)
        finally:
            rt.timestamp_override, rt.headers_override = saved


@dataclass(eq=False, kw_only=True)
class ProcessNode(Node):
    """The escape hatch: a function that sees the whole record and its stores."""

    fn: Callable[[Record, ProcessorContext], None]
    store_specs: list[StoreSpec] = field(default_factory=list)
    kind: str = field(default="process", init=False)

    def detail(self) -> str:
        names = ", ".join(s.name for s in self.store_specs)
        return f"stores [{names}]" if names else ""

    def stores(self) -> list[StoreSpec]:
        return list(self.store_specs)

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        fn = self.fn
        ctx = ProcessorContext(rt, _fanout(downstream), {s.name for s in self.store_specs})
        for spec in self.store_specs:
            rt.store(spec.name)  # open eagerly: a missing store fails at task start, not later

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            msg = rt.msg
            ts = rt.timestamp_override
            fn(
                Record(
                    key,
                    value,
                    msg.timestamp()[1] if ts is None else ts,
                    msg.headers() or [],
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                ),
                ctx,
            )

        return push


@dataclass(eq=False, kw_only=True)
class ForeachNode(Node):
    """A terminal side effect per record (at-least-once: it may run again after a failure)."""

    fn: Callable[[Any, Any], None]
    kind: str = field(default="foreach", init=False)

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        fn = self.fn

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            fn(key, value)

        return push
