"""The workflow transition: ``(journal, event, now) -> (journal changes, commands, timers)``.

This is the whole of a workflow's decision logic, and it calls out to nothing: it folds one
event into an instance's journal, runs (or resumes) the workflow function against it, and
returns what should happen — step commands to send, timers to set or delete, records to emit,
journal entries to drop. The orchestrator node applies that outcome inside the task's commit
cycle; a test applies it to nothing and looks at it (as Temporal's workflow activation returns
commands instead of calling out).

The journal is changed in place (its ``dirty`` marks say what to save). A transition that
raises leaves a journal the caller must throw away: the orchestrator evicts it and its live
coroutine, so the next event reloads the last saved state.

Size: one pure function, ``(journal, event, now) → Outcome``, with a case per event type; a
reader checking determinism wants every case in one file.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamflow.errors import NonDeterminism
from streamflow.serde.avro.serde import AvroSerde
from streamflow.topology.specs import TopicSpec
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
)
from streamflow.workflow.messages import (
    Cancel,
    Event,
    Signal,
    Start,
    StepCommand,
    StepError,
    StepFailure,
    StepResult,
    TimerFired,
)
from streamflow.workflow.payloads import args_digest, pack, parameter_types, rebuild, unpack
from streamflow.workflow.timers import RETRY, SIGNAL_TIMEOUT, SLEEP, Timer

log = logging.getLogger(__name__)

CACHE_SIZE = 10_000
"""Suspended coroutines kept per task (Temporal's sticky cache); the rest replay on demand."""


@dataclass
class Outcome:
    """What one transition wants done, besides the journal changes it marked dirty."""

    journal: Journal | None = None
    commands: list[tuple[StepDef, StepCommand]] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    cancelled_timers: list[Timer] = field(default_factory=list)
    emits: list[tuple[str, bytes | None, bytes | None]] = field(default_factory=list)
    """(topic, key, value) already serialized: a value that cannot be fails the transition."""
    dropped_entries: list[int] = field(default_factory=list)
    """Journal entries to delete from the store (``continue_as_new``)."""


@dataclass
class _Live:
    coroutine: Any
    ctx: WorkflowContext


class WorkflowMachine:
    """Every version of one workflow, with the coroutines of hot instances.

    ``reply_topic``/``reply_partition`` go into step commands, so replies come back to the
    partition holding the journal whatever partitioner started the instance.
    """

    def __init__(
        self,
        workflow: str,
        versions: Mapping[int, WorkflowDef],
        steps: Mapping[Any, StepDef],
        topics: Mapping[str, TopicSpec],
        reply_topic: str,
        reply_partition: int | None,
    ) -> None:
        self.workflow = workflow
        self.versions = versions
        self.steps = steps
        self.topics = topics
        self.reply_topic = reply_topic
        self.reply_partition = reply_partition
        self.live: OrderedDict[str, _Live] = OrderedDict()

    # -- the transition --------------------------------------------------------------------------

    def apply(self, journal: Journal | None, event: Event, now_ms: int) -> Outcome:
        """Fold ``event`` into ``journal`` (None: the instance does not exist yet)."""
        out = _Transition(self, now_ms)
        if isinstance(event, Start):
            if journal is not None:
                log.debug("duplicate start of %s ignored (idempotent start)", event.id)
                out.journal = journal
                return out.outcome
            journal = self._start(event, now_ms)
            out.journal = journal
        elif journal is None:
            raise LookupError(
                f"no instance {event.id!r} of workflow {self.workflow!r} "
                f"(event {type(event).__name__})"
            )
        else:
            out.journal = journal
            if not self._fold(journal, event, out):
                return out.outcome
        try:
            self._advance(journal, out)
        except BaseException:
            self.drop_live(journal.id)
            raise
        journal.set(updated_ms=now_ms)
        if journal.status in TERMINAL:
            self.drop_live(journal.id)
        return out.outcome

    def _start(self, event: Start, now_ms: int) -> Journal:
        version = event.version or max(self.versions)
        wdef = self.versions.get(version)
        # An Avro input is journaled packed with the code's schema (a JSON client sent it plain).
        header = {
            "id": event.id,
            "workflow": self.workflow,
            "version": version,
            "run": 1,
            "status": RUNNING,
            "started_ms": now_ms,
            "input": pack(wdef.input, event.input) if wdef else event.input,
            "signals": {},
        }
        journal = Journal(event.id, header, header_dirty=True)
        if wdef is None:
            journal.set(
                status=FAILED,
                error={
                    "type": "UnknownVersion",
                    "message": f"version {version} of {self.workflow!r} is not registered",
                },
            )
        return journal

    def _fold(self, journal: Journal, event: Event, out: _Transition) -> bool:
        """Fold one event into the journal; True when the workflow should run on."""
        if isinstance(event, Signal):
            return self._signal(journal, event, out)
        if isinstance(event, Cancel):
            if journal.status == RUNNING:
                journal.set(cancel_requested=True, status=COMPENSATING)
                self.drop_live(journal.id)
            return journal.status == COMPENSATING
        assert isinstance(event, (StepResult, StepFailure, TimerFired))
        if event.run is not None and event.run != journal.header.get("run", 1):
            log.debug(
                "%s of run %s dropped: instance %s is in run %s",
                type(event).__name__,
                event.run,
                journal.id,
                journal.header.get("run"),
            )
            return False
        entry = journal.entries.get(event.seq)
        if entry is None or entry["status"] != "pending":
            return False  # a duplicate or late reply (e.g. after a retry timer fired): ignore
        if isinstance(event, TimerFired):
            return self._timer(journal, entry, event.timer, out)
        if entry.get("attempt") != event.attempt:
            return False  # an earlier attempt's late reply
        # Each attempt's span and outcome, for whoever reads the journal (the console's
        # timeline): bounded by the step's retry policy, so the entry stays small.
        tried = {
            "attempt": entry["attempt"],
            "started_ms": entry.get("attempt_started_ms", entry.get("started_ms")),
            "finished_ms": out.now_ms,
        }
        entry.setdefault("attempts", []).append(tried)
        if isinstance(event, StepResult):
            tried["outcome"] = "ok"
            entry.update(status="done", result=event.result, finished_ms=out.now_ms)
        else:
            tried.update(outcome="failed", error=event.error.to_json())
            sdef = self.steps.get(entry["name"])
            if sdef is None:
                raise LookupError(
                    f"instance {journal.id!r}: step {entry['name']!r} failed but "
                    "is not registered on this worker, so its retry policy is unknown"
                )
            attempt = entry["attempt"]
            if event.retryable and attempt < sdef.retry.attempts:
                # Retries wait on a durable timer, never in the worker: other instances go on.
                due = out.now_ms + int(sdef.retry.backoff.delay(attempt) * 1000)
                tried["retry_at"] = due
                entry.update(attempt=attempt + 1, last_error=event.error.to_json(), timer_due=due)
                out.set_timer(journal, Timer(due, journal.id, entry["seq"], RETRY))
                journal.touch(entry["seq"])
                return False
            entry.update(status="failed", error=event.error.to_json(), finished_ms=out.now_ms)
        journal.touch(entry["seq"])
        return True

    def _signal(self, journal: Journal, event: Signal, out: _Transition) -> bool:
        wdef = self.versions.get(journal.header["version"])
        serde = wdef.signal_serde(event.name) if wdef is not None else None
        payload = pack(serde, event.payload) if serde is not None else event.payload
        waiting = [
            e
            for s, e in sorted(journal.entries.items())
            if e["kind"] == "signal" and e["name"] == event.name and e["status"] == "pending"
        ]
        if waiting:
            entry = waiting[0]
            entry.update(status="done", result=payload)
            if entry.get("timer_due") is not None:  # the timeout will never be needed now
                out.cancel_timer(journal, entry, SIGNAL_TIMEOUT)
            journal.touch(entry["seq"])
            return True
        journal.header.setdefault("signals", {}).setdefault(event.name, []).append(payload)
        journal.header_dirty = True
        return False

    def _timer(self, journal: Journal, entry: dict[str, Any], timer: str, out: _Transition) -> bool:
        entry.pop("timer_due", None)
        if timer == RETRY:
            sdef = self.steps.get(entry["name"])
            if sdef is None:
                raise LookupError(
                    f"instance {journal.id!r}: the retry of step {entry['name']!r} "
                    "is due but that step is not registered on this worker; "
                    "register it again to let the instance go on"
                )
            out.command(journal, entry["seq"], sdef, entry["args"], entry["attempt"])
            entry["attempt_started_ms"] = out.now_ms
            journal.touch(entry["seq"])
            return False
        if timer == SIGNAL_TIMEOUT:
            entry.update(status="done", timed_out=True)
        else:
            entry.update(status="done")
        journal.touch(entry["seq"])
        return True

    # -- running the workflow function -----------------------------------------------------------

    def _advance(self, journal: Journal, out: _Transition) -> None:
        if journal.status == COMPENSATING:
            self._compensate(journal, out)
            return
        if journal.status != RUNNING:
            return
        wdef = self.versions.get(journal.header["version"])
        if wdef is None:
            log.error(
                "instance %s runs %s v%s, which this worker does not register; keep old "
                "versions registered until their instances finish",
                journal.id,
                self.workflow,
                journal.header["version"],
            )
            return
        live = self.live.get(journal.id)
        if live is not None and live.ctx.journal is not journal:
            self.drop_live(journal.id)  # its journal was evicted and reloaded: replay instead
            live = None
        if live is None:
            ctx = WorkflowContext(journal, out, self.steps, wdef)
            types = parameter_types(wdef.fn)
            what = f"the input of {wdef.name} instance {journal.id!r}"
            arg = (
                rebuild(
                    types[0],
                    unpack(wdef.input, journal.header["input"], what),
                    what,
                )
                if types
                else None
            )
            coroutine = wdef.fn(ctx, arg) if types else wdef.fn(ctx)
            live = _Live(coroutine, ctx)
        else:
            self.live.move_to_end(journal.id)
        live.ctx.effects = out
        try:
            yielded = live.coroutine.send(None)
        except StopIteration as done:
            self.live.pop(journal.id, None)
            journal.set(
                status=COMPLETED, result=pack(wdef.result, done.value), finished_ms=out.now_ms
            )
            return
        except ContinueAsNew as new_run:
            self.live.pop(journal.id, None)
            self._continue_as_new(journal, new_run.input, out)
            return
        except NonDeterminism as exc:
            log.warning("%s", exc)
            self.live.pop(journal.id, None)
            self._fail(journal, exc, out, compensate=False)
            return
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the workflow raised: failed for good
            self.live.pop(journal.id, None)
            self._fail(journal, exc, out, compensate=True)
            return
        if yielded is not SUSPEND:
            _close(live)
            self.live.pop(journal.id, None)
            self._fail(
                journal,
                TypeError(f"workflow awaited {yielded!r}; workflows may only await ctx calls"),
                out,
                compensate=True,
            )
            return
        self.live[journal.id] = live
        while len(self.live) > CACHE_SIZE:
            _, evicted = self.live.popitem(last=False)
            _close(evicted)

    def _fail(
        self, journal: Journal, exc: BaseException, out: _Transition, compensate: bool
    ) -> None:
        self.drop_live(journal.id)
        error = StepError.of(exc).to_json()
        if compensate and journal.compensations():
            journal.set(status=COMPENSATING, error=error)
            self._compensate(journal, out)
        else:
            journal.set(status=FAILED, error=error, finished_ms=out.now_ms)

    def _compensate(self, journal: Journal, out: _Transition) -> None:
        """Run registered compensations newest first, one at a time, each a durable step."""
        for i, comp in enumerate(reversed(journal.compensations())):
            seq = COMPENSATION_BASE + i
            entry = journal.entries.get(seq)
            if entry is None:
                sdef = self.steps.get(comp["name"])
                if sdef is None:
                    raise LookupError(
                        f"instance {journal.id!r}: compensation step "
                        f"{comp['name']!r} is not registered on this worker"
                    )
                out.start_step(journal, seq, sdef, comp["args"])
                return
            if entry["status"] == "pending":
                return
            if entry["status"] == "failed":
                journal.set(
                    status=FAILED,
                    finished_ms=out.now_ms,
                    error={
                        "type": "CompensationFailed",
                        "message": f"compensation {comp['name']!r} failed: {entry['error']}; "
                        "the instance needs an operator",
                    },
                )
                return
        done = CANCELLED if journal.header.get("cancel_requested") else COMPENSATED
        journal.set(status=done, finished_ms=out.now_ms)

    def _continue_as_new(self, journal: Journal, new_input: Any, out: _Transition) -> None:
        """A fresh journal under the same id, in a new run: the old run's timers are deleted,
        and whatever of it is still in flight (replies, timers) is dropped as another run's."""
        self.drop_live(journal.id)
        for seq, entry in journal.entries.items():
            if entry.get("status") == "pending" and entry.get("timer_due") is not None:
                kind = {"sleep": SLEEP, "signal": SIGNAL_TIMEOUT}.get(entry["kind"], RETRY)
                out.cancel_timer(journal, entry, kind)
            out.outcome.dropped_entries.append(seq)
        journal.entries.clear()
        journal.dirty.clear()
        journal.set(
            run=journal.header.get("run", 1) + 1,
            input=new_input,
            status=RUNNING,
            signals=journal.header.get("signals", {}),
        )
        self._advance(journal, out)

    def drop_live(self, instance_id: str) -> None:
        live = self.live.pop(instance_id, None)
        if live is not None:
            _close(live)

    def forget(self) -> None:
        """In-memory coroutines may be ahead of the store (an aborted cycle): replay instead."""
        for live in self.live.values():
            _close(live)
        self.live.clear()


def _close(live: _Live) -> None:
    try:
        live.coroutine.close()
    except RuntimeError:
        pass  # a ``finally`` that awaited a ctx call while being discarded


class _Transition:
    """The effects one transition records (the ``Effects`` a ``WorkflowContext`` calls)."""

    def __init__(self, machine: WorkflowMachine, now_ms: int) -> None:
        self.machine = machine
        self.now_ms = now_ms
        self.outcome = Outcome()

    @property
    def journal(self) -> Journal | None:
        return self.outcome.journal

    @journal.setter
    def journal(self, journal: Journal) -> None:
        self.outcome.journal = journal

    def command(
        self, journal: Journal, seq: int, sdef: StepDef, args: list[Any], attempt: int
    ) -> None:
        m = self.machine
        self.outcome.commands.append(
            (
                sdef,
                StepCommand(
                    journal.header["workflow"],
                    journal.id,
                    seq,
                    attempt,
                    args,
                    m.reply_topic,
                    m.reply_partition,
                    journal.header.get("run", 1),
                ),
            )
        )

    def set_timer(self, journal: Journal, timer: Timer) -> None:
        self.outcome.timers.append(
            Timer(
                timer.due_ms, timer.instance_id, timer.seq, timer.kind, journal.header.get("run", 1)
            )
        )

    def cancel_timer(self, journal: Journal, entry: dict[str, Any], kind: str) -> None:
        due = entry.pop("timer_due", None)
        if due is not None:
            self.outcome.cancelled_timers.append(Timer(int(due), journal.id, entry["seq"], kind))

    # -- Effects ---------------------------------------------------------------------------------

    def start_step(self, journal: Journal, seq: int, sdef: StepDef, args: list[Any]) -> None:
        journal.put_entry(
            {
                "seq": seq,
                "kind": "step",
                "name": sdef.name,
                "digest": args_digest(sdef.name, sdef.args, args),
                "status": "pending",
                "attempt": 1,
                "args": args,
                "started_ms": self.now_ms,
            }
        )
        self.command(journal, seq, sdef, args, 1)

    def start_timer(self, journal: Journal, seq: int, kind: str, due_ms: int, what: str) -> None:
        journal.put_entry(
            {
                "seq": seq,
                "kind": "sleep",
                "name": kind,
                "digest": what,
                "status": "pending",
                "due_ms": due_ms,
                "timer_due": due_ms,
            }
        )
        self.set_timer(journal, Timer(due_ms, journal.id, seq, SLEEP))

    def wait_signal(self, journal: Journal, seq: int, name: str, timeout_ms: int | None) -> None:
        entry = journal.put_entry(
            {
                "seq": seq,
                "kind": "signal",
                "name": name,
                "digest": str(timeout_ms),
                "status": "pending",
            }
        )
        inbox = journal.header.setdefault("signals", {}).get(name)
        if inbox:
            # Signals sent before the wait are kept in the inbox, oldest first.
            entry.update(status="done", result=inbox.pop(0))
            journal.header_dirty = True
        elif timeout_ms is not None:
            due = self.now_ms + timeout_ms
            entry["timer_due"] = due
            self.set_timer(journal, Timer(due, journal.id, seq, SIGNAL_TIMEOUT))

    def avro_serdes(self, topic: str) -> tuple[AvroSerde | None, AvroSerde | None]:
        """The Avro key and value serdes of ``topic`` (None where it is not Avro)."""
        spec = self.machine.topics.get(topic)
        if spec is None:
            return None, None
        key, value = spec.key_serde, spec.value_serde
        return (
            key if key.carries_schema else None,  # type: ignore[return-value]
            value if value.carries_schema else None,
        )

    def emit(self, topic: str, key: Any, value: Any) -> None:
        spec = self.machine.topics.get(topic)
        if spec is None:
            raise KeyError(
                f"ctx.emit: topic {topic!r} is not declared; call app.topic({topic!r}, ...)"
            )
        try:
            kb = None if key is None else spec.key_serde.serialize(key)
            vb = None if value is None else spec.value_serde.serialize(value)
        except Exception as exc:  # noqa: BLE001 - name the call and the topic
            raise TypeError(
                f"ctx.emit({topic!r}, key, value): cannot serialize with the "
                f"topic's serdes: {type(exc).__name__}: {exc}"
            ) from None
        self.outcome.emits.append((topic, kb, vb))
