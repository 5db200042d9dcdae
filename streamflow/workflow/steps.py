"""Step tasks: consume ``<app>.step.<name>`` commands, run attempts outside the commit cycle,
and commit each attempt's reply together with its effects.

The commit cycle never waits for a step (docs/architecture.md, "Step execution"): ``push``
only decodes a command and hands an attempt to the worker's ``StepExecutor``; when the attempt
finishes, its completion runs on the worker thread inside the then-open cycle and puts the
reply, the entity's new state and the command's "finished" mark into that cycle's transaction.

Exactly-once for Kafka-held effects under out-of-order completion:
- the partition's committed offset is the lowest command not yet finished
  (``CompletionOffsets``), so a crash or a rebalance runs the unfinished ones again (same
  idempotency key, same attempt number);
- commands finished *above* that offset are kept in the changelogged store
  ``step-<name>-done`` (offset → 1) in the same transaction as their reply, and pruned as the
  offset passes them: a command delivered again after a crash is skipped, so an entity step
  never changes its entity twice.

Entity steps keep one attempt in flight per entity key (the single writer), parallel across
keys. A key is held until the attempt holding it has *ended*, not merely been answered or
voided: a timed-out sync attempt, or one whose task was revoked or whose cycle aborted, keeps
its key until its function returns, so a command read again never runs beside it. An attempt
sees a copy of its entity's state: a mutation in place that is followed by a failure leaves
nothing behind. Retries are not done here: the orchestrator schedules them on
durable timers, so a failing step never blocks its partition.

No instance waits forever: a command whose envelope decodes is answered even when it cannot
run or its outcome cannot be delivered (arguments that do not rebuild, a result over the record
limit, a value that cannot be serialized, a reply the producer refuses): a non-retryable
failure, in the transaction that dead-letters the command, with the attempt's state write
rolled back. A ``StepCancel`` on the step topic stops the attempt it names (docs/architecture.md,
"Step execution").

Size: the step node, its runner (admission, cancelling, completion), the entity key locks and
the done-offset bookkeeping are one mechanism (an attempt's life from command to committed
reply); split, each part would only make sense with the others open beside it. What the step
function sees, ``StepContext``, is its own module (``workflow/step_context.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException

from streamflow.errors import ReplyRejected, ResultTooLarge, SerializationError
from streamflow.operate.dead_letter_format import ANSWERED
from streamflow.runtime.completion_offsets import CompletionOffsets
from streamflow.runtime.step_executor import Attempt, AttemptId
from streamflow.runtime.task import client_broken
from streamflow.topology.nodes import Node, ProcessorRuntime, Push
from streamflow.topology.specs import StoreSpec
from streamflow.workflow.api import Cancelled, NonRetryable, StepDef
from streamflow.workflow.failures import remember
from streamflow.workflow.messages import StepCancel, StepCommand, StepError, dumps, is_cancel
from streamflow.workflow.payloads import is_plain_type, pack, parameter_types, rebuild, unpack
from streamflow.workflow.step_context import StepContext, StepTimedOut
from streamflow.workflow.transition import journal_limit

log = logging.getLogger(__name__)

QUEUE_PER_TASK = 1000
"""Commands a step task holds for busy entity keys before it pauses its partition."""
MAX_ERROR_MESSAGE = 8000
"""Characters of an exception's message a failure reply carries: a step that raises with a
whole response body in its message must still be answerable."""


@dataclass(eq=False, kw_only=True)
class StepNode(Node):
    step: StepDef
    topic: str
    done_store: StoreSpec
    entity_store: StoreSpec | None = None
    kind: str = field(default="step", init=False)

    def detail(self) -> str:
        extra = f", entity store {self.entity_store.name}" if self.entity_store else ""
        limit = (
            f", at most {self.step.max_concurrency} at once" if self.step.max_concurrency else ""
        )
        tries = self.step.retry.attempts
        retry = "retry until success" if tries is None else f"retry {tries}x"
        return f"{retry}{limit}{extra}"

    def stores(self) -> list[StoreSpec]:
        return [self.done_store] + ([self.entity_store] if self.entity_store else [])

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        return StepRunner(self, rt).push


@dataclass(eq=False, slots=True)
class _Pending:
    runner: StepRunner
    offset: int
    command: StepCommand
    args: list[Any]
    entity: str | None
    size: int
    """Bytes of the command record (its arguments, mostly): the journal entry that will hold
    the result holds them too."""


class EntityKeys:
    """The single-writer rule of one entity store on one partition: at most one attempt per
    key, whichever entity step (``debit``, ``credit``) it belongs to. A command whose key is
    busy waits here, and gets the key when the attempt before it ends — so it sees that
    attempt's state.

    Kept by the worker's executor (``StepExecutor.shared``), not by the task: an attempt can
    outlive the task that launched it (revoked, or its cycle aborted), and the key stays held
    until that attempt ended, so the command read again by the task's next incarnation waits
    for it here like any other."""

    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.waiting: dict[str, deque[_Pending]] = {}

    def try_lock(self, key: str) -> bool:
        if key in self.busy:
            return False
        self.busy.add(key)
        return True

    def wait(self, pending: _Pending) -> None:
        self.waiting.setdefault(pending.entity, deque()).append(pending)  # type: ignore[arg-type]

    def hand_over(self, key: str) -> _Pending | None:
        """The key's attempt is done: the next waiting command, now holding the key, or None
        (the key is free)."""
        queue = self.waiting.get(key)
        if not queue:
            self.busy.discard(key)
            self.waiting.pop(key, None)
            return None
        pending = queue.popleft()
        if not queue:
            del self.waiting[key]
        return pending

    def drop_waiting(self, runner: StepRunner) -> None:
        """``runner``'s waiting commands will be read again (its cycle aborted) or elsewhere
        (its task closed): forget them. Keys held by attempts still running stay held."""
        for key, queue in list(self.waiting.items()):
            if any(p.runner is runner for p in queue):
                kept = deque(p for p in queue if p.runner is not runner)
                if kept:
                    self.waiting[key] = kept
                else:
                    del self.waiting[key]


class StepRunner:
    """The per-task side of a StepNode: admission, per-key order, completion (module docstring).

    Everything here runs on the worker thread; only the attempt's body runs elsewhere.
    """

    def __init__(self, node: StepNode, rt: ProcessorRuntime) -> None:
        self.node, self.rt = node, rt
        self.sdef = sdef = node.step
        self.store = rt.store(node.entity_store.name) if node.entity_store else None
        self.done = rt.store(node.done_store.name)
        self.is_async = inspect.iscoroutinefunction(sdef.fn)
        self.executor = rt.step_executor
        self.keys: EntityKeys | None = None
        if node.entity_store is not None:
            self.keys = self.executor.shared(
                f"entity-keys:{node.entity_store.name}:{rt.partition}", EntityKeys
            )
        self.lane = self.executor.lane(sdef.name, sdef.max_concurrency, self.is_async)
        self.types = parameter_types(sdef.fn)
        self.plain_args = not sdef.args and all(is_plain_type(t) for t in self.types)
        """Every argument arrives as the function takes it (no dataclass to rebuild)."""
        self.non_retryable: tuple[type[BaseException], ...] = (
            NonRetryable,
            *sdef.retry.non_retryable,
        )
        self.timeout = sdef.timeout.total_seconds() if sdef.timeout else None
        self.offsets = CompletionOffsets()
        self.attempts: set[Attempt] = set()
        """This task's attempts submitted and not completed (running or waiting in the lane)."""
        self.key_waiting = 0
        """This step's commands waiting for a busy entity key."""
        self.generation = 0
        """Bumped when the cycle aborts or the task closes: older attempts' results are void."""
        self.closed = False
        self.paused = False
        """This step's topic partition is paused (its own, not the task's other topics)."""
        self.done_above: set[int] | None = None  # loaded from the store on first use
        self.fresh_done: list[int] = []
        self.last_committable = -1
        self._wake = self._resume
        rt.hold_offsets(node.topic, self.committable)
        rt.on_abort(self.reset)
        rt.on_close(self.close)

    # -- admission -------------------------------------------------------------------------------

    def push(self, key: Any, raw: Any, _sf_node: Node | None = None) -> None:
        offset = self.rt.msg.offset()
        if self.done_above is None:
            self._load_done()
        if offset in self.done_above:  # type: ignore[operator]
            return  # finished before a crash or a rebalance; its reply is committed
        if is_cancel(raw):
            # Never admitted: its offset passes like a skipped command's. After a crash it is
            # read again after its command (same key, same partition) and cancels it again.
            self._cancel(StepCancel.from_json(raw))
            return
        try:
            command = StepCommand.from_json(raw)  # an envelope that does not decode: DLQ only
        except Exception:
            self.fresh_done.append(offset)  # dead-lettered once, even if read again
            raise
        try:
            args = self._arguments(command)
            entity = self._entity(command)
        except Exception as exc:
            # The command names its instance: answer it, or it waits forever. The task
            # dead-letters the command in this same transaction (the exception goes on), and
            # the done mark keeps a re-read (the committed offset may lag) from doing it twice.
            self.fresh_done.append(offset)
            bad = SerializationError(f"{self._describe(command)} cannot run: {exc}")
            self._reply_failure(command, bad)
            raise bad from exc
        pending = _Pending(self, offset, command, args, entity, len(self.rt.msg.value() or b""))
        self.offsets.admit(offset)
        if entity is not None and not self.keys.try_lock(entity):  # type: ignore[union-attr]
            self.keys.wait(pending)  # type: ignore[union-attr]
            self.key_waiting += 1
            if self.key_waiting >= QUEUE_PER_TASK:
                self._pause()
            return
        try:
            self._start(pending)
        except Exception as exc:
            self._abandon(pending)  # the task dead-letters the command
            bad = SerializationError(f"{self._describe(command)} cannot start: {exc}")
            self._reply_failure(command, bad)
            raise bad from exc

    def _entity(self, command: StepCommand) -> str | None:
        """The entity key of an entity step's command (its first argument); None otherwise."""
        if self.store is None:
            return None
        if not command.args or command.args[0] is None:
            raise SerializationError(
                f"entity step {self.sdef.name!r}: command for {command.id!r} has no entity key"
            )
        return str(command.args[0])

    def _describe(self, command: StepCommand) -> str:
        return (
            f"step {self.sdef.name!r} attempt {command.attempt} of instance {command.id!r} "
            f"(seq {command.seq})"
        )

    def _abandon(self, pending: _Pending) -> None:
        """``pending`` will never run (it is dead-lettered): its offset is finished and its
        entity key goes to the next command waiting for it."""
        self.offsets.finish(pending.offset)
        self.fresh_done.append(pending.offset)
        self._release(pending)

    def _release(self, pending: _Pending) -> None:
        """``pending``'s attempt has ended (or never will run): its key goes on."""
        if pending.entity is not None:
            self._hand_over(pending.entity)

    def _hand_over(self, entity: str) -> None:
        """The key's attempt is done: start the next command waiting for the key (it sees the
        state written before this call); one that cannot start is dead-lettered on its own."""
        while True:
            nxt = self.keys.hand_over(entity)  # type: ignore[union-attr]
            if nxt is None:
                return
            runner = nxt.runner
            runner.key_waiting -= 1
            try:
                runner._start(nxt)
            except Exception as exc:  # noqa: BLE001 - that command's fault, not the worker's
                bad = SerializationError(f"{runner._describe(nxt.command)} cannot start: {exc}")
                runner._reject(nxt, bad, "step start")
                runner.offsets.finish(nxt.offset)
                runner.fresh_done.append(nxt.offset)
                continue
            runner._resume()
            return

    def _reject(self, pending: _Pending, exc: BaseException, stage: str) -> None:
        """``pending`` cannot be run or answered as it is: its instance gets a non-retryable
        failure saying why, and the command goes to the dead-letter topic, in one transaction.
        The caller finishes its offset."""
        self._reply_failure(pending.command, exc)
        self._dead_letter(pending, exc, stage)

    def _reply_failure(self, command: StepCommand, exc: BaseException) -> None:
        """Answer ``command`` with a non-retryable failure, if the producer takes it (a reply
        partition that does not exist, say, cannot be answered: the dead letter remains)."""
        reply = dumps(command.failure(_error(exc), False).to_json())
        try:
            self._send_reply(command, reply)
            try:  # its dead letter says so: replaying it would run a call given up on
                setattr(exc, ANSWERED, True)
            except AttributeError:
                pass
        except KafkaException as refused:
            if client_broken(refused):
                raise
            log.warning("%s cannot be answered: %s", self._describe(command), refused)
        except SerializationError as refused:  # over the limit: a huge instance id or topic
            log.warning("%s cannot be answered: %s", self._describe(command), refused)

    def _send_reply(self, command: StepCommand, reply: bytes) -> None:
        self.rt.send(command.reply, command.id.encode(), reply, command.reply_partition, None, None)

    def _dead_letter(self, pending: _Pending, exc: BaseException, stage: str) -> None:
        self.rt.dead_letter_record(
            self.node.topic,
            (pending.entity or pending.command.id).encode(),
            dumps(pending.command.to_json()),
            exc,
            stage,
            f"{self.node.kind}:{self.node.name}",
        )

    def _arguments(self, command: StepCommand) -> list[Any]:
        declared = self.sdef.args
        received = [
            unpack(declared[i], a, f"argument {i} of step {self.sdef.name!r}")
            if i < len(declared)
            else a
            for i, a in enumerate(command.args)
        ]
        if self.plain_args:
            return received
        name = self.sdef.name
        args = [
            rebuild(t, a, f"argument {i + 1} of step {name!r}")
            for i, (t, a) in enumerate(zip(self.types, received, strict=False))
        ]
        return args + received[len(self.types) :]

    def _start(self, pending: _Pending) -> None:
        """``pending`` holds its entity key (if any): submit it to the step's lane, and stop
        fetching while the lane has a full line waiting."""
        self._launch(pending)
        if self.lane.saturated:
            self._pause()
            self.lane.when_room(self._wake)

    # -- running ---------------------------------------------------------------------------------

    def _launch(self, pending: _Pending) -> None:
        """Submit one attempt (it holds its entity key, if any); the state it sees is read now,
        after every earlier attempt on the key completed."""
        state = None
        if pending.entity is not None:
            state = self.store.get(pending.entity)  # type: ignore[union-attr]
        ctx = StepContext(self.sdef, pending.command, pending.entity, state)
        attempt = Attempt(
            self.lane,
            self,
            self.sdef.fn,
            ctx,
            pending.args,
            self.timeout,
            (pending, self.generation),
        )
        self.attempts.add(attempt)
        self.executor.submit(attempt)

    # -- cancelling -------------------------------------------------------------------------------

    def _cancel(self, cancel: StepCancel) -> None:
        """Stop the attempt ``cancel`` names: interrupt it if it runs, answer it with a
        ``Cancelled`` failure if it has not started; nothing if it was answered already.

        Found by scanning this task's attempts and key waiters rather than through an index
        kept per command: cancels are rare, commands are the hot path."""
        for attempt in self.attempts:
            pending, generation = attempt.token
            if generation == self.generation and _names(cancel, pending.command):
                break
        else:
            waiting = self._withdraw_waiting(cancel)
            if waiting is not None:  # never ran, never held its key
                self._answer_cancelled(waiting, holds_key=False)
            return
        attempt.ctx.cancelled = True
        if attempt.timed_out:
            return  # answered already; the flag may still stop its thread
        if self.executor.interrupt(attempt):  # it had not started: it never will
            self.attempts.discard(attempt)
            self._answer_cancelled(pending, holds_key=True)
        # else: it runs; its completion comes as usual (a Cancelled failure if the interruption
        # ended it, whatever else it ended with otherwise)

    def _withdraw_waiting(self, cancel: StepCancel) -> _Pending | None:
        """Take the command ``cancel`` names out of the line for a busy entity key."""
        keys = self.keys
        if keys is None or not self.key_waiting:
            return None
        for key, line in keys.waiting.items():
            for pending in line:
                if pending.runner is self and _names(cancel, pending.command):
                    line.remove(pending)
                    if not line:
                        del keys.waiting[key]  # the key stays busy: its attempt runs
                    self.key_waiting -= 1
                    self._resume()
                    return pending
        return None

    def _answer_cancelled(self, pending: _Pending, holds_key: bool) -> None:
        """Reply a non-retryable ``Cancelled`` failure for an attempt that never ran."""
        error = Cancelled(f"{self._describe(pending.command)} was cancelled before it started")
        self._count_outcome("cancelled", None, pending.command.attempt)
        reply = dumps(pending.command.failure(StepError.of(error), False).to_json())
        self._guarded(pending, lambda: self._send_reply(pending.command, reply), "step cancel")
        self._finished(pending, holds_key)

    # -- AttemptOwner (worker thread) ------------------------------------------------------------

    def attempt_done(self, attempt: Attempt) -> None:
        """The attempt ended (returned, raised, was cancelled, or never ran): apply it unless
        it is void, then free its entity key — whatever happened to its task meanwhile."""
        self.attempts.discard(attempt)
        pending, generation = attempt.token
        # Never ran (its command comes again), reported already (timed out), or void (the
        # command runs again or was answered): nothing to apply.
        if not (
            (attempt.cancelled and attempt.started_at is None)
            or attempt.timed_out
            or generation != self.generation
            or self.closed
        ):
            self._complete_guarded(pending, attempt)
        self._release(pending)

    def attempt_timed_out(self, attempt: Attempt) -> None:
        """Answered now; the key is freed when the attempt ends: at once if it was still
        waiting for a slot (it never runs), else when its function returns."""
        attempt.ctx.closed = True
        pending, generation = attempt.token
        if generation == self.generation and not self.closed:
            waited = " waiting for a slot" if attempt.started_at is None else ""
            attempt.error = StepTimedOut(
                f"step {self.sdef.name!r} took longer than {attempt.timeout:g} s{waited}"
            )
            self._complete_guarded(pending, attempt)
        if attempt.started_at is None:
            self.attempts.discard(attempt)
            self._release(pending)

    def _complete_guarded(self, pending: _Pending, attempt: Attempt) -> None:
        """Apply a completion inside the open cycle: the reply, the entity's new state and the
        finished offset. A completion that cannot be delivered (a result over the record limit,
        a value that cannot be serialized, a reply the producer refuses) writes nothing: its
        state write is rolled back, the instance gets a non-retryable failure saying why, and
        the command is dead-lettered, all in this transaction. Only a broken client stops the
        worker (which aborts the cycle: the command runs again on the next owner)."""
        interrupted = self._interruption(attempt)
        if interrupted is not None:
            attempt.error = interrupted
        if self.executor.metrics is not None:
            self._count(attempt, interrupted is not None)
        self._guarded(pending, lambda: self._deliver(pending, attempt), "step completion")
        self._finished(pending, holds_key=False)  # its key goes on when it ended (the caller)

    def _guarded(self, pending: _Pending, deliver: Callable[[], None], stage: str) -> None:
        """Run ``deliver``; if it raises, undo its store writes, answer the instance with a
        non-retryable failure saying why and dead-letter the command (one transaction). A
        broken client is re-raised: the worker aborts the cycle and recovers."""
        savepoint = self.rt.savepoint()
        try:
            deliver()
        except KafkaException as exc:
            if client_broken(exc):
                raise
            self.rt.rollback(savepoint)
            rejected = ReplyRejected(
                f"{self._describe(pending.command)}: the producer refused its reply to "
                f"{pending.command.reply!r}: {exc.args[0].str() if exc.args else exc}"
            )
            self._reject(pending, rejected, stage)
        except Exception as exc:  # noqa: BLE001 - bad data in the command, not a worker fault
            self.rt.rollback(savepoint)
            self._reject(pending, exc, stage)

    def _interruption(self, attempt: Attempt) -> Cancelled | None:
        """``Cancelled`` when the attempt was ended by its cancel: never started, cancelled at
        an ``await``, or stopped at ``ctx.check_cancelled()``. None otherwise: a result that
        arrives despite the cancel is a result (the effect happened; the workflow records it
        and compensates), and any other error is that error."""
        if not attempt.interrupted:
            return None
        error = attempt.error
        if attempt.started_at is None:
            return Cancelled(f"{self.describe(attempt)} was cancelled before it started")
        if isinstance(error, asyncio.CancelledError):
            return Cancelled(f"{self.describe(attempt)} was cancelled while it ran")
        if isinstance(error, Cancelled):
            return error
        return None

    def _finished(self, pending: _Pending, holds_key: bool) -> None:
        """``pending`` is answered: its offset is finished, its entity key goes on."""
        self.offsets.finish(pending.offset)
        self.fresh_done.append(pending.offset)
        if holds_key and pending.entity is not None:
            self._hand_over(pending.entity)

    def identify(self, attempt: Attempt) -> AttemptId:
        pending, generation = attempt.token
        command = pending.command
        void = generation != self.generation or self.closed
        return AttemptId(self.sdef.name, command.id, command.seq, command.attempt, void)

    def describe(self, attempt: Attempt) -> str:
        return self._describe(attempt.token[0].command)

    def _count(self, attempt: Attempt, cancelled: bool) -> None:
        outcome = (
            "ok"
            if attempt.error is None
            else "cancelled"
            if cancelled
            else "timed_out"
            if isinstance(attempt.error, StepTimedOut)
            else "failed"
        )
        started = attempt.started_at
        took = None if started is None else time.monotonic() - started
        self._count_outcome(outcome, took, attempt.token[0].command.attempt)

    def _count_outcome(self, outcome: str, took: float | None, attempt: int) -> None:
        metrics = self.executor.metrics
        if metrics is not None:
            metrics.step_attempt(self.sdef.name, outcome, took, attempt)

    def _deliver(self, pending: _Pending, attempt: Attempt) -> None:
        """Send the attempt's reply and write the entity's new state; raises (having sent
        nothing) when the outcome cannot be delivered. The caller rolls the state back.

        A value that cannot be serialized or is over the record limit fails the attempt for
        good: no retry makes it fit."""
        command, ctx = pending.command, attempt.ctx
        exc = attempt.error
        if exc is not None:
            if not isinstance(exc, Exception):  # cancelled, or SystemExit in a step
                exc = RuntimeError(f"{type(exc).__name__}: {exc}")
            retryable = not isinstance(exc, self.non_retryable) and not (
                attempt.interrupted and isinstance(exc, Cancelled)
            )
            remember(type(exc))
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s failed: %r", self.describe(attempt), exc)
            self._send_reply(command, dumps(command.failure(_error(exc), retryable).to_json()))
            return
        try:
            packed = pack(self.sdef.result, attempt.result)
            reply = dumps(command.result(packed).to_json())
        except Exception as bad:  # noqa: BLE001
            raise SerializationError(
                f"step {self.sdef.name!r} returned a value that cannot be serialized for the "
                f"workflow (instance {command.id!r}): {type(bad).__name__}: {bad}"
            ) from None
        # The result must be within the payload limit (a reply over one record goes as
        # chunks), and so must the journal entry the orchestrator writes from it (the result
        # next to the call's arguments): one that does not would strand the instance there.
        limit = self.rt.max_payload_bytes
        size = len(dumps(packed)) if len(reply) > limit else 0  # measured only when big
        if size > limit or (size and len(reply) + pending.size > journal_limit(limit)):
            raise ResultTooLarge(
                f"{self._describe(command)} returned a result of {size} bytes "
                f"encoded, over the limit of {limit} bytes a payload may have "
                "(App(max_payload_bytes=...)); return a reference to the data (a key, a URL) "
                "instead of the data"
            )
        changed, state = ctx.changed_state()
        if changed:
            store = self.store
            assert store is not None
            try:
                if state is None:
                    store.delete(pending.entity)
                else:
                    store.put(pending.entity, state)  # encodes, or raises and writes nothing
            except SerializationError as bad:
                raise SerializationError(
                    f"step {self.sdef.name!r} set the state of entity {ctx.entity!r} (instance "
                    f"{command.id!r}) to a value store {store.name!r} cannot keep: {bad}"
                ) from None
        self._send_reply(command, reply)

    # -- flow control ----------------------------------------------------------------------------

    # Per runner, on the runner's own topic: a task of several entity steps reads several
    # step topics, and a pause of the whole task by one runner was undone by another one's
    # resume while the first still had its flag set, so its commands queued without bound.

    def _pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.rt.pause_input(self.node.topic)

    def _resume(self) -> None:
        if not self.paused or self.closed:
            return  # a stale wake-up of a closed task must not resume its successor's input
        if self.lane.saturated:
            self.lane.when_room(self._wake)  # whichever way this runner got paused
        elif self.key_waiting < QUEUE_PER_TASK:
            self.paused = False
            self.rt.resume_input(self.node.topic)

    # -- offsets ---------------------------------------------------------------------------------

    def committable(self, position: int) -> int:
        """The next offset to commit for this partition, given the consumer's ``position``;
        writes the done marks this cycle needs (called before the changelog is prepared)."""
        if self.done_above is None:
            self._load_done()
        low = self.offsets.lowest_unfinished()
        nxt = position if low is None else min(low, position)
        done_above = self.done_above
        assert done_above is not None
        for offset in self.fresh_done:
            if offset >= nxt:
                self.done.put(offset.to_bytes(8, "big"), 1)
                done_above.add(offset)
        self.fresh_done.clear()
        if nxt > self.last_committable and done_above:
            for offset in [o for o in done_above if o < nxt]:
                self.done.delete(offset.to_bytes(8, "big"))
                done_above.discard(offset)
        self.last_committable = nxt
        return nxt

    def _load_done(self) -> None:
        self.done_above = {int.from_bytes(k, "big") for k, _ in self.done.items()}

    # -- abort and close -------------------------------------------------------------------------

    def reset(self) -> None:
        """The cycle aborted and the input is rewound to the committed offset: every command
        above it comes again, so forget them; attempts still running are void (async ones are
        cancelled) and keep their keys until they end."""
        self.generation += 1
        self._forget_attempts()
        self.key_waiting = 0
        self.offsets.clear()
        self.fresh_done.clear()
        self.done_above = None
        self.last_committable = -1
        self._resume()

    def close(self) -> None:
        """The task is revoked (or the worker stops): only this partition's attempts are
        given up, as on an abort."""
        self.generation += 1
        self.closed = True
        self._forget_attempts()

    def _forget_attempts(self) -> None:
        """Attempts not started yet are never run (their completion comes at once and frees
        their keys); running async ones are cancelled; running sync ones finish, their results
        void. Commands waiting for a key are dropped: they come again."""
        for attempt in list(self.attempts):
            self.executor.forget(attempt)
        if self.keys is not None:
            self.keys.drop_waiting(self)


def _names(cancel: StepCancel, command: StepCommand) -> bool:
    """``cancel`` is for ``command``'s attempt (the same instance, call, attempt and run)."""
    return (
        cancel.id == command.id
        and cancel.seq == command.seq
        and cancel.attempt == command.attempt
        and cancel.run == command.run
    )


def _error(exc: BaseException) -> StepError:
    """``exc`` as a failure reply carries it, its message cut to ``MAX_ERROR_MESSAGE``."""
    error = StepError.of(exc)
    if len(error.message) <= MAX_ERROR_MESSAGE:
        return error
    cut = f"{error.message[:MAX_ERROR_MESSAGE]}... ({len(error.message)} characters)"
    return StepError(error.type, cut, error.module, error.qualname)
