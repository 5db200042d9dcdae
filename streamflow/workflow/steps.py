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

Size: the step node, its runner, the entity key locks and the done-offset bookkeeping are one
mechanism (an attempt's life from command to committed reply); split, each part would only make
sense with the others open beside it.
"""

from __future__ import annotations

import copy
import inspect
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from streamflow.errors import SerializationError
from streamflow.runtime.completion_offsets import CompletionOffsets
from streamflow.runtime.step_executor import Attempt, AttemptId
from streamflow.topology.nodes import Node, ProcessorRuntime, Push
from streamflow.topology.specs import StoreSpec
from streamflow.workflow.api import NonRetryable, StepDef
from streamflow.workflow.failures import remember
from streamflow.workflow.messages import StepCommand, StepError, dumps
from streamflow.workflow.payloads import is_plain_type, pack, parameter_types, rebuild, unpack

log = logging.getLogger(__name__)

_UNSET: Any = object()
_IMMUTABLE = (int, float, str, bool, bytes, type(None))
QUEUE_PER_TASK = 1000
"""Commands a step task holds for busy entity keys before it pauses its partition."""


class StepTimedOut(TimeoutError):
    """A sync attempt passed its ``timeout``; its late result and state writes are rejected."""


class StepContext:
    """What a step function receives as ``ctx``."""

    __slots__ = (
        "_assigned",
        "_original",
        "_read",
        "_state",
        "attempt",
        "closed",
        "entity",
        "idempotency_key",
        "step",
        "workflow_id",
    )

    def __init__(self, step: StepDef, command: StepCommand, entity: str | None, state: Any) -> None:
        self.step = step.name
        self.workflow_id: str = command.id
        self.idempotency_key: str = command.idempotency_key
        """``"<workflow id>:<step seq>"``: the same for every attempt; pass it to what you call."""
        self.attempt: int = command.attempt
        self.entity = entity
        self._original = state
        self._state: Any = _UNSET
        self._assigned = False
        self._read = False
        self.closed = False

    @property
    def state(self) -> Any:
        """Entity steps: a copy of the entity's current value (None when it has none yet)."""
        if self.entity is None:
            raise TypeError(
                f"step {self.step!r}: ctx.state is only available in entity steps "
                "(@app.step(entity=...))"
            )
        if self._state is _UNSET:
            original = self._original
            self._state = original if isinstance(original, _IMMUTABLE) else copy.deepcopy(original)
            self._read = True
        return self._state

    @state.setter
    def state(self, value: Any) -> None:
        if self.entity is None:
            raise TypeError(
                f"step {self.step!r}: ctx.state is only available in entity steps "
                "(@app.step(entity=...))"
            )
        if self.closed:
            raise StepTimedOut(
                f"step {self.step!r} attempt {self.idempotency_key}#{self.attempt} "
                "timed out; its state write is rejected"
            )
        self._state = value
        self._assigned = True

    def changed_state(self) -> tuple[bool, Any]:
        """(True, new value) when the attempt assigned or mutated its entity's state."""
        if self._assigned:
            return True, self._state
        if self._read and not isinstance(self._state, _IMMUTABLE) and self._state != self._original:
            return True, self._state
        return False, None


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
        return f"retry {self.step.retry.attempts}x{limit}{extra}"

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
        command = StepCommand.from_json(raw)
        args = self._arguments(command)
        entity = None
        if self.store is not None:
            if not command.args or command.args[0] is None:
                raise SerializationError(
                    f"entity step {self.sdef.name!r}: command for {command.id!r} has no entity key"
                )
            entity = str(command.args[0])
        pending = _Pending(self, offset, command, args, entity)
        self.offsets.admit(offset)
        if entity is not None and not self.keys.try_lock(entity):  # type: ignore[union-attr]
            self.keys.wait(pending)  # type: ignore[union-attr]
            self.key_waiting += 1
            if self.key_waiting >= QUEUE_PER_TASK:
                self._pause()
            return
        try:
            self._start(pending)
        except BaseException:
            self._abandon(pending)  # the task dead-letters the command
            raise

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
                runner._dead_letter(nxt, exc, "step start")
                runner.offsets.finish(nxt.offset)
                runner.fresh_done.append(nxt.offset)
                continue
            runner._resume()
            return

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
        """A completion that cannot be applied (it raised) dead-letters its command instead of
        stopping the worker; the command's offset is finished either way (its key is freed
        when the attempt ends, by the caller)."""
        try:
            self._complete(pending, attempt.ctx, attempt)
        except Exception as exc:  # noqa: BLE001 - bad data in the command, not a worker fault
            self._dead_letter(pending, exc, "step completion")
            self.offsets.finish(pending.offset)
            self.fresh_done.append(pending.offset)

    def identify(self, attempt: Attempt) -> AttemptId:
        pending, generation = attempt.token
        command = pending.command
        void = generation != self.generation or self.closed
        return AttemptId(self.sdef.name, command.id, command.seq, command.attempt, void)

    def describe(self, attempt: Attempt) -> str:
        command = attempt.token[0].command
        return (
            f"step {self.sdef.name!r} attempt {command.attempt} of instance {command.id!r} "
            f"(seq {command.seq})"
        )

    def _complete(self, pending: _Pending, ctx: StepContext, attempt: Attempt) -> None:
        """The attempt finished (worker thread, inside the open cycle): reply, state, offset."""
        command = pending.command
        metrics = self.executor.metrics
        if metrics is not None:
            outcome = (
                "ok"
                if attempt.error is None
                else "timed_out"
                if isinstance(attempt.error, StepTimedOut)
                else "failed"
            )
            started = attempt.started_at
            took = None if started is None else time.monotonic() - started
            metrics.step_attempt(self.sdef.name, outcome, took, command.attempt)
        reply, new_state = self._reply(command, ctx, attempt)
        if new_state is not _UNSET:
            store = self.store
            assert store is not None
            try:
                if new_state is None:
                    store.delete(pending.entity)
                else:
                    store.put(pending.entity, new_state)  # encodes, or raises and writes nothing
            except SerializationError as bad:
                reply = self._failure(
                    command,
                    attempt,
                    SerializationError(
                        f"step {self.sdef.name!r} set the state of entity {ctx.entity!r} to a "
                        f"value store {store.name!r} cannot serialize: {bad}"
                    ),
                    retryable=False,
                )
        self.rt.send(command.reply, command.id.encode(), reply, command.reply_partition, None, None)
        self.offsets.finish(pending.offset)
        self.fresh_done.append(pending.offset)

    def _reply(self, command: StepCommand, ctx: StepContext, attempt: Attempt) -> tuple[bytes, Any]:
        """The encoded reply, and the entity's new state (``_UNSET``: leave it).

        A value that cannot be serialized (the result here, the state when the store encodes
        it in ``_complete``) fails the attempt for good: no retry makes it serializable."""
        exc = attempt.error
        if exc is None:
            changed, state = ctx.changed_state()
            try:
                reply = dumps(command.result(pack(self.sdef.result, attempt.result)).to_json())
                return reply, (state if changed else _UNSET)
            except Exception as bad:  # noqa: BLE001
                exc = SerializationError(
                    f"step {self.sdef.name!r} returned a value that cannot be serialized "
                    f"for the workflow: {type(bad).__name__}: {bad}"
                )
            return self._failure(command, attempt, exc, retryable=False), _UNSET
        if not isinstance(exc, Exception):  # cancelled, or SystemExit in a step
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        return self._failure(command, attempt, exc, not isinstance(exc, self.non_retryable)), _UNSET

    def _failure(
        self, command: StepCommand, attempt: Attempt, exc: BaseException, retryable: bool
    ) -> bytes:
        remember(type(exc))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s failed: %r", self.describe(attempt), exc)
        return dumps(command.failure(StepError.of(exc), retryable).to_json())

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
