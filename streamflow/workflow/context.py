"""The workflow context: the replay engine behind ``ctx.step``, ``ctx.sleep``, ``ctx.wait_signal``.

Every call takes the next sequence number. If the journal already has an entry for it, the
call must ask for the same thing (kind, name, digest of the arguments) — otherwise the code
changed under a running instance and we raise ``NonDeterminism`` naming both calls. A journaled
result returns at once; a new call records an entry, emits its command, and the workflow
suspends at its ``await`` until an event completes the entry.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from streamflow.errors import NonDeterminism
from streamflow.serde.avro.serde import AvroSerde
from streamflow.topology.specs import TopicSpec
from streamflow.workflow.api import Cancelled, SignalTimeout, StepDef, WorkflowDef
from streamflow.workflow.failures import step_exception
from streamflow.workflow.instance_filter import checked_attributes
from streamflow.workflow.journal import Journal
from streamflow.workflow.messages import StepError
from streamflow.workflow.payloads import (
    args_digest,
    digest,
    pack,
    pack_args,
    rebuild,
    return_type,
    to_plain,
    unpack,
)


class Effects(Protocol):
    """What a context asks of the transition it runs in (``workflow.transition``): the calls
    record what they want, and the transition returns it as data."""

    now_ms: int

    def start_step(self, journal: Journal, seq: int, sdef: StepDef, args: list[Any]) -> None: ...

    def check_size(self, what: str, value: Any) -> None: ...

    def cancelled_call(self, journal: Journal, entry: dict[str, Any]) -> None: ...

    def start_timer(
        self, journal: Journal, seq: int, kind: str, due_ms: int, what: str
    ) -> None: ...

    def wait_signal(
        self, journal: Journal, seq: int, name: str, timeout_ms: int | None
    ) -> None: ...

    def avro_serdes(self, topic: str) -> tuple[AvroSerde | None, AvroSerde | None]: ...

    def emit(self, topic: str, key: Any, value: Any) -> None: ...


SUSPEND = object()
"""Yielded through the coroutine to the orchestrator: "nothing more to do until an event"."""


class ContinueAsNew(Exception):
    def __init__(self, input: Any) -> None:
        super().__init__("continue_as_new")
        self.input = input


R = TypeVar("R")
P = ParamSpec("P")


class _Call(Generic[R]):
    """An awaitable journal entry (a step, a timer, a signal wait): awaited, an ``R``."""

    __slots__ = ("_convert", "_ctx", "_seq")

    def __init__(
        self, ctx: WorkflowContext, seq: int, convert: Callable[[dict[str, Any]], R]
    ) -> None:
        self._ctx, self._seq, self._convert = ctx, seq, convert

    def __await__(self) -> Generator[Any, None, R]:
        entries = self._ctx.journal.entries
        while entries[self._seq]["status"] == "pending":
            yield SUSPEND
        entry = entries[self._seq]
        if entry["status"] == "cancelled":
            raise Cancelled(
                f"instance {self._ctx.journal.id!r} was cancelled while it waited for "
                f"{entry['kind']} {entry['name']!r}"
            )
        return self._convert(entry)


class WorkflowContext:
    """What a workflow function receives as ``ctx``. All of its answers are journaled."""

    def __init__(
        self,
        journal: Journal,
        effects: Effects,
        steps: Mapping[Any, StepDef],
        workflow: WorkflowDef | None = None,
    ) -> None:
        self.journal = journal
        self.effects = effects
        self._steps = steps
        self._workflow = workflow
        self._seq = 0

    @property
    def workflow_id(self) -> str:
        return self.journal.id

    # -- the determinism check -------------------------------------------------------------------

    def _next(
        self,
        kind: str,
        name: str,
        args_digest: str,
        rehash: Callable[[dict[str, Any]], str] | None = None,
    ) -> tuple[int, dict[str, Any] | None]:
        """``rehash`` recomputes a journaled entry's digest under the code's current schemas:
        an entry with Avro arguments written under an older schema version digests differently
        as written, and must not be taken for a changed call."""
        seq = self._seq
        self._seq += 1
        entry = self.journal.entries.get(seq)
        if (
            entry is not None
            and (entry["kind"], entry["name"], entry["digest"]) != (kind, name, args_digest)
            and not (
                rehash is not None
                and (entry["kind"], entry["name"]) == (kind, name)
                and rehash(entry) == args_digest
            )
        ):
            raise NonDeterminism(
                f"workflow {self.journal.header['workflow']!r} v{self.journal.header['version']} "
                f"instance {self.journal.id!r}: call #{seq} is now {kind} {name!r} but the journal "
                f"recorded {entry['kind']} {entry['name']!r}"
                + (
                    " with other arguments"
                    if (entry["kind"], entry["name"]) == (kind, name)
                    else ""
                )
                + "; ship changed workflow code as a new version (@app.workflow(version=N+1))"
            )
        return seq, entry

    # -- steps -----------------------------------------------------------------------------------

    @overload
    def step(
        self,
        step: Callable[Concatenate[Any, P], Coroutine[Any, Any, R]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> _Call[R]: ...

    @overload
    def step(
        self, step: Callable[Concatenate[Any, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> _Call[R]: ...

    def step(self, step: Any, *args: Any, **kwargs: Any) -> _Call[Any]:
        """Run a step (at least once per attempt, with retries); await it for its result.

        Typed: ``await ctx.step(debit, account, amount)`` is checked against ``debit``'s
        parameters after ``ctx``, and is its return type (an ``async def`` step's too).
        The command is sent when ``step()`` is called, so several steps started before the
        first ``await`` run in parallel.
        """
        if kwargs:
            raise TypeError(
                f"ctx.step({getattr(step, '__name__', step)!r}, ...): pass the step's "
                f"arguments by position, not by name ({', '.join(kwargs)})"
            )
        sdef = self._step_def("ctx.step", step)
        plain = _packed_args(f"ctx.step({sdef.name}, ...)", sdef, args)
        seq, entry = self._next(
            "step",
            sdef.name,
            args_digest(sdef.name, sdef.args, plain),
            _rehash_args(sdef) if sdef.args else None,
        )
        if entry is None:
            if self.journal.cancel_requested:
                self._cancelled("step", sdef.name, seq, args_digest(sdef.name, sdef.args, plain))
            else:
                self.effects.start_step(self.journal, seq, sdef, plain)
        result_type = return_type(sdef.fn)

        def convert(entry: dict[str, Any]) -> Any:
            if entry["status"] == "failed":
                raise step_exception(
                    sdef.name, StepError.from_json(entry["error"]), entry["attempt"]
                )
            what = f"the result of step {sdef.name!r}"
            return rebuild(result_type, unpack(sdef.result, entry.get("result"), what), what)

        return _Call(self, seq, convert)

    def _cancelled(self, kind: str, name: str, seq: int, call_digest: str) -> None:
        self.effects.cancelled_call(
            self.journal, {"seq": seq, "kind": kind, "name": name, "digest": call_digest}
        )

    def compensate(
        self, step: Callable[Concatenate[Any, P], Any], *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Register ``step(*args)`` to run if the workflow later fails for good or is cancelled.

        Compensations run in reverse order of registration (a saga's undo log).
        """
        if kwargs:
            raise TypeError(
                f"ctx.compensate({getattr(step, '__name__', step)!r}, ...): pass the step's "
                f"arguments by position, not by name ({', '.join(kwargs)})"
            )
        sdef = self._step_def("ctx.compensate", step)
        plain = _packed_args(f"ctx.compensate({sdef.name}, ...)", sdef, args)
        call_digest = args_digest(sdef.name, sdef.args, plain)
        seq, entry = self._next(
            "compensate", sdef.name, call_digest, _rehash_args(sdef) if sdef.args else None
        )
        if entry is None:
            self.effects.check_size(f"the arguments of ctx.compensate({sdef.name}, ...)", plain)
            self.journal.put_entry(
                {
                    "seq": seq,
                    "kind": "compensate",
                    "name": sdef.name,
                    "digest": call_digest,
                    "status": "done",
                    "args": plain,
                }
            )

    def _step_def(self, call: str, step: Any) -> StepDef:
        sdef = None
        try:
            sdef = self._steps.get(step) or self._steps.get(getattr(step, "__name__", None))
        except TypeError:  # unhashable
            pass
        if sdef is None:
            raise TypeError(
                f"{call}(step, ...): {step!r} is not a registered step; pass a "
                "function decorated with @app.step"
            )
        return sdef

    # -- time, randomness, ids -------------------------------------------------------------------

    def _recorded(self, kind: str, make: Callable[[], Any]) -> Any:
        seq, entry = self._next(kind, kind, "")
        if entry is None:
            entry = self.journal.put_entry(
                {
                    "seq": seq,
                    "kind": kind,
                    "name": kind,
                    "digest": "",
                    "status": "done",
                    "result": make(),
                }
            )
        return entry["result"]

    def set_attributes(self, **values: Any) -> None:
        """Search attributes of this instance (scalars: str, int, float, bool, None): kept in
        its header, shown by ``workflows show``, and what ``client.list(attributes=...)``,
        ``workflows list --attribute`` and the console select by. Setting one again replaces
        its value; a replay sets the same values again, which changes nothing."""
        header = self.journal.header
        merged = checked_attributes(header.get("attributes") or {}, values)
        if merged != header.get("attributes"):
            self.journal.set(attributes=merged)

    def now(self) -> datetime:
        """The time as the workflow first saw it at this point (the same on every replay)."""
        ms = self._recorded("now", lambda: self.effects.now_ms)
        return datetime.fromtimestamp(ms / 1000, UTC)

    def random(self) -> float:
        value: float = self._recorded("random", random.random)
        return value

    def uuid(self) -> str:
        value: str = self._recorded("uuid", lambda: str(uuid.uuid4()))
        return value

    # -- timers and signals ----------------------------------------------------------------------

    def sleep(self, duration: timedelta | float) -> _Call[None]:
        """A durable timer: survives restarts, rebalances and months of waiting."""
        ms = _milliseconds("ctx.sleep", "duration", duration)
        seq, entry = self._next("sleep", "sleep", str(ms))
        if entry is None and self.journal.cancel_requested:
            self._cancelled("sleep", "sleep", seq, str(ms))
        elif entry is None:
            self.effects.start_timer(self.journal, seq, "sleep", self.effects.now_ms + ms, str(ms))
        return _Call(self, seq, lambda e: None)

    def sleep_until(self, when: datetime) -> _Call[None]:
        if not isinstance(when, datetime):
            raise TypeError(
                f"ctx.sleep_until(when): expected a datetime, got {type(when).__name__} {when!r}"
            )
        due = int(when.timestamp() * 1000)
        seq, entry = self._next("sleep", "sleep_until", str(due))
        if entry is None and self.journal.cancel_requested:
            self._cancelled("sleep", "sleep_until", seq, str(due))
        elif entry is None:
            self.effects.start_timer(self.journal, seq, "sleep_until", due, str(due))
        return _Call(self, seq, lambda e: None)

    def wait_signal(self, name: str, timeout: timedelta | float | None = None) -> _Call[Any]:
        """Wait for signal ``name``; a signal sent before the wait is kept and returned at once."""
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"ctx.wait_signal(name): expected a signal name (str), got "
                f"{type(name).__name__} {name!r}"
            )
        timeout_ms = (
            None if timeout is None else _milliseconds("ctx.wait_signal", "timeout", timeout)
        )
        seq, entry = self._next("signal", name, str(timeout_ms))
        if entry is None and self.journal.cancel_requested:
            self._cancelled("signal", name, seq, str(timeout_ms))
        elif entry is None:
            self.effects.wait_signal(self.journal, seq, name, timeout_ms)

        wdef = self._workflow
        serde = wdef.signal_serde(name) if wdef is not None else None
        declared = wdef.signal_type(name) if wdef is not None else None

        def convert(entry: dict[str, Any]) -> Any:
            if entry.get("timed_out"):
                raise SignalTimeout(f"signal {name!r} did not arrive within {timeout_ms} ms")
            value = unpack(serde, entry.get("result"), f"signal {name!r}")
            return value if declared is None else rebuild(declared, value, f"signal {name!r}")

        return _Call(self, seq, convert)

    # -- output ----------------------------------------------------------------------------------

    def emit(self, topic: TopicSpec | str, key: Any, value: Any) -> None:
        """Write a record to ``topic`` (what ``app.topic(...)`` returned, or its name) in the
        same transaction as this workflow transition."""
        if isinstance(topic, TopicSpec):
            topic = topic.name
        elif not isinstance(topic, str):
            raise TypeError(
                f"ctx.emit(topic, key, value): topic must be what app.topic(...) "
                f"returned or a topic name, got {type(topic).__name__} {topic!r}"
            )
        serdes = self.effects.avro_serdes(topic)
        if not any(serdes):
            try:
                plain = to_plain([key, value])
            except TypeError as exc:
                raise TypeError(f"ctx.emit({topic!r}, key, value): {exc}") from None
            seq, entry = self._next("emit", topic, digest(topic, plain))
            if entry is None:
                self.effects.emit(topic, key, value)
                self.journal.put_entry(
                    {
                        "seq": seq,
                        "kind": "emit",
                        "name": topic,
                        "digest": digest(topic, plain),
                        "status": "done",
                    }
                )
            return
        # An Avro topic: the record is journaled packed, so a replay under a newer schema
        # compares it as that schema reads it (see ``_next``).
        packed = pack_args(serdes, [key, value])
        call_digest = args_digest(topic, serdes, packed)
        seq, entry = self._next(
            "emit", topic, call_digest, lambda e: args_digest(topic, serdes, e.get("args", ()))
        )
        if entry is None:
            self.effects.emit(topic, key, value)
            self.journal.put_entry(
                {
                    "seq": seq,
                    "kind": "emit",
                    "name": topic,
                    "digest": call_digest,
                    "status": "done",
                    "args": packed,
                }
            )

    def continue_as_new(self, input: Any) -> None:
        """End this run and start a fresh journal with ``input`` under the same id."""
        try:
            packed = pack(self._workflow.input if self._workflow else None, input)
        except Exception as exc:  # noqa: BLE001 - name the call
            raise TypeError(
                f"ctx.continue_as_new(input): the input ({type(input).__name__}) "
                f"cannot be journaled: {exc}"
            ) from None
        raise ContinueAsNew(packed)


def _milliseconds(call: str, argument: str, value: Any) -> int:
    if isinstance(value, timedelta):
        return int(value.total_seconds() * 1000)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value * 1000)
    raise TypeError(
        f"{call}({argument}): expected a timedelta or seconds, got {type(value).__name__} {value!r}"
    )


def _packed_args(call: str, sdef: StepDef, args: Sequence[Any]) -> list[Any]:
    """The call's arguments as they are sent and journaled; a value that cannot travel fails
    the call with a message naming the call and the argument."""
    if sdef.is_entity and (not args or args[0] is None):
        raise TypeError(
            f"{call}: entity step {sdef.name!r} needs the entity key as its first argument"
        )
    try:
        return pack_args(sdef.args, args)
    except Exception:
        for i, arg in enumerate(args):
            try:
                pack_args(sdef.args[i : i + 1], [arg])
            except Exception as exc:  # noqa: BLE001
                raise TypeError(
                    f"{call}: argument {i} ({type(arg).__name__}) cannot be sent to the step: {exc}"
                ) from None
        raise


def _rehash_args(sdef: StepDef) -> Callable[[dict[str, Any]], str]:
    return lambda entry: args_digest(sdef.name, sdef.args, entry.get("args", ()))
