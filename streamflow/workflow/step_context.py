"""What a step function receives as ``ctx``: its identity, its entity's state, its cancel.

The step runner (``workflow/steps.py``) makes one per attempt on the worker thread and reads it
back when the attempt completes; the step reads and writes it on its own thread or loop. So
what it holds is either fixed at creation, written by the step only (the state), or a flag the
worker thread sets and the step only reads (``closed``, ``cancelled``).
"""

from __future__ import annotations

import copy
from typing import Any, Protocol, TypeVar

from streamflow.workflow.api import Cancelled, StepDef
from streamflow.workflow.messages import StepCommand

_UNSET: Any = object()
_IMMUTABLE = (int, float, str, bool, bytes, type(None))


S = TypeVar("S")


class EntityContext(Protocol[S]):
    """The ``ctx`` of an entity step, typed by its entity's state: annotate
    ``ctx: EntityContext[Account]`` and mypy checks what the step reads from and writes to
    ``ctx.state``. At run time it is a ``StepContext``; this only narrows ``state`` from
    ``Any`` (``None`` until the entity has a value)."""

    step: str
    workflow_id: str
    idempotency_key: str
    attempt: int
    entity: str | None
    cancelled: bool

    @property
    def state(self) -> S | None: ...

    @state.setter
    def state(self, value: S | None) -> None: ...

    def check_cancelled(self) -> None: ...


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
        "cancelled",
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
        self.cancelled = False
        """True once the workflow cancelled this attempt (a ``StepCancel`` arrived). A ``def``
        step cannot be interrupted from outside: a long one polls this, or calls
        ``check_cancelled()``, between its pieces of work. (An ``async def`` step is
        interrupted at its current ``await`` instead.)"""

    def check_cancelled(self) -> None:
        """Raise ``Cancelled`` if the workflow cancelled this attempt: the attempt ends as
        cancelled, and the workflow sees ``Cancelled`` (not retried). Return normally after an
        effect happened instead, so the workflow records it and its compensation runs."""
        if self.cancelled:
            raise Cancelled(
                f"step {self.step!r} attempt {self.idempotency_key}#{self.attempt} was cancelled"
            )

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
