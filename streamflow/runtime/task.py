"""A task: one partition of one sub-topology, with its processors and its stores.

The task is where a record becomes effects: it decodes the record, pushes it through the
processor closures, and sends failures to the dead-letter topic. It knows nothing of consumer
groups or transactions: the worker (or the test driver) decides when a cycle commits and tells
the task through ``prepare_commit`` / ``committed`` / ``aborted``.

Size: just over 450 lines because it is the runtime every processor closure is built against
(``ProcessorRuntime``: stores, timers, hooks, savepoints, dead letters); those methods share
the task's store table, hook lists and counters, and splitting them would hand the closures two
objects to keep consistent instead of one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from confluent_kafka import KafkaError, KafkaException

from streamflow.cluster.record_chunks import PART_TIMEOUT_MS, ChunkError, ChunkJoiner, is_chunk
from streamflow.kafka.record_size import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    ENVELOPE_BYTES,
)
from streamflow.operate.dead_letter_format import (
    dead_letter_headers,
    failing_processor,
    fit_dead_letter,
)
from streamflow.runtime.aligned_input import AlignedInput
from streamflow.runtime.collector import RecordCollector
from streamflow.runtime.input_offsets import Committable, InputOffsets
from streamflow.runtime.step_executor import StepExecutor
from streamflow.state.store import KeyValueStore, UndoLog
from streamflow.state.ttl_store import TtlStore
from streamflow.topology.nodes import Headers, Node, Push, SourceMessage, SourceNode
from streamflow.topology.specs import StoreSpec, SubTopology

T = TypeVar("T")
log = logging.getLogger(__name__)


def client_broken(exc: KafkaException) -> bool:
    """A produce that failed because the producer is fenced or in a fatal state (as opposed to
    a record too large, say, which is the record's fault)."""
    err = exc.args[0] if exc.args else None
    return (
        err is None
        or not hasattr(err, "fatal")
        or err.fatal()
        or err.code() in (KafkaError._STATE, KafkaError._FENCED, KafkaError._FATAL)
    )


def _no_flow_control(topic: str) -> None:
    """No consumer to pause (a task built outside a worker): what is admitted waits in memory."""


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


class _Source:
    __slots__ = ("joiner", "key_deserialize", "name", "push", "value_deserialize")

    def __init__(self, key_deserialize: Any, value_deserialize: Any, push: Any, name: str) -> None:
        self.key_deserialize, self.value_deserialize = key_deserialize, value_deserialize
        self.push, self.name = push, name
        self.joiner: ChunkJoiner | None = None
        """Joins chunked records (a workflow topic's): ``cluster/record_chunks``."""


class Task:
    """Runs records of one partition through one sub-topology."""

    def __init__(
        self,
        sub: SubTopology,
        source_nodes: Mapping[str, SourceNode],
        partition: int,
        state_dir: Path,
        collector: RecordCollector,
        dead_letter_topic: str,
        clock: Callable[[], int] | None = None,
        step_executor: StepExecutor | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.id = f"{sub.id}_{partition}"
        self.max_record_bytes = max_record_bytes
        """The largest key + value of one record the collector sends: larger store values are
        written as chunks, larger workflow records sent as chunks."""
        self.max_payload_bytes = max_payload_bytes
        """The largest payload (``App(max_payload_bytes=...)``): stores refuse a value over it
        plus ``ENVELOPE_BYTES`` at the write (the record that made it fails, not the commit)."""
        self._letter_bytes = max_payload_bytes + ENVELOPE_BYTES
        """What a dead letter may weigh before it is cut: one larger than a record goes as
        chunks (the collector chunks the dead-letter topic), so a replay sends it whole."""
        self.sub = sub
        self.partition = partition
        self.state_dir = state_dir / self.id
        self._collector = collector
        # Processors send straight through the collector: no extra Python frame per output.
        self.send = self._send = collector.send
        self._dead_letter_topic = dead_letter_topic
        self.msg: SourceMessage = cast(SourceMessage, None)  # set per record, before any push
        self.now_ms = clock or _wall_clock_ms
        """Milliseconds of the wall clock timers run on (the test driver's hand-moved clock)."""
        self.timestamp_override: int | None = None
        self.headers_override: Headers = None
        self.record_event_time: int | None = None
        """The event time a source's timestamp extractor gave the record being processed."""
        self._record_time_hooks: list[Callable[[int], None]] = []
        self.dead_lettered = 0
        self.processed = 0
        """Input records this task processed (metrics; an aborted cycle's count twice)."""
        self.rewind_on_start = False
        """Restarted on a partition the consumer kept: seek to the committed offset first."""
        self._undo: UndoLog = []
        """The writes of the record being processed, with what each replaced: a record that
        fails is rolled back to where it began. Emptied as each record starts, so it holds one
        record's writes, not the cycle's (keeping every replaced value until the commit cost
        ~3 µs a write in memory churn)."""
        self.offsets = InputOffsets()
        """Committed and staged offsets of the source partitions (the one owner of them)."""
        self.aligned: AlignedInput | None = None
        """Several source topics: records held to be processed in timestamp order (set by the
        worker, which knows the consumer's watermarks)."""
        self.stores: dict[str, KeyValueStore] = {}
        self._store_specs = {s.name: s for s in sub.stores}
        # Changelog offsets learnt from delivery reports of this cycle, applied as checkpoints.
        self._changelog_next: dict[str, int] = {}
        self.sources: dict[str, _Source] = {}
        # Wall-clock punctuators (durable timers): each returns True when it did work.
        self.punctuators: list[tuple[Callable[[int], bool], Callable[[int], None]]] = []
        # Called when a cycle aborts: processors holding in-memory state derived from the
        # (now dropped) write buffer must forget it.
        self._abort_hooks: list[Callable[[], None]] = []
        self._close_hooks: list[Callable[[], None]] = []
        self._prepare_hooks: list[Callable[[], None]] = []
        # Where step attempts run (the worker's).
        self.step_executor = step_executor or StepExecutor()
        self._locals: dict[str, Any] = {}
        self.pause_input: Callable[[str], None] = _no_flow_control
        """Stop fetching this task's partition of one source topic (set by the worker or the
        driver): a step whose lane is full pauses its own topic only, so the other steps of the
        task keep reading theirs."""
        self.resume_input: Callable[[str], None] = _no_flow_control
        try:
            for topic, node in source_nodes.items():
                push = self._build(node)
                spec = node.topic
                source = self.sources[topic] = _Source(
                    spec.key_serde.deserialize, spec.value_serde.deserialize, push, node.name
                )
                if node.parts_store is not None:
                    source.joiner = self._joiner(topic, node.parts_store.name, node.name)
            for standalone in sub.nodes:
                if standalone.standalone:
                    standalone.build(self, [])
        except BaseException:
            self.close()
            raise
        # Most sub-topologies read one topic: skip the per-record lookup by topic for them.
        self._only_source = next(iter(self.sources.values())) if len(self.sources) == 1 else None

    def _joiner(self, topic: str, store: str, source: str) -> ChunkJoiner:
        """Chunked records of ``topic`` keep their parts in ``store``; parts whose last chunk
        never comes are swept out, with a dead letter saying so."""
        joiner = ChunkJoiner(self.store(store), self.now_ms)

        def sweep(now_ms: int) -> None:
            for group, parts, size in joiner.stale_groups(now_ms):
                self.dead_letter_record(
                    topic,
                    None,
                    None,
                    ChunkError(
                        f"{parts} chunk(s) ({size} bytes) of record {group.hex()} were dropped: "
                        f"its last chunk did not come within {PART_TIMEOUT_MS // 60_000} min "
                        "(its sender stopped mid-send); send the record again"
                    ),
                    "deserialize",
                    f"source:{source}",
                )

        self.schedule(joiner.due, sweep)
        return joiner

    def _build(self, node: Node) -> Push:
        return node.build(self, [self._build(child) for child in node.children])

    # -- ProcessorRuntime ------------------------------------------------------------------------

    def store(self, name: str) -> KeyValueStore:
        store = self.stores.get(name)
        if store is None:
            spec = self._store_specs.get(name)
            if spec is None:
                raise KeyError(
                    f"task {self.id}: store {name!r} is not part of sub-topology {self.sub.id}"
                )
            path = self.state_dir / name
            if spec.ttl_ms is None:
                store = KeyValueStore(name, path, spec.key_serde, spec.value_serde)
            else:
                store = self._ttl_store(spec, path)
            store.undo = self._undo
            store.max_record_bytes = self.max_record_bytes
            store.max_value_bytes = self.max_payload_bytes + ENVELOPE_BYTES
            self.stores[name] = store
        return store

    def _ttl_store(self, spec: StoreSpec, path: Path) -> TtlStore:
        """A store whose keys expire, swept on a timer of this task (inside its cycles)."""
        assert spec.ttl_ms is not None
        store = TtlStore(
            spec.name, path, spec.key_serde, spec.value_serde, spec.ttl_ms, self.now_ms
        )
        interval = store.sweep_interval_ms()
        next_sweep = [self.now_ms() + interval]

        def due(now_ms: int) -> bool:
            return now_ms >= next_sweep[0]

        def fire(now_ms: int) -> None:
            next_sweep[0] = now_ms + interval
            store.sweep()

        self.schedule(due, fire)
        return store

    def schedule(self, due: Callable[[int], bool], fire: Callable[[int], None]) -> None:
        """Register a wall-clock punctuator: ``due(now_ms)`` is a cheap check (no transaction is
        opened unless something is due); ``fire(now_ms)`` runs inside the commit cycle."""
        self.punctuators.append((due, fire))

    def on_abort(self, hook: Callable[[], None]) -> None:
        self._abort_hooks.append(hook)

    def on_prepare_commit(self, hook: Callable[[], None]) -> None:
        """``hook()`` runs as the cycle commits, before the stores' writes go to their
        changelogs: state kept in memory per record is written once per commit."""
        self._prepare_hooks.append(hook)

    def on_record_time(self, hook: Callable[[int], None]) -> None:
        """``hook(event_time)`` runs after each record processed without error, inside the
        cycle: what moves with stream time (stream-time punctuations) hooks in here."""
        self._record_time_hooks.append(hook)

    def on_close(self, hook: Callable[[], None]) -> None:
        """``hook()`` runs when the task closes (revoked, lost, or the worker stops)."""
        self._close_hooks.append(hook)

    def hold_offsets(self, topic: str, committable: Committable) -> None:
        """Records of ``topic`` finish out of order: ``committable(position)`` says which
        offset may be committed when the consumer's position is ``position``."""
        self.offsets.hold(topic, committable)

    def local(self, name: str, make: Callable[[], T]) -> T:
        """One object per task under ``name``, made by ``make()`` on first use: what several
        processors of the task share (entity steps of one store share its key locks)."""
        value = self._locals.get(name)
        if value is None:
            value = self._locals[name] = make()
        return cast(T, value)

    def due(self, now_ms: int) -> bool:
        return any(due(now_ms) for due, _ in self.punctuators)

    def punctuate(self, now_ms: int) -> None:
        for due, fire in self.punctuators:
            if due(now_ms):
                fire(now_ms)

    # -- processing ------------------------------------------------------------------------------

    def process(self, msg: SourceMessage) -> None:
        """One record in; effects out. A failure goes to the DLQ and the task carries on."""
        self.msg = msg
        self.processed += 1
        source = self._only_source or self.sources[msg.topic()]
        try:
            kb = msg.key()
            vb = msg.value()
            key = None if kb is None else source.key_deserialize(kb)
            value = None if vb is None else source.value_deserialize(vb)
        except Exception as exc:  # noqa: BLE001 - any undecodable record is poison, not a stop
            if source.joiner is not None and is_chunk(msg.value()):
                self._chunk(source, source.joiner, msg)  # no JSON starts as a chunk does
            else:
                self.dead_letter(msg, exc, "deserialize", f"source:{source.name}")
            return
        undo = self._undo
        if undo:
            undo.clear()  # what earlier records wrote stays: only this record can be undone
        timed = bool(self._record_time_hooks)
        if timed:
            self.record_event_time = None
        try:
            source.push(key, value)
            if timed:
                self._record_time(msg)
        except KeyboardInterrupt:
            raise
        except KafkaException as exc:
            if client_broken(exc):
                raise  # not this record's fault: the worker recovers its clients
            self.rollback(0)
            self.dead_letter(msg, exc, "process", failing_processor(exc))
        except BaseException as exc:  # noqa: BLE001 - SystemExit from user code is bad input too
            self.rollback(0)
            self.dead_letter(msg, exc, "process", failing_processor(exc))

    def _chunk(self, source: _Source, joiner: ChunkJoiner, msg: SourceMessage) -> None:
        """Keep a chunk as a part, or process the record its last chunk completes (which
        starts a new undo log: the parts it deleted stay deleted if that record fails)."""
        if self._undo:
            self._undo.clear()
        try:
            whole = joiner.take(msg)
        except ChunkError as exc:
            self.rollback(0)
            self.dead_letter(msg, exc, "deserialize", f"source:{source.name}")
            return
        if whole is not None:
            self.processed -= 1  # the chunks and the record they make count as one
            self.process(whole)

    def _record_time(self, msg: SourceMessage) -> None:
        event_time = self.record_event_time
        if event_time is None:
            event_time = msg.timestamp()[1]
        for hook in self._record_time_hooks:
            hook(event_time)

    def dead_letter(
        self, msg: SourceMessage, exc: BaseException, stage: str, processor: str
    ) -> None:
        """Send the original record to ``<app>.dlq`` inside the same transaction as the rest."""
        self.dead_lettered += 1
        # A flood of poison records must not become a flood of log lines: the first few are
        # logged, then every 1000th; the DLQ holds each one with its full reason.
        if self.dead_lettered <= 5 or self.dead_lettered % 1000 == 0:
            log.warning(
                "dead-lettered #%d of task %s: %s[%d]@%d at %s (%s): %s: %s",
                self.dead_lettered,
                self.id,
                msg.topic(),
                msg.partition(),
                msg.offset(),
                processor,
                stage,
                type(exc).__name__,
                exc,
            )
        headers = dead_letter_headers(
            msg.topic(), msg.partition(), msg.offset(), msg.headers(), exc, stage, processor
        )
        key, value, headers = fit_dead_letter(msg.key(), msg.value(), headers, self._letter_bytes)
        self._send(self._dead_letter_topic, key, value, None, None, headers)

    def dead_letter_record(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        exc: BaseException,
        stage: str,
        processor: str,
    ) -> None:
        """Dead-letter a record this task made itself (a due timer), as if read from ``topic``
        at this task's partition (offset -1: it was never on the topic)."""
        self.forget_decoded()
        self.dead_lettered += 1
        log.warning(
            "dead-lettered #%d of task %s: %s from %s at %s: %s: %s",
            self.dead_lettered,
            self.id,
            stage,
            topic,
            processor,
            type(exc).__name__,
            exc,
        )
        key, value, headers = fit_dead_letter(
            key,
            value,
            dead_letter_headers(topic, self.partition, -1, None, exc, stage, processor),
            self._letter_bytes,
        )
        self._send(self._dead_letter_topic, key, value, None, None, headers)

    def savepoint(self) -> int:
        """Where the undo log stands: ``rollback(savepoint())`` undoes what follows."""
        return len(self._undo)

    def rollback(self, savepoint: int) -> None:
        """Undo every store write made since ``savepoint``, newest first: a record that fails
        leaves its stores as they were before it (its outputs cannot be unsent; the record
        goes to the dead-letter topic with them on record). Decoded views are dropped too."""
        undo = self._undo
        for i in range(len(undo) - 3, savepoint - 1, -3):
            undo[i].undo_write(undo[i + 1], undo[i + 2])
        del undo[savepoint:]
        self.forget_decoded()

    def forget_decoded(self) -> None:
        """A record's processing raised: objects it read from stores may be mutated in place;
        every store drops its decoded view and reads its bytes again."""
        for store in self.stores.values():
            store.forget_decoded()

    # -- the commit protocol ---------------------------------------------------------------------

    def prepare_commit(self) -> None:
        """Send this cycle's store writes to their changelogs, inside the open transaction."""
        for hook in self._prepare_hooks:
            hook()
        for name, store in self.stores.items():
            records = store.prepare_commit()
            if not records:
                continue
            spec = self._store_specs[name]
            send = self._send
            for kb, vb in records[:-1]:
                send(spec.changelog, kb, vb, self.partition, None, None)
            kb, vb = records[-1]
            self._collector.send_tracked(
                spec.changelog, kb, vb, self.partition, self._checkpoint_setter(name)
            )

    def _checkpoint_setter(self, name: str) -> Callable[[int], None]:
        def delivered(offset: int) -> None:
            self._changelog_next[name] = offset + 1

        return delivered

    def committed(self) -> None:
        """The transaction committed: make its writes durable in RocksDB."""
        self._undo.clear()
        for name, store in self.stores.items():
            store.apply(self._changelog_next.pop(name, None))

    def aborted(self) -> None:
        if self.aligned is not None:
            self.aligned.clear()  # the consumer is rewound: the held records come again
        self._undo.clear()
        for store in self.stores.values():
            store.abort()
        self._changelog_next.clear()
        for hook in self._abort_hooks:
            hook()

    def close(self) -> None:
        for hook in self._close_hooks:
            hook()
        self._close_hooks.clear()
        for store in self.stores.values():
            store.close()
        self.stores.clear()
