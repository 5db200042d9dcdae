"""The orchestrator: one node per workflow, reading ``<app>.<workflow>.events``.

Each event is one transition, inside the task's commit cycle (so inside one Kafka transaction):
update the journal, re-run (or resume) the workflow function against it, and send whatever the
function asks for next — step commands, timers, emitted records. Hot instances keep their
suspended coroutine in memory; after a restart, a rebalance, an eviction or an aborted cycle the
function is replayed from the journal instead, which the determinism check keeps exact.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from streamflow.errors import NonDeterminism
from streamflow.topology.nodes import Node, Push
from streamflow.topology.specs import StoreSpec, TopicSpec
from streamflow.workflow.api import StepDef, WorkflowDef
from streamflow.workflow.context import SUSPEND, ContinueAsNew, WorkflowContext
from streamflow.workflow.journal import (
    CANCELLED,
    COMPENSATED,
    COMPENSATING,
    COMPENSATION_BASE,
    COMPLETED,
    FAILED,
    RUNNING,
    TERMINAL,
    Journal,
    entry_key,
)
from streamflow.serde.avro import AvroSerde
from streamflow.workflow.payloads import args_digest, dumps, pack, parameter_types, rebuild, unpack

log = logging.getLogger(__name__)

CACHE_SIZE = 10_000


def timer_key(due_ms: int, instance_id: str, seq: int) -> bytes:
    """Timers sort by due time: the punctuator reads the store's head and stops at the future."""
    return due_ms.to_bytes(8, "big") + instance_id.encode() + b"\x00" + str(seq).encode()


@dataclass
class Effects:
    """What one transition does besides journaling; bound to the task running it."""

    orchestrator: _Orchestrator
    rt: Any
    now_ms: int

    @property
    def node(self) -> WorkflowNode:
        return self.orchestrator.node

    def send_command(self, journal: Journal, seq: int, sdef: StepDef, args: list, attempt: int) -> None:
        instance_id = journal.id
        # The reply names this task's partition explicitly: whatever partitioner started the
        # instance, its events keep arriving where its journal lives.
        command = {"wf": journal.header["workflow"], "id": instance_id, "seq": seq,
                   "attempt": attempt, "args": args, "reply": self.node.events.name,
                   "rp": self.rt.partition, "ikey": f"{instance_id}:{seq}"}
        key = str(args[0]) if sdef.is_entity else instance_id
        self.rt.send(self.node.step_topics[sdef.name], key.encode(), dumps(command), None, None, None)

    def start_step(self, journal: Journal, seq: int, sdef: StepDef, args: list) -> None:
        journal.put_entry({"seq": seq, "kind": "step", "name": sdef.name,
                           "digest": args_digest(sdef.name, sdef.args, args), "status": "pending", "attempt": 1,
                           "args": args, "started_ms": self.now_ms})
        self.send_command(journal, seq, sdef, args, 1)

    def start_timer(self, journal: Journal, seq: int, kind: str, due_ms: int, what: str) -> None:
        journal.put_entry({"seq": seq, "kind": "sleep", "name": kind, "digest": what,
                           "status": "pending", "due_ms": due_ms})
        self.orchestrator.add_timer(due_ms, journal.id, seq, "sleep")

    def wait_signal(self, journal: Journal, seq: int, name: str, timeout_ms: int | None) -> None:
        entry = journal.put_entry({"seq": seq, "kind": "signal", "name": name,
                                   "digest": str(timeout_ms), "status": "pending"})
        inbox = journal.header.setdefault("signals", {}).get(name)
        if inbox:
            # Signals sent before the wait are kept in the inbox, oldest first.
            entry.update(status="done", result=inbox.pop(0))
            journal.header_dirty = True
        elif timeout_ms is not None:
            self.orchestrator.add_timer(self.now_ms + timeout_ms, journal.id, seq, "signal_timeout")

    def avro_serdes(self, topic: str) -> tuple[AvroSerde | None, AvroSerde | None]:
        """The Avro key and value serdes of ``topic`` (None where it is not Avro)."""
        spec = self.node.topics.get(topic)
        if spec is None:
            return None, None
        return (spec.key_serde if isinstance(spec.key_serde, AvroSerde) else None,
                spec.value_serde if isinstance(spec.value_serde, AvroSerde) else None)

    def emit(self, topic: str, key: Any, value: Any) -> None:
        spec = self.node.topics.get(topic)
        if spec is None:
            raise KeyError(f"ctx.emit: topic {topic!r} is not declared; call app.topic({topic!r}, ...)")
        self.rt.send(topic, None if key is None else spec.key_serde.serialize(key),
                     None if value is None else spec.value_serde.serialize(value), None, None, None)


@dataclass
class _Live:
    coroutine: Any
    ctx: WorkflowContext


@dataclass(eq=False)
class WorkflowNode(Node):
    """Runs every version of one workflow for the instances of one partition."""

    workflow: str = ""
    versions: dict[int, WorkflowDef] = field(default_factory=dict)
    steps: dict[Any, StepDef] = field(default_factory=dict)
    events: TopicSpec = None  # type: ignore[assignment]
    step_topics: dict[str, str] = field(default_factory=dict)
    topics: dict[str, TopicSpec] = field(default_factory=dict)
    instances: StoreSpec = None  # type: ignore[assignment]
    timers: StoreSpec = None  # type: ignore[assignment]
    kind: str = field(default="workflow", init=False)

    def detail(self) -> str:
        versions = ", ".join(f"v{v}" for v in sorted(self.versions))
        return f"{versions}; stores {self.instances.name}, {self.timers.name}"

    def stores(self) -> list[StoreSpec]:
        return [self.instances, self.timers]

    def build(self, rt: Any, downstream: list[Push]) -> Push:
        return _Orchestrator(self, rt).push


class _Orchestrator:
    """The per-task state of a WorkflowNode: the store handles, live coroutines, next timer."""

    def __init__(self, node: WorkflowNode, rt: Any) -> None:
        self.node, self.rt = node, rt
        self.store = rt.store(node.instances.name)
        self.timers = rt.store(node.timers.name)
        self.live: OrderedDict[str, _Live] = OrderedDict()
        self.journals: OrderedDict[str, Journal] = OrderedDict()
        self.next_due: int | None = -1  # -1: unknown, look at the store
        rt.schedule(self.due, self.fire)
        rt.on_abort(self.forget)

    # -- events ----------------------------------------------------------------------------------

    def push(self, key: Any, event: dict, _sf_node: Any = None) -> None:
        self.handle(str(event.get("id") or key), event, self.rt.now_ms())

    def handle(self, instance_id: str, event: dict, now_ms: int) -> None:
        effects = Effects(self, self.rt, now_ms)
        journal = self._journal(instance_id)
        kind = event.get("type")
        if kind == "start":
            if journal is not None:
                log.debug("duplicate start of %s ignored (idempotent start)", instance_id)
                return
            journal = self._start(instance_id, event, now_ms)
        elif journal is None:
            log.warning("event %s for unknown instance %s of workflow %s dropped to DLQ",
                        kind, instance_id, self.node.workflow)
            raise LookupError(f"no instance {instance_id!r} of workflow {self.node.workflow!r} "
                              f"(event {kind!r})")
        elif not self._apply(journal, event, effects):
            self._save(journal)
            return
        self._advance(journal, effects)
        journal.set(updated_ms=now_ms)
        self._save(journal)

    def _journal(self, instance_id: str) -> Journal | None:
        journal = self.journals.get(instance_id)
        if journal is not None:
            self.journals.move_to_end(instance_id)
            return journal
        journal = Journal.load(self.store, instance_id)
        if journal is not None:
            self.journals[instance_id] = journal
            while len(self.journals) > CACHE_SIZE:  # saved every transition: safe to drop
                self.journals.popitem(last=False)
        return journal

    def _save(self, journal: Journal) -> None:
        journal.save(self.store)
        if journal.status in TERMINAL:
            self.journals.pop(journal.id, None)
            self._drop_live(journal.id)

    def _start(self, instance_id: str, event: dict, now_ms: int) -> Journal:
        versions = self.node.versions
        version = event.get("version") or max(versions)
        wdef = versions.get(version)
        # An Avro input is journaled packed with the code's schema (a JSON client sent it plain).
        header = {"id": instance_id, "workflow": self.node.workflow, "version": version, "run": 1,
                  "status": RUNNING, "started_ms": now_ms,
                  "input": pack(wdef.input, event.get("input")) if wdef else event.get("input"),
                  "signals": {}}
        journal = Journal(instance_id, header, header_dirty=True)
        if version not in versions:
            journal.set(status=FAILED, error={"type": "UnknownVersion", "message":
                        f"version {version} of {self.node.workflow!r} is not registered"})
        self.journals[instance_id] = journal
        return journal

    def _apply(self, journal: Journal, event: dict, effects: Effects) -> bool:
        """Fold one event into the journal; True when the workflow should run on."""
        kind = event["type"]
        if kind == "signal":
            return self._signal(journal, event["name"], event.get("payload"))
        if kind == "cancel":
            if journal.status == RUNNING:
                journal.set(cancel_requested=True, status=COMPENSATING)
                self._drop_live(journal.id)
            return journal.status == COMPENSATING
        entry = journal.entries.get(event.get("seq", -1))
        if entry is None or entry["status"] != "pending":
            return False  # a duplicate or late reply (e.g. after a retry timer fired): ignore
        if kind == "timer":
            return self._timer(journal, entry, event["timer"], effects)
        if entry.get("attempt") != event.get("attempt"):
            return False
        if kind == "step_result":
            entry.update(status="done", result=event.get("result"), finished_ms=effects.now_ms)
        elif kind == "step_failed":
            sdef = self.node.steps[entry["name"]]
            attempt = entry["attempt"]
            if event.get("retryable", True) and attempt < sdef.retry.attempts:
                # Retries wait on a durable timer, never in the worker: other instances go on.
                delay_ms = int(sdef.retry.backoff.delay(attempt) * 1000)
                entry.update(attempt=attempt + 1, last_error=event.get("error"))
                self.add_timer(effects.now_ms + delay_ms, journal.id, entry["seq"], "retry")
                journal.touch(entry["seq"])
                return False
            entry.update(status="failed", error=event.get("error"), finished_ms=effects.now_ms)
        else:
            raise ValueError(f"unknown workflow event type {kind!r}")
        journal.touch(entry["seq"])
        return True

    def _signal(self, journal: Journal, name: str, payload: Any) -> bool:
        wdef = self.node.versions.get(journal.header["version"])
        serde = wdef.signal_serde(name) if wdef is not None else None
        if serde is not None:
            payload = pack(serde, payload)
        waiting = [e for s, e in sorted(journal.entries.items())
                   if e["kind"] == "signal" and e["name"] == name and e["status"] == "pending"]
        if waiting:
            waiting[0].update(status="done", result=payload)
            journal.touch(waiting[0]["seq"])
            return True
        journal.header.setdefault("signals", {}).setdefault(name, []).append(payload)
        journal.header_dirty = True
        return False

    def _timer(self, journal: Journal, entry: dict, timer: str, effects: Effects) -> bool:
        if timer == "retry":
            effects.send_command(journal, entry["seq"], self.node.steps[entry["name"]],
                                 entry["args"], entry["attempt"])
            return False
        if timer == "signal_timeout":
            entry.update(status="done", timed_out=True)
        else:
            entry.update(status="done")
        journal.touch(entry["seq"])
        return True

    # -- running the workflow function -----------------------------------------------------------

    def _advance(self, journal: Journal, effects: Effects) -> None:
        if journal.status == COMPENSATING:
            self._compensate(journal, effects)
            return
        if journal.status != RUNNING:
            return
        wdef = self.node.versions.get(journal.header["version"])
        if wdef is None:
            log.error("instance %s runs %s v%s, which this worker does not register; keep old "
                      "versions registered until their instances finish", journal.id,
                      self.node.workflow, journal.header["version"])
            return
        live = self.live.get(journal.id)
        if live is not None and live.ctx.journal is not journal:
            self._drop_live(journal.id)  # its journal was evicted and reloaded: replay instead
            live = None
        if live is None:
            ctx = WorkflowContext(journal, effects, self.node.steps, wdef)
            types = parameter_types(wdef.fn)
            arg = rebuild(types[0], unpack(wdef.input, journal.header["input"],
                                           f"the input of instance {journal.id!r}")) if types else None
            coroutine = wdef.fn(ctx, arg) if types else wdef.fn(ctx)
            live = _Live(coroutine, ctx)
        else:
            self.live.move_to_end(journal.id)
        live.ctx.effects = effects
        try:
            yielded = live.coroutine.send(None)
        except StopIteration as done:
            journal.set(status=COMPLETED, result=pack(wdef.result, done.value), finished_ms=effects.now_ms)
            self.live.pop(journal.id, None)
            return
        except ContinueAsNew as new_run:
            self._continue_as_new(journal, new_run.input, effects)
            return
        except NonDeterminism as exc:
            log.warning("%s", exc)
            self._fail(journal, exc, effects, compensate=False)
            return
        except Exception as exc:  # the workflow raised: it failed for good
            self._fail(journal, exc, effects, compensate=True)
            return
        if yielded is not SUSPEND:
            self._close(live)
            self._fail(journal, TypeError(
                f"workflow awaited {yielded!r}; workflows may only await ctx calls"), effects,
                compensate=True)
            return
        self.live[journal.id] = live
        while len(self.live) > CACHE_SIZE:
            _, evicted = self.live.popitem(last=False)
            self._close(evicted)

    def _fail(self, journal: Journal, exc: BaseException, effects: Effects, compensate: bool) -> None:
        self._drop_live(journal.id)
        error = {"type": type(exc).__name__, "message": str(exc)}
        if compensate and journal.compensations():
            journal.set(status=COMPENSATING, error=error)
            self._compensate(journal, effects)
        else:
            journal.set(status=FAILED, error=error, finished_ms=effects.now_ms)

    def _compensate(self, journal: Journal, effects: Effects) -> None:
        """Run registered compensations newest first, one at a time, each a durable step."""
        for i, comp in enumerate(reversed(journal.compensations())):
            seq = COMPENSATION_BASE + i
            entry = journal.entries.get(seq)
            if entry is None:
                effects.start_step(journal, seq, self.node.steps[comp["name"]], comp["args"])
                return
            if entry["status"] == "pending":
                return
            if entry["status"] == "failed":
                journal.set(status=FAILED, finished_ms=effects.now_ms, error={
                    "type": "CompensationFailed",
                    "message": f"compensation {comp['name']!r} failed: {entry['error']}; "
                               "the instance needs an operator"})
                return
        done = CANCELLED if journal.header.get("cancel_requested") else COMPENSATED
        journal.set(status=done, finished_ms=effects.now_ms)

    def _continue_as_new(self, journal: Journal, new_input: Any, effects: Effects) -> None:
        self._drop_live(journal.id)
        for seq in list(journal.entries):
            self.store.delete(entry_key(journal.id, seq))
        journal.entries.clear()
        journal.dirty.clear()
        journal.set(run=journal.header["run"] + 1, input=new_input, status=RUNNING,
                    signals=journal.header.get("signals", {}))
        self._advance(journal, effects)

    def _drop_live(self, instance_id: str) -> None:
        live = self.live.pop(instance_id, None)
        if live is not None:
            self._close(live)

    @staticmethod
    def _close(live: _Live) -> None:
        try:
            live.coroutine.close()
        except RuntimeError:
            pass  # a ``finally`` that awaited a ctx call while being discarded

    def forget(self) -> None:
        """The cycle aborted: in-memory journals and coroutines may be ahead of the store."""
        for live in self.live.values():
            self._close(live)
        self.live.clear()
        self.journals.clear()
        self.next_due = -1

    # -- durable timers --------------------------------------------------------------------------

    def add_timer(self, due_ms: int, instance_id: str, seq: int, kind: str) -> None:
        self.timers.put(timer_key(due_ms, instance_id, seq), {"id": instance_id, "seq": seq,
                                                              "timer": kind})
        if self.next_due is not None and self.next_due != -1:
            self.next_due = min(self.next_due, due_ms)
        elif self.next_due is None:
            self.next_due = due_ms

    def due(self, now_ms: int) -> bool:
        if self.next_due == -1:
            head = next(iter(self.timers.items()), None)
            self.next_due = None if head is None else int.from_bytes(head[0][:8], "big")
        return self.next_due is not None and self.next_due <= now_ms

    def fire(self, now_ms: int) -> None:
        fired = []
        for key, timer in self.timers.items():
            if int.from_bytes(key[:8], "big") > now_ms or len(fired) >= 1000:
                break
            fired.append((key, timer))
        for key, timer in fired:
            self.timers.delete(key)
            try:
                self.handle(timer["id"], {"type": "timer", "seq": timer["seq"],
                                          "timer": timer["timer"], "id": timer["id"]}, now_ms)
            except Exception:
                log.exception("timer %s of instance %s failed", timer["timer"], timer["id"])
        self.next_due = -1
