"""The orchestrator: one node per workflow, reading ``<app>.<workflow>.events``.

Each event is one transition (``workflow.transition``), applied inside the task's commit cycle,
so inside one Kafka transaction: the journal changes, the step commands, the timers and the
emitted records of an event commit together or not at all. Journals of hot instances stay
cached in memory, and so do their suspended coroutines; after a restart, a rebalance, an
eviction, an aborted cycle or a transition that raised, the function is replayed from the
journal instead, which the determinism check keeps exact.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from streamflow.topology.nodes import Node, ProcessorRuntime, Push
from streamflow.topology.specs import StoreSpec, TopicSpec
from streamflow.workflow.api import StepDef, WorkflowDef
from streamflow.workflow.journal import TERMINAL, Journal, entry_key
from streamflow.workflow.messages import Event, decode_event, dumps
from streamflow.workflow.timers import TimerStore
from streamflow.workflow.transition import Outcome, WorkflowMachine

log = logging.getLogger(__name__)

JOURNAL_CACHE_SIZE = 10_000


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
    versions: dict[int, WorkflowDef] = field(default_factory=dict)
    steps: dict[Any, StepDef] = field(default_factory=dict)
    step_topics: dict[str, str] = field(default_factory=dict)
    topics: dict[str, TopicSpec] = field(default_factory=dict)
    kind: str = field(default="workflow", init=False)

    def detail(self) -> str:
        versions = ", ".join(f"v{v}" for v in sorted(self.versions))
        return f"{versions}; stores {self.instances.name}, {self.timers.name}"

    def stores(self) -> list[StoreSpec]:
        extra = [self.counts] if self.counts is not None else []
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
            node.workflow, node.versions, node.steps, node.topics, node.events.name, rt.partition
        )
        self.journals: OrderedDict[str, Journal] = OrderedDict()
        rt.schedule(self.timers.due, self.fire)
        rt.on_abort(self.forget)

    # -- events ----------------------------------------------------------------------------------

    def push(self, key: Any, raw: Any, _sf_node: Any = None) -> None:
        event = decode_event(raw, None if key is None else str(key))
        self.handle(event, self.rt.now_ms())

    def handle(self, event: Event, now_ms: int) -> None:
        journal = self._journal(event.id)
        try:
            outcome = self.machine.apply(journal, event, now_ms)
        except BaseException:
            # The transition may have changed the cached journal before it raised: forget it,
            # so the next event starts from what was last saved (the event is dead-lettered).
            self.journals.pop(event.id, None)
            self.machine.drop_live(event.id)
            raise
        self._apply(outcome)

    def _apply(self, outcome: Outcome) -> None:
        """Write what the transition decided: nothing here raises on user data (every value
        was encoded by the transition), so an outcome is applied whole."""
        journal = outcome.journal
        assert journal is not None
        commands: list[tuple[str, bytes, bytes | None]] = [
            (
                self.node.step_topics[sdef.name],
                (str(cmd.args[0]) if sdef.is_entity else cmd.id).encode(),
                dumps(cmd.to_json()),
            )
            for sdef, cmd in outcome.commands
        ]
        for seq in outcome.dropped_entries:
            self.store.delete(entry_key(journal.id, seq))
        journal.save(self.store)
        if journal.status != journal.saved_status:
            if self.counts is not None:
                if journal.saved_status is not None:
                    left = self.counts.get(journal.saved_status, 0) - 1
                    self.counts.put(journal.saved_status, max(0, left))
                self.counts.put(journal.status, self.counts.get(journal.status, 0) + 1)
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

    # -- durable timers --------------------------------------------------------------------------

    def fire(self, now_ms: int) -> None:
        """Fire due timers, each as one event. A timer whose transition raises goes to the
        dead-letter topic as the event it would have been, so an operator can replay it."""
        for timer in list(self.timers.take_due(now_ms)):
            event = timer.event()
            try:
                self.handle(event, now_ms)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - one bad timer must not stop the others
                self.rt.dead_letter_record(
                    self.node.events.name,
                    event.id.encode(),
                    dumps(event.to_json()),
                    exc,
                    "timer",
                    f"{self.node.kind}:{self.node.name}",
                )
