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
reader checking determinism wants every case in one file. The cases are not independent either:
a fold ends in ``_advance``, which may fail, suspend, end, compensate or continue as new, and
those call each other (a cancel stops pending work and then fails or compensates); all of them
write one ``TransitionEffects`` and keep or evict the instance's coroutine in ``self.live``.
What is not the decision is apart: recording it (``effects``), the journal, timers, messages.
"""

from __future__ import annotations

import logging
import random
import traceback
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamflow.errors import NonDeterminism, RecordTooLarge
from streamflow.kafka.record_size import DEFAULT_MAX_PAYLOAD_BYTES, ENVELOPE_BYTES
from streamflow.topology.specs import TopicSpec
from streamflow.workflow.api import (
    Cancelled,
    NonRetryable,
    SignalTimeout,
    StepDef,
    StepFailed,
    WorkflowDef,
)
from streamflow.workflow.code_version import code_fingerprint
from streamflow.workflow.context import SUSPEND, ContinueAsNew, WorkflowContext
from streamflow.workflow.effects import Outcome, TransitionEffects
from streamflow.workflow.journal import (
    CANCELLED,
    CANCELLING,
    COMPENSATED,
    COMPENSATING,
    COMPENSATION_BASE,
    COMPLETED,
    FAILED,
    RUNNING,
    SUSPENDED,
    TERMINAL,
    Journal,
)
from streamflow.workflow.messages import (
    Cancel,
    Event,
    Purge,
    Resume,
    Signal,
    Start,
    StepError,
    StepFailure,
    StepResult,
    Terminate,
    TimerFired,
    dumps,
)
from streamflow.workflow.payloads import check_fits, pack, parameter_types, rebuild, unpack
from streamflow.workflow.timers import (
    RETENTION,
    RETRY,
    SIGNAL_TIMEOUT,
    SLEEP,
    STEP_DEADLINE,
    WORKFLOW_TIMEOUT,
    Timer,
)

log = logging.getLogger(__name__)

CACHE_SIZE = 10_000
"""Suspended coroutines kept per task (Temporal's sticky cache); the rest replay on demand."""

INBOX_LIMIT = 1_000
"""Signals an instance keeps unread (all names together): the inbox lives in the journal's
header, which must stay far below Kafka's message size limit. One more is refused (the event
goes to the dead-letter topic, naming the instance), never silently dropped."""

FAILURES = (StepFailed, SignalTimeout, NonRetryable, Cancelled)
"""What a workflow raises on purpose or passes on from a step: the instance fails (and
compensates). Any other exception is a bug in the workflow code: the instance is suspended
until fixed code runs it again, since failing it would make a deploy unable to save it."""

WORKFLOW_TIMER_SEQ, RETENTION_TIMER_SEQ = -1, -2
"""Sequence numbers of an instance's own timers (its ``timeout``, its retention): never
journal entries."""


@dataclass
class _Live:
    coroutine: Any
    ctx: WorkflowContext


def journal_limit(max_payload_bytes: int) -> int:
    """The largest journal value: two payloads with their envelopes (a call's arguments and
    its result, or a header with the input and the result)."""
    return 2 * (max_payload_bytes + ENVELOPE_BYTES)


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
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.workflow = workflow
        self.versions = versions
        self.steps = steps
        self.topics = topics
        self.reply_topic = reply_topic
        self.reply_partition = reply_partition
        self.max_payload_bytes = max_payload_bytes
        """What one input, call's arguments, result or signal may weigh: past it, a bug in
        the workflow (it suspends), never a transaction that cannot commit."""
        self.max_journal_bytes = journal_limit(max_payload_bytes)
        """What one journal value may hold: a call's arguments and its result, or a header
        with the input and the result (the instances store's limit)."""
        self.live: OrderedDict[str, _Live] = OrderedDict()
        self._fingerprints: dict[int, str] = {}

    def fingerprint(self, wdef: WorkflowDef) -> str:
        """``code_fingerprint`` of a version, computed once per process (it reads a file)."""
        found = self._fingerprints.get(wdef.version)
        if found is None:
            found = self._fingerprints[wdef.version] = code_fingerprint(wdef)
        return found

    # -- the transition --------------------------------------------------------------------------

    def apply(self, journal: Journal | None, event: Event, now_ms: int) -> Outcome:
        """Fold ``event`` into ``journal`` (None: the instance does not exist yet)."""
        out = TransitionEffects(self, now_ms)
        if isinstance(event, Start):
            if journal is not None:
                log.debug("duplicate start of %s ignored (idempotent start)", event.id)
                out.journal = journal
                return out.outcome
            journal = self._start(event, now_ms)
            out.journal = journal
            wdef = self.versions.get(journal.header["version"])
            if wdef is not None and wdef.timeout is not None:
                due = now_ms + int(wdef.timeout.total_seconds() * 1000)
                journal.set(timeout_due=due)
                out.set_timer(journal, Timer(due, journal.id, WORKFLOW_TIMER_SEQ, WORKFLOW_TIMEOUT))
        elif journal is None and isinstance(event, TimerFired):
            log.debug("timer %s of instance %s dropped: no such instance", event.timer, event.id)
            return out.outcome
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
            self._keep_until(journal, out)
            if journal.header.get("timeout_due") is not None:
                due = int(journal.header.pop("timeout_due"))
                out.outcome.cancelled_timers.append(
                    Timer(due, journal.id, WORKFLOW_TIMER_SEQ, WORKFLOW_TIMEOUT)
                )
        return out.outcome

    def _keep_until(self, journal: Journal, out: TransitionEffects) -> None:
        """The instance just ended: set the timer that deletes it after its retention."""
        wdef = self.versions.get(journal.header["version"])
        if wdef is None or wdef.retention is None or journal.header.get("expires_ms"):
            return
        due = int(journal.header.get("finished_ms", out.now_ms)) + int(
            wdef.retention.total_seconds() * 1000
        )
        journal.set(expires_ms=due)
        out.set_timer(journal, Timer(due, journal.id, RETENTION_TIMER_SEQ, RETENTION))

    def knows(self, version: int | None) -> bool:
        """Can this worker run instances pinned to ``version`` (None: the newest it has)?"""
        return version is None or version in self.versions

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

    def _fold(self, journal: Journal, event: Event, out: TransitionEffects) -> bool:
        """Fold one event into the journal; True when the workflow should run on."""
        if isinstance(event, Signal):
            return self._signal(journal, event, out)
        if isinstance(event, Cancel):
            return self._cancel(journal, out, None)
        if isinstance(event, Resume):
            return self._resume(journal)
        if isinstance(event, Terminate):
            return self._terminate(journal, event, out)
        if isinstance(event, Purge):
            out.outcome.purge = journal.status in TERMINAL
            return False
        assert isinstance(event, (StepResult, StepFailure, TimerFired))
        # An instance's own timers span its runs (a timeout covers the whole chain of
        # continue_as_new runs): they are checked before the run filter.
        if isinstance(event, TimerFired) and event.timer == RETENTION:
            out.outcome.purge = journal.status in TERMINAL
            return False
        if isinstance(event, TimerFired) and event.timer == WORKFLOW_TIMEOUT:
            journal.header.pop("timeout_due", None)
            journal.header_dirty = True
            return self._cancel(journal, out, _timed_out_error(journal))
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
        attempts = entry.setdefault("attempts", [])
        attempts.append(tried)
        del attempts[:-ATTEMPTS_KEPT]  # unlimited retries must not grow the entry forever
        if isinstance(event, StepResult):
            tried["outcome"] = "ok"
            entry.update(status="done", result=event.result, finished_ms=out.now_ms)
            out.cancel_deadline(journal, entry)
            journal.touch(entry["seq"])
            return True
        tried.update(outcome="failed", error=_short(event.error.to_json()))
        sdef = self.steps.get(entry["name"])
        if sdef is None:
            raise LookupError(
                f"instance {journal.id!r}: step {entry['name']!r} failed but "
                "is not registered on this worker, so its retry policy is unknown"
            )
        attempt = entry["attempt"]
        own = entry["seq"] < COMPENSATION_BASE
        # The workflow's own calls stop retrying once it is cancelled or its function ended
        # (no code is left to register their undo); compensations retry until they succeed,
        # unless an operator ended the instance (``ending``).
        stopped = (
            entry.get("deadline_passed")
            or journal.header.get("ending") is not None
            or (own and (journal.cancel_requested or journal.status == COMPENSATING))
        )
        if event.retryable and not stopped and sdef.retry.allows(attempt):
            # Retries wait on a durable timer, never in the worker: other instances go on.
            # The jitter is drawn here and journaled (the timer), so a replay never redraws it.
            spread = random.Random(f"{journal.id}:{entry['seq']}:{attempt}").random()
            due = out.now_ms + int(sdef.retry.backoff.delay(attempt, spread) * 1000)
            deadline = entry.get("deadline_ms")
            if deadline is None or due < deadline:
                tried["retry_at"] = due
                entry.update(attempt=attempt + 1, last_error=event.error.to_json(), timer_due=due)
                out.set_timer(journal, Timer(due, journal.id, entry["seq"], RETRY))
                journal.touch(entry["seq"])
                return False
            error = _deadline_error(sdef, entry, event.error.to_json())
        elif entry.get("deadline_passed"):
            error = _deadline_error(sdef, entry, event.error.to_json())
        elif own and journal.cancel_requested:
            error = event.error.to_json()
            entry.update(status="cancelled", error=error, finished_ms=out.now_ms)
            out.cancel_deadline(journal, entry)
            journal.touch(entry["seq"])
            return True
        else:
            error = event.error.to_json()
        entry.update(status="failed", error=error, finished_ms=out.now_ms)
        out.cancel_deadline(journal, entry)
        journal.touch(entry["seq"])
        return True

    def _cancel(
        self, journal: Journal, out: TransitionEffects, reason: dict[str, Any] | None
    ) -> bool:
        """Stop the instance's work: pending timers deleted, running attempts cancelled, and
        ``Cancelled`` raised at the workflow's current await (``reason``: why, when it is not
        a person's cancel — a workflow timeout). Attempts in flight are waited for: one that
        succeeds is recorded, so the compensation the workflow registers after it runs."""
        status = journal.status
        if (
            status in TERMINAL
            or status == COMPENSATING
            or journal.cancel_requested
            or journal.header.get("ending")
        ):
            return False  # ended, or already unwinding: a second cancel changes nothing
        journal.set(cancel_requested=True)
        if reason is not None:
            journal.set(error=reason, timed_out=True)
        self._stop_pending(journal, out)
        if status == SUSPENDED:
            # Its code cannot run: no Cancelled to raise in it; undo what it did at once.
            journal.header.pop("suspended", None)
            journal.set(status=CANCELLING)
            self._fail(journal, Cancelled(f"instance {journal.id!r} was cancelled"), out)
            return True
        journal.set(status=CANCELLING)
        return True

    def _stop_pending(
        self, journal: Journal, out: TransitionEffects, everything: bool = False
    ) -> None:
        """Every pending call of the workflow (``everything``: compensations too) ends:
        sleeps, signal waits and retry backoffs at once (status ``cancelled``, their timers
        deleted); attempts in flight get a ``StepCancel`` and stay pending until they answer."""
        for seq, entry in sorted(journal.entries.items()):
            if (seq >= COMPENSATION_BASE and not everything) or entry.get("status") != "pending":
                continue
            kind = entry["kind"]
            if kind == "step" and entry.get("timer_due") is None:
                out.cancel_attempt(journal, entry)
                continue
            timer = {"sleep": SLEEP, "signal": SIGNAL_TIMEOUT}.get(kind, RETRY)
            out.cancel_timer(journal, entry, timer)
            if kind == "step":
                out.cancel_deadline(journal, entry)
            entry.update(status="cancelled", finished_ms=out.now_ms)
            journal.touch(seq)

    def _resume(self, journal: Journal) -> bool:
        if journal.status != SUSPENDED:
            log.info("resume of %s ignored: it is %s, not suspended", journal.id, journal.status)
            return False
        journal.header.pop("suspended", None)
        journal.set(status=RUNNING, resumed=journal.header.get("resumed", 0) + 1)
        journal.header.pop("error", None)
        return True

    def _terminate(self, journal: Journal, event: Terminate, out: TransitionEffects) -> bool:
        if journal.status in TERMINAL:
            return False
        self.drop_live(journal.id)
        self._stop_pending(journal, out, everything=True)
        error = {
            "type": "Terminated",
            "message": event.reason or "ended by an operator (workflows fail)",
        }
        journal.set(ending={"status": FAILED, "error": error})
        return True

    def _signal(self, journal: Journal, event: Signal, out: TransitionEffects) -> bool:
        if journal.status in TERMINAL or journal.header.get("ending"):
            out.outcome.signal_dropped = True  # nobody will ever read it: counted, not kept
            return False
        wdef = self.versions.get(journal.header["version"])
        serde = wdef.signal_serde(event.name) if wdef is not None else None
        payload = pack(serde, event.payload) if serde is not None else event.payload
        declared = wdef.signal_type(event.name) if wdef is not None else None
        if declared is not None:  # refused (dead-lettered, named) before the workflow sees it
            check_fits(declared, payload, f"the payload of signal {event.name!r} of {journal.id!r}")
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
        inbox = journal.header.setdefault("signals", {})
        if sum(len(v) for v in inbox.values()) >= INBOX_LIMIT:
            raise OverflowError(
                f"instance {journal.id!r} of {self.workflow!r} already holds {INBOX_LIMIT} "
                f"unread signals; signal {event.name!r} refused (have the workflow wait for "
                "its signals, or send fewer)"
            )
        inbox.setdefault(event.name, []).append(payload)
        if len(dumps(journal.header)) > self.max_journal_bytes:
            inbox[event.name].pop()
            raise RecordTooLarge(
                f"instance {journal.id!r} of {self.workflow!r}: its header with its input and "
                f"unread signals would pass {self.max_journal_bytes} bytes (two payloads of "
                f"App(max_payload_bytes={self.max_payload_bytes})); signal {event.name!r} "
                "refused (have the workflow wait for its signals)"
            )
        journal.header_dirty = True
        return False

    def _timer(
        self, journal: Journal, entry: dict[str, Any], timer: str, out: TransitionEffects
    ) -> bool:
        if timer == STEP_DEADLINE:
            entry.pop("deadline_due", None)
            sdef = self.steps.get(entry["name"])
            error = _deadline_error(sdef, entry, entry.get("last_error"))
            if entry.get("timer_due") is None:  # an attempt runs: stop it, wait for its answer
                entry["deadline_passed"] = True
                out.cancel_attempt(journal, entry)
                journal.touch(entry["seq"])
                return False
            out.cancel_timer(journal, entry, RETRY)
            entry.update(status="failed", error=error, finished_ms=out.now_ms)
            journal.touch(entry["seq"])
            return True
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

    def _advance(self, journal: Journal, out: TransitionEffects) -> None:
        ending = journal.header.get("ending")
        if ending is not None:
            self._end_when_settled(journal, out)
            return
        if journal.status == COMPENSATING:
            self._compensate(journal, out)
            return
        if journal.status not in (RUNNING, CANCELLING):
            return
        wdef = self.versions.get(journal.header["version"])
        if wdef is None:
            # The orchestrator parks events of versions this worker lacks; a transition that
            # still gets here (a test driving the machine alone) must not guess.
            raise LookupError(
                f"instance {journal.id!r} runs {self.workflow} v{journal.header['version']}, "
                "which this worker does not register; keep old versions registered until "
                "their instances finish"
            )
        live = self.live.get(journal.id)
        if live is not None and live.ctx.journal is not journal:
            self.drop_live(journal.id)  # its journal was evicted and reloaded: replay instead
            live = None
        if live is None:
            ctx = WorkflowContext(journal, out, self.steps, wdef)
            types_ = parameter_types(wdef.fn)
            what = f"the input of {wdef.name} instance {journal.id!r}"
            try:
                arg = (
                    rebuild(types_[0], unpack(wdef.input, journal.header["input"], what), what)
                    if types_
                    else None
                )
            except Exception as exc:  # noqa: BLE001 - ValueMismatch, SerializationError, ...
                if journal.entries:
                    # It ran with this input before: the code's type changed, not the input.
                    self._suspend(journal, wdef, exc, out)
                else:
                    # Bad input from a client that did not check it: the instance ends
                    # failed with the reason (a dead letter alone would leave `wait` waiting).
                    self._fail(journal, exc, out)
                return
        try:
            if live is None:
                coroutine = wdef.fn(ctx, arg) if types_ else wdef.fn(ctx)
                live = _Live(coroutine, ctx)
            else:
                self.live.move_to_end(journal.id)
            live.ctx.effects = out
            yielded = live.coroutine.send(None)
        except StopIteration as done:
            self.live.pop(journal.id, None)
            try:
                result = pack(wdef.result, done.value)
                out.check_size(
                    f"the result of {self.workflow} instance {journal.id!r} (with its header)",
                    {**journal.header, "result": result},
                    self.max_journal_bytes,
                )
                out.check_size(f"the result of {self.workflow} instance {journal.id!r}", result)
            except Exception as exc:  # noqa: BLE001 - a result that cannot be kept is a bug
                self._suspend(journal, wdef, exc, out)
                return
            self._end(journal, out, {"status": COMPLETED, "result": result})
            return
        except ContinueAsNew as new_run:
            self.live.pop(journal.id, None)
            if journal.cancel_requested:
                self._fail(journal, Cancelled("cancelled before its next run"), out)
                return
            self._continue_as_new(journal, new_run.input, out)
            return
        except FAILURES as exc:
            self.live.pop(journal.id, None)
            self._fail(journal, exc, out)
            return
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a bug in the workflow code
            self.live.pop(journal.id, None)
            if journal.cancel_requested:
                self._fail(journal, exc, out)  # a cancel is never held up by broken cleanup
                return
            self._suspend(journal, wdef, exc, out)
            return
        if yielded is not SUSPEND:
            _close(live)
            self.live.pop(journal.id, None)
            self._suspend(
                journal,
                wdef,
                TypeError(f"workflow awaited {yielded!r}; workflows may only await ctx calls"),
                out,
            )
            return
        self.live[journal.id] = live
        while len(self.live) > CACHE_SIZE:
            _, evicted = self.live.popitem(last=False)
            _close(evicted)

    def _suspend(
        self, journal: Journal, wdef: WorkflowDef, exc: BaseException, out: TransitionEffects
    ) -> None:
        """A bug in the workflow code (an exception, a non-determinism): keep the instance as
        it is, with the error and its stack, until code that differs runs it again (a worker
        with a new deploy takes the partition) or an operator resumes or fails it. Attempts
        in flight and retry timers go on; their answers are journaled meanwhile."""
        self.drop_live(journal.id)
        if isinstance(exc, NonDeterminism):
            log.warning("%s", exc)
        else:
            log.warning(
                "instance %s of %s v%s suspended: its code raised %s: %s",
                journal.id,
                self.workflow,
                journal.header["version"],
                type(exc).__name__,
                exc,
            )
        error = StepError.of(exc).to_json()
        error["stack"] = "".join(traceback.format_exception(exc))[-8_000:]
        journal.set(
            status=SUSPENDED,
            error=error,
            suspended={"at_ms": out.now_ms, "code": self.fingerprint(wdef)},
        )

    def _fail(self, journal: Journal, exc: BaseException, out: TransitionEffects) -> None:
        """The workflow function ended with an error (or was cancelled): its other pending
        calls stop, and its compensations run once every attempt it started has answered."""
        self.drop_live(journal.id)
        self._stop_pending(journal, out)
        if not (journal.cancel_requested and isinstance(exc, Cancelled)):
            journal.set(error=StepError.of(exc).to_json())
        if journal.compensations():
            journal.set(status=COMPENSATING)
            self._compensate(journal, out)
            return
        final = CANCELLED if _cancelled(journal) else FAILED
        self._end(journal, out, {"status": final})

    def _end(self, journal: Journal, out: TransitionEffects, ending: dict[str, Any]) -> None:
        """The function returned or failed: stop what it left pending, and report the final
        status once no attempt it started is still out (``_end_when_settled``)."""
        self._stop_pending(journal, out)
        journal.set(ending=ending)
        self._end_when_settled(journal, out)

    def _end_when_settled(self, journal: Journal, out: TransitionEffects) -> None:
        if journal.in_flight():
            return
        ending = journal.header.pop("ending")
        journal.set(finished_ms=out.now_ms, **ending)

    def _compensate(self, journal: Journal, out: TransitionEffects) -> None:
        """Run registered compensations newest first, one at a time, each a durable step,
        after every attempt of the workflow's own steps has answered (a step whose success
        arrives during a cancel is recorded first, so nothing lands after the undo)."""
        if journal.in_flight():
            return
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
        done = CANCELLED if _cancelled(journal) else COMPENSATED
        journal.set(status=done, finished_ms=out.now_ms)

    def _continue_as_new(self, journal: Journal, new_input: Any, out: TransitionEffects) -> None:
        """A fresh journal under the same id, in a new run: the old run's timers are deleted,
        and whatever of it is still in flight (replies, timers) is dropped as another run's."""
        self.drop_live(journal.id)
        for seq, entry in journal.entries.items():
            if entry.get("status") == "pending" and entry.get("timer_due") is not None:
                kind = {"sleep": SLEEP, "signal": SIGNAL_TIMEOUT}.get(entry["kind"], RETRY)
                out.cancel_timer(journal, entry, kind)
            if entry.get("kind") == "step":
                out.cancel_deadline(journal, entry)
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


ATTEMPTS_KEPT = 20
"""Attempts a step entry lists (the newest): retries are unlimited by default."""


def _short(error: dict[str, Any]) -> dict[str, Any]:
    """An attempt's error as its entry lists it: the message cut, so twenty attempts of a step
    that fails with long messages keep the entry small."""
    message = error.get("message")
    if isinstance(message, str) and len(message) > 1_000:
        return {**error, "message": message[:1_000] + "…"}
    return error


def _cancelled(journal: Journal) -> bool:
    """Cancelled by a person (not timed out): the final status is ``cancelled``."""
    return journal.cancel_requested and not journal.header.get("timed_out")


def _timed_out_error(journal: Journal) -> dict[str, Any]:
    return {
        "type": "WorkflowTimedOut",
        "message": f"instance {journal.id!r} passed its workflow timeout",
    }


def _deadline_error(
    sdef: StepDef | None, entry: dict[str, Any], last: dict[str, Any] | None
) -> dict[str, Any]:
    window = sdef.schedule_to_close if sdef is not None else None
    return {
        "type": "ScheduleToCloseTimeout",
        "message": f"step {entry['name']!r} did not succeed within its schedule_to_close "
        f"of {window}"
        + (f"; last error: {last.get('type')}: {last.get('message')}" if last else ""),
    }


def _close(live: _Live) -> None:
    try:
        live.coroutine.close()
    except RuntimeError:
        pass  # a ``finally`` that awaited a ctx call while being discarded
