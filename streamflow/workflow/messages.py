"""The workflow messages, defined once: what travels on ``<app>.<workflow>.events`` and
``<app>.step.<S>``, and how each is encoded.

Events (start, signal, cancel, step result, step failure, timer) go to the orchestrator of the
instance; step commands go to a step task. Every message that belongs to one *run* of an
instance carries its run number (``continue_as_new`` starts a new run): the orchestrator drops a
reply or a timer of another run, so a timer set by run 1 can never wake run 2 (see
docs/architecture.md, "Workflow runs").

The wire format is JSON (orjson): a message is a flat object with a ``type`` field; step
commands have none, their topic says what they are. Messages written before runs existed have
no ``run`` and are taken to belong to the current run.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, TypeVar, dataclass_transform

import orjson

from streamflow.errors import SerializationError

T = TypeVar("T")


@dataclass_transform(field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """A message type: slotted, compared and hashed by value, immutable by convention.

    Not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__``, which
    makes its ``__init__`` about 7x slower, and several messages are made per event."""
    return dataclass(slots=True, unsafe_hash=True)(cls)


# -- encoding ------------------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """JSON for messages and journal entries: sorted keys, so equal messages are equal bytes."""
    return orjson.dumps(
        value, default=_json_default, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):  # Avro bytes/fixed read back into a digest
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# -- events to the orchestrator -------------------------------------------------------------------


@record
class Start:
    """Start an instance; a second start with the same id is ignored (idempotent start)."""

    id: str
    input: Any = None
    version: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": "start", "id": self.id, "input": self.input, "version": self.version}


@record
class Signal:
    id: str
    name: str
    payload: Any = None

    def to_json(self) -> dict[str, Any]:
        return {"type": "signal", "id": self.id, "name": self.name, "payload": self.payload}


@record
class Cancel:
    id: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "cancel", "id": self.id}


@record
class Resume:
    """Run a suspended instance's code again (``streamflow workflows resume``): after a fix
    was deployed, or when the failure was in something the code read, not in the code."""

    id: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "resume", "id": self.id}


@record
class Terminate:
    """End an instance for good (``streamflow workflows fail``): no more code runs and no
    compensation; attempts in flight are cancelled and answered before it reports ``failed``."""

    id: str
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"type": "terminate", "id": self.id, "reason": self.reason}


@record
class Purge:
    """Delete a finished instance now (``streamflow workflows purge``), before its retention
    is over; an instance that has not ended is left alone."""

    id: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "purge", "id": self.id}


@record
class StepError:
    """Why an attempt failed: the exception's class (to raise it again in the workflow when
    that class can be imported there) and its message."""

    type: str
    message: str
    module: str | None = None
    qualname: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.module is not None:
            out["module"], out["qualname"] = self.module, self.qualname
        return out

    @classmethod
    def of(cls, exc: BaseException) -> StepError:
        kind = type(exc)
        return cls(kind.__name__, str(exc), kind.__module__, kind.__qualname__)

    @classmethod
    def from_json(cls, raw: Any) -> StepError:
        raw = raw if isinstance(raw, dict) else {}
        return cls(
            str(raw.get("type", "Error")),
            str(raw.get("message", "")),
            raw.get("module"),
            raw.get("qualname"),
        )


@record
class StepResult:
    id: str
    seq: int
    attempt: int
    result: Any = None
    run: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "step_result",
            "id": self.id,
            "seq": self.seq,
            "attempt": self.attempt,
            "result": self.result,
            "run": self.run,
        }


@record
class StepFailure:
    id: str
    seq: int
    attempt: int
    error: StepError
    retryable: bool = True
    run: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "step_failed",
            "id": self.id,
            "seq": self.seq,
            "attempt": self.attempt,
            "retryable": self.retryable,
            "error": self.error.to_json(),
            "run": self.run,
        }


@record
class TimerFired:
    """A durable timer came due: a sleep ended, a signal wait timed out, or a retry is due."""

    id: str
    seq: int
    timer: str
    run: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "timer",
            "id": self.id,
            "seq": self.seq,
            "timer": self.timer,
            "run": self.run,
        }


Event = Start | Signal | Cancel | Resume | Terminate | Purge | StepResult | StepFailure | TimerFired


def decode_event(raw: Any, key: str | None = None) -> Event:
    """An events-topic value as its typed record; anything else raises ``SerializationError``
    naming what is wrong (the record goes to the dead-letter topic)."""
    if not isinstance(raw, dict):
        raise SerializationError(f"workflow event must be a JSON object, got {type(raw).__name__}")
    kind = raw.get("type")
    instance_id = raw.get("id") or key
    if not isinstance(instance_id, str) or not instance_id:
        raise SerializationError(f"workflow event {kind!r} has no instance id")
    try:
        if kind == "start":
            return Start(instance_id, raw.get("input"), raw.get("version"))
        if kind == "signal":
            return Signal(instance_id, str(raw["name"]), raw.get("payload"))
        if kind == "cancel":
            return Cancel(instance_id)
        if kind == "purge":
            return Purge(instance_id)
        if kind == "resume":
            return Resume(instance_id)
        if kind == "terminate":
            return Terminate(instance_id, str(raw.get("reason") or ""))
        if kind == "step_result":
            return StepResult(
                instance_id, int(raw["seq"]), int(raw["attempt"]), raw.get("result"), raw.get("run")
            )
        if kind == "step_failed":
            return StepFailure(
                instance_id,
                int(raw["seq"]),
                int(raw["attempt"]),
                StepError.from_json(raw.get("error")),
                bool(raw.get("retryable", True)),
                raw.get("run"),
            )
        if kind == "timer":
            return TimerFired(instance_id, int(raw["seq"]), str(raw["timer"]), raw.get("run"))
    except (KeyError, TypeError, ValueError) as exc:
        raise SerializationError(
            f"workflow event {kind!r} for {instance_id!r} is malformed: {type(exc).__name__}: {exc}"
        ) from None
    raise SerializationError(f"unknown workflow event type {kind!r} for {instance_id!r}")


# -- commands to a step task ----------------------------------------------------------------------


@record
class StepCancel:
    """Stop an attempt of a step: written by the orchestrator to the step topic, with the key
    of the command it cancels (so the same partition, after that command). The step task
    cancels the attempt if it runs (``async def``: the task is cancelled; ``def``: the step sees
    ``ctx.cancelled``) and answers an attempt that has not started with a non-retryable
    ``Cancelled`` failure. Its offset is finished at once; a cancel that finds nothing (the
    attempt already answered) is a no-op."""

    workflow: str
    id: str
    seq: int
    attempt: int
    run: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "cancel": 1,
            "wf": self.workflow,
            "id": self.id,
            "seq": self.seq,
            "attempt": self.attempt,
            "run": self.run,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StepCancel:
        try:
            return cls(
                str(raw.get("wf", "")),
                str(raw["id"]),
                int(raw["seq"]),
                int(raw["attempt"]),
                raw.get("run"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"step cancel is malformed: {type(exc).__name__}: {exc}"
            ) from None


def is_cancel(raw: Any) -> bool:
    """A step-topic record that cancels an attempt rather than commanding one."""
    return isinstance(raw, dict) and raw.get("cancel") == 1


@record
class StepCommand:
    """Run one attempt of a step. ``reply``/``reply_partition`` name where the instance's
    journal lives, whatever partitioner started the instance."""

    workflow: str
    id: str
    seq: int
    attempt: int
    args: list[Any] = field(default_factory=list)
    reply: str = ""
    reply_partition: int | None = None
    run: int | None = None

    @property
    def idempotency_key(self) -> str:
        """``"<workflow id>:<step seq>"``: the same for every attempt of this call."""
        return f"{self.id}:{self.seq}"

    def to_json(self) -> dict[str, Any]:
        return {
            "wf": self.workflow,
            "id": self.id,
            "seq": self.seq,
            "attempt": self.attempt,
            "args": self.args,
            "reply": self.reply,
            "rp": self.reply_partition,
            "ikey": self.idempotency_key,
            "run": self.run,
        }

    @classmethod
    def from_json(cls, raw: Any) -> StepCommand:
        if not isinstance(raw, dict):
            raise SerializationError(
                f"step command must be a JSON object, got {type(raw).__name__}"
            )
        try:
            args = raw.get("args") or []
            if not isinstance(args, list):
                raise TypeError(f"args is a {type(args).__name__}, not a list")
            reply, rp, run = raw["reply"], raw.get("rp"), raw.get("run")
            if not isinstance(reply, str) or not reply:
                raise TypeError(f"reply is {reply!r}, not a topic name")
            if rp is not None and (type(rp) is not int or rp < 0):
                raise TypeError(f"rp is {rp!r}, not a partition number")
            if run is not None and type(run) is not int:
                raise TypeError(f"run is {run!r}, not a run number")
            return cls(
                str(raw.get("wf", "")),
                str(raw["id"]),
                int(raw["seq"]),
                int(raw["attempt"]),
                args,
                reply,
                rp,
                run,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SerializationError(
                f"step command is malformed: {type(exc).__name__}: {exc}"
            ) from None

    def result(self, value: Any) -> StepResult:
        return StepResult(self.id, self.seq, self.attempt, value, self.run)

    def failure(self, error: StepError, retryable: bool) -> StepFailure:
        return StepFailure(self.id, self.seq, self.attempt, error, retryable, self.run)
