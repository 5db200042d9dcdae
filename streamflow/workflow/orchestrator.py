"""The orchestrator: one node per workflow, reading ``<app>.<workflow>.events``.

Each event is one transition (``workflow.transition``), applied inside the task's commit cycle,
so inside one Kafka transaction: the journal changes, the step commands, the timers and the
emitted records of an event commit together or not at all. Journals of hot instances stay
cached in memory, and so do their suspended coroutines; after a restart, a rebalance, an
eviction, an aborted cycle or a transition that raised, the function is replayed from the
journal instead, which the determinism check keeps exact.

Rolling upgrades: an event for an instance pinned to a version this worker does not register
is *parked* (store ``<workflow>-parked``, so in its changelog), never dropped, and counted
(``parked`` in the counts store, a metric). A worker that has the version and takes the
partition runs the parked events first, in the order they came, before any newer event of that
instance. The same store indexes suspended instances with the fingerprint of the code they
failed in: a worker with different code runs them again when it takes the partition (see
docs/architecture.md, "Workflow failures and upgrades").
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from streamflow.topology.nodes import Node, ProcessorRuntime, Push
from streamflow.topology.specs import StoreSpec, TopicSpec
from streamflow.workflow.api import StepDef, WorkflowDef
from streamflow.workflow.effects import Outcome
from streamflow.workflow.journal import (
    ENTRY,
    SUSPENDED,
    TERMINAL,
    Journal,
    entry_key,
    header_key,
)
from streamflow.workflow.messages import (
    Event,
    Purge,
    Resume,
    Start,
    Terminate,
    decode_event,
    dumps,
)
from streamflow.workflow.timers import RETENTION, Timer, TimerStore
from streamflow.workflow.transition import RETENTION_TIMER_SEQ, WorkflowMachine

log = logging.getLogger(__name__)

JOURNAL_CACHE_SIZE = 10_000
RECHECK_BATCH = 1_000
"""Parked instances and suspended ones looked at per punctuation after a task starts: a
backlog must not make one huge transaction."""
PARKED, SUSPENDED_INDEX = "e\x00", "s\x00"
"""Key prefixes in the parked store: ``e\0<id>\0<n:010d>`` an event, ``s\0<id>`` a
suspended instance (value: its version and code fingerprint)."""
PARKED_COUNT = "parked"
"""The counts-store key holding how many events this task keeps parked."""


@dataclass(eq=False, kw_only=True)
class WorkflowNode(Node):
    """Runs every version of one workflow for the instances of one partition."""

    workflow: str
    events: TopicSpec
    instances: StoreSpec
    timers: StoreSpec
    counts: StoreSpec | None = None
    """Instances per status, per task: kept in the same transaction as each status change, so
    a console or ``status`` reads the counts of millions of instances without reading them."""
    parked: StoreSpec | None = None
    """Events parked for versions this worker lacks, and the index of suspended instances."""
    versions: dict[int, WorkflowDef] = field(default_factory=dict)
    steps: dict[Any, StepDef] = field(default_factory=dict)
    step_topics: dict[str, str] = field(default_factory=dict)
    topics: dict[str, TopicSpec] = field(default_factory=dict)
    kind: str = field(default="workflow", init=False)

    def detail(self) -> str:
        versions = ", ".join(f"v{v}" for v in sorted(self.versions))
        return f"{versions}; stores {self.instances.name}, {self.timers.name}"

    def stores(self) -> list[StoreSpec]:
        extra = [s for s in (self.counts, self.parked) if s is not None]
        return [self.instances, self.timers, *extra]

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        return Orchestrator(self, rt).push


class Orchestrator:
    """The per-task side of a WorkflowNode: journals in, transitions applied, effects out."""

    def __init__(self, node: WorkflowNode, rt: ProcessorRuntime) -> None:
        self.node, self.rt = node, rt
        self.store = rt.store(node.instances.name)
        self.timers = TimerStore(rt.store(node.timers.name))
        self.counts = rt.store(node.counts.name) if node.counts is not None else None
        self.machine = WorkflowMachine(
            node.workflow,
            node.versions,
            node.steps,
            node.topics,
            node.events.name,
            rt.partition,
            rt.max_payload_bytes,
        )
        # A journal value holds two payloads (a call's arguments and result, or the input
        # and the result): values over a record are written as chunks (state/chunked_values).
        self.store.max_value_bytes = self.machine.max_journal_bytes
        self.journals: OrderedDict[str, Journal] = OrderedDict()
        self.parked = rt.store(node.parked.name) if node.parked is not None else None
        self.parked_ids: dict[str, _Held] = {}
        """Instances with parked events: their newer events wait behind them."""
        self._parked_loaded = False
        """``parked_ids`` is read from the store on first use, never here: a task is built
        before its stores are restored from their changelogs."""
        self._recheck_after: str | None = None
        """Where the start-up look at parked and suspended instances stands (None: done)."""
        if self.parked is not None:
            self._recheck_after = ""
            rt.schedule(lambda now_ms: self._recheck_after is not None, self.recheck)
        rt.schedule(self.timers.due, self.fire)
        rt.on_abort(self.forget)

    # -- events ----------------------------------------------------------------------------------

    def push(self, key: Any, raw: Any, _sf_node: Any = None) -> None:
        event = decode_event(raw, None if key is None else str(key))
        self.handle(event, self.rt.now_ms())

    def handle(self, event: Event, now_ms: int) -> None:
        journal = self._journal(event.id)
        # Operators' terminate and purge need no workflow code: never parked.
        if self.parked is not None and not isinstance(event, (Terminate, Purge)):
            if not self._parked_loaded:
                self._load_parked()
            held = self.parked_ids.get(event.id)
            if journal is not None:
                version = journal.header.get("version")
            elif held is not None and held.version is not None:
                version = held.version  # a parked start pinned it
            else:
                version = event.version if isinstance(event, Start) else None
            ended = journal is not None and journal.status in TERMINAL
            if not ended and not self.machine.knows(version):
                self._park(event, version)
                return
            if held is not None:
                self._unpark(event.id, now_ms)  # the older events first, in their order
                try:
                    self._transition(self._journal(event.id), event, now_ms)
                except BaseException:
                    # The task rolls the store back (the parked events are there again):
                    # so must this index, or they would wait until the next restart.
                    self.parked_ids[event.id] = held
                    raise
                return
        self._transition(journal, event, now_ms)

    def _transition(self, journal: Journal | None, event: Event, now_ms: int) -> None:
        try:
            outcome = self.machine.apply(journal, event, now_ms)
            self._apply(outcome)
        except BaseException:
            # The transition (or writing its outcome: an oversize command) may have changed
            # the cached journal before it raised: forget it, so the next event starts from
            # what was last saved (the task rolls the store back and dead-letters the event).
            self.journals.pop(event.id, None)
            self.machine.drop_live(event.id)
            raise

    # -- parked events (rolling upgrades) -------------------------------------------------------

    def _load_parked(self) -> None:
        """The index of parked instances, from the store (at start, and after an abort)."""
        assert self.parked is not None
        self.parked_ids.clear()
        self._parked_loaded = True
        for key, raw in self.parked.prefix_items(PARKED.encode()):
            instance_id, number = _parked_id(key), _parked_number(key)
            held = self.parked_ids.get(instance_id) or _Held()
            held.next = max(held.next, number + 1)
            if isinstance(raw, dict) and raw.get("type") == "start" and raw.get("version"):
                held.version = int(raw["version"])
            self.parked_ids[instance_id] = held
        self._recheck_after = ""

    def _park(self, event: Event, version: int | None) -> None:
        assert self.parked is not None
        held = self.parked_ids.get(event.id)
        if held is None:
            held = self.parked_ids[event.id] = _Held()
        if isinstance(event, Start) and event.version is not None:
            held.version = event.version
        self.parked.put(f"{PARKED}{event.id}\x00{held.next:010d}", event.to_json())
        held.next += 1
        self._count(PARKED_COUNT, +1)
        self._metric("parked")
        log.warning(
            "%s for instance %s of %s parked: it runs version %s, which this worker does not "
            "register; a worker with that version runs it when it owns partition %d",
            type(event).__name__,
            event.id,
            self.node.workflow,
            version,
            self.rt.partition,
        )

    def _unpark(self, instance_id: str, now_ms: int) -> None:
        """Run the instance's parked events in the order they came (this worker has its
        version). One that raises is dead-lettered alone, as it would have been on arrival."""
        assert self.parked is not None
        prefix = f"{PARKED}{instance_id}\x00".encode()
        held = list(self.parked.prefix_items(prefix))
        self.parked_ids.pop(instance_id, None)
        for key, raw in held:
            self.parked.delete(key)
            self._count(PARKED_COUNT, -1)
            event = decode_event(raw)
            self._guarded(event, now_ms, "parked event")
        self._metric("unparked", len(held))

    def recheck(self, now_ms: int) -> None:
        """Once after the task starts (in batches): run parked events this worker now has the
        version of, and suspended instances whose code differs from what they failed in."""
        assert self.parked is not None
        if not self._parked_loaded:
            self._load_parked()
        after = self._recheck_after or ""
        seen = 0
        for key, value in self.parked.items():
            name = key if isinstance(key, str) else key.decode()
            if name <= after:
                continue
            if seen >= RECHECK_BATCH:
                return  # the rest in the next punctuation
            seen += 1
            self._recheck_after = name
            if name.startswith(SUSPENDED_INDEX):
                instance_id = name[len(SUSPENDED_INDEX) :]
                wdef = self.machine.versions.get(value.get("version"))
                if wdef is not None and self.machine.fingerprint(wdef) != value.get("code"):
                    log.info("instance %s: new code for %s, running it again", instance_id, wdef)
                    self._guarded(Resume(instance_id), now_ms, "resume")
            elif name.startswith(PARKED):
                instance_id = _parked_id(name)
                held = self.parked_ids.get(instance_id)
                if held is None:
                    continue  # already run
                journal = self._journal(instance_id)
                version = journal.header.get("version") if journal is not None else held.version
                if self.machine.knows(version):
                    self._unpark(instance_id, now_ms)
        self._recheck_after = None

    def _guarded(self, event: Event, now_ms: int, stage: str) -> None:
        """Handle an event this task made itself (a timer, a parked event): one that raises
        is rolled back and dead-lettered alone, and the others go on."""
        savepoint = self.rt.savepoint()
        try:
            self._transition(self._journal(event.id), event, now_ms)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - one bad event must not stop the others
            self.rt.rollback(savepoint)
            self.rt.dead_letter_record(
                self.node.events.name,
                event.id.encode(),
                dumps(event.to_json()),
                exc,
                stage,
                f"{self.node.kind}:{self.node.name}",
            )

    def _count(self, key: str, delta: int) -> None:
        if self.counts is not None:
            self.counts.put(key, max(0, self.counts.get(key, 0) + delta))

    def _metric(self, what: str, n: int = 1) -> None:
        metrics = self.rt.step_executor.metrics
        if metrics is not None and n:
            metrics.workflow_event(self.node.workflow, what, n)

    def _apply(self, outcome: Outcome) -> None:
        """Write what the transition decided: nothing here raises on user data (every value
        was encoded by the transition), so an outcome is applied whole."""
        journal = outcome.journal
        assert journal is not None
        if outcome.purge:
            self._purge(journal)
            return
        commands: list[tuple[str, bytes, bytes | None]] = [
            (
                self.node.step_topics[sdef.name],
                (str(cmd.args[0]) if sdef.is_entity else cmd.id).encode(),
                encoded,
            )
            for (sdef, cmd), encoded in zip(outcome.commands, outcome.command_bytes, strict=True)
        ]
        commands.extend(
            (self.node.step_topics[sdef.name], key.encode(), dumps(cancel.to_json()))
            for sdef, cancel, key in outcome.step_cancels
        )
        for seq in outcome.dropped_entries:
            self.store.delete(entry_key(journal.id, seq))
        journal.save(self.store)
        if outcome.signal_dropped:
            self._metric("signal_dropped")
        if self.parked is not None:
            index = SUSPENDED_INDEX + journal.id
            if journal.status == SUSPENDED:  # (again, when it was run and failed once more)
                suspended = journal.header.get("suspended") or {}
                version = journal.header.get("version")
                self.parked.put(index, {"version": version, "code": suspended.get("code")})
            elif journal.saved_status == SUSPENDED:
                self.parked.delete(index)
        if journal.status != journal.saved_status:
            if journal.saved_status is not None:
                self._count(journal.saved_status, -1)
            self._count(journal.status, +1)
            journal.saved_status = journal.status
            metrics = self.rt.step_executor.metrics
            if metrics is not None:
                metrics.workflow_transition(journal.header.get("workflow", "?"), journal.status)
        for timer in outcome.cancelled_timers:
            self.timers.delete(timer)
        for timer in outcome.timers:
            self.timers.add(timer)
        send = self.rt.send
        for topic, kb, vb in commands:
            send(topic, kb, vb, None, None, None)
        for topic, key, value in outcome.emits:
            send(topic, key, value, None, None, None)
        if journal.status in TERMINAL:
            self.journals.pop(journal.id, None)
        else:
            self._cache(journal)

    def _purge(self, journal: Journal) -> None:
        """Delete a finished instance through the changelog (tombstones): header, entries,
        its count. Its id is free again: a later start begins a new instance."""
        prefix = (journal.id + ENTRY).encode()
        for key, _ in list(self.store.prefix_items(prefix)):
            self.store.delete(key if isinstance(key, str) else key.decode())
        self.store.delete(header_key(journal.id))
        expires = journal.header.get("expires_ms")
        if expires is not None:  # purged before its retention ended: its timer goes too
            self.timers.delete(Timer(int(expires), journal.id, RETENTION_TIMER_SEQ, RETENTION))
        if journal.saved_status is not None:
            self._count(journal.saved_status, -1)
        self.journals.pop(journal.id, None)
        self.machine.drop_live(journal.id)
        self._metric("purged")

    def _journal(self, instance_id: str) -> Journal | None:
        journal = self.journals.get(instance_id)
        if journal is not None:
            self.journals.move_to_end(instance_id)
            return journal
        return Journal.load(self.store, instance_id)

    def _cache(self, journal: Journal) -> None:
        self.journals[journal.id] = journal
        self.journals.move_to_end(journal.id)
        while len(self.journals) > JOURNAL_CACHE_SIZE:  # saved every transition: safe to drop
            self.journals.popitem(last=False)

    def forget(self) -> None:
        """The cycle aborted: in-memory journals and coroutines may be ahead of the store."""
        self.machine.forget()
        self.journals.clear()
        self.timers.forget()
        if self.parked is not None:  # read the index again, and look at what waits from the top
            self._parked_loaded = False
            self._recheck_after = ""

    # -- durable timers --------------------------------------------------------------------------

    def fire(self, now_ms: int) -> None:
        """Fire due timers, each as one event. A timer whose transition raises goes to the
        dead-letter topic as the event it would have been, so an operator can replay it."""
        for timer in list(self.timers.take_due(now_ms)):
            event = timer.event()
            if self.parked is not None:
                self.handle_guarded(event, now_ms)
            else:
                self._guarded(event, now_ms, "timer")

    def handle_guarded(self, event: Event, now_ms: int) -> None:
        """A timer of an instance whose version this worker lacks is parked like any event."""
        savepoint = self.rt.savepoint()
        try:
            self.handle(event, now_ms)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - one bad timer must not stop the others
            self.rt.rollback(savepoint)
            self.journals.pop(event.id, None)
            self.machine.drop_live(event.id)
            self.rt.dead_letter_record(
                self.node.events.name,
                event.id.encode(),
                dumps(event.to_json()),
                exc,
                "timer",
                f"{self.node.kind}:{self.node.name}",
            )


@dataclass
class _Held:
    """An instance's parked events: the number the next one gets, and the version its parked
    start pinned (None: the instance exists, its journal says)."""

    next: int = 0
    version: int | None = None


def _parked_id(key: str | bytes) -> str:
    name = key if isinstance(key, str) else key.decode()
    return name[len(PARKED) :].rsplit("\x00", 1)[0]


def _parked_number(key: str | bytes) -> int:
    name = key if isinstance(key, str) else key.decode()
    return int(name.rsplit("\x00", 1)[1])
