"""The workflow vocabulary users import: retry policies and the errors a workflow can see."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from streamflow.errors import StreamflowError
from streamflow.serde.avro.serde import AvroSerde


@dataclass(frozen=True)
class Exponential:
    """Backoff ``initial * factor**(attempt-1)`` seconds, capped at ``maximum``, each delay
    spread by up to ``jitter`` (a fraction) either way.

    The default (1 s doubling to 100 s, Temporal's) rides out a dependency's outage of minutes
    without failing steps for good; the jitter keeps thousands of instances that failed
    together from retrying together."""

    initial: float = 1.0
    maximum: float = 100.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, spread: float = 0.5) -> float:
        """Seconds before attempt ``attempt + 1``; ``spread`` in [0, 1) picks where in the
        jitter band it lands (0.5: the middle, no jitter)."""
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        return max(0.0, base * (1 + self.jitter * (2 * spread - 1)))


@dataclass(frozen=True)
class Retry:
    """How often a step is attempted, and which errors are not worth another attempt.

    ``attempts=None`` (the default) retries until the step succeeds, fails with a
    non-retryable error, passes its ``schedule_to_close`` or its instance is cancelled:
    a transient outage must not start compensations."""

    attempts: int | None = None
    backoff: Exponential = field(default_factory=Exponential)
    non_retryable: tuple[type[BaseException], ...] = ()

    def allows(self, attempt: int) -> bool:
        """May attempt ``attempt + 1`` run after attempt ``attempt`` failed?"""
        return self.attempts is None or attempt < self.attempts


DEFAULT_RETENTION = timedelta(days=7)
"""Finished instances are kept a week by default (Temporal's and Restate's order of
magnitude): long enough to read a result and to dedupe a retried start, short enough that
stores, changelogs and restores do not grow with every instance ever run."""


class NonRetryable(Exception):
    """Raise (or subclass) in a step to fail it for good at once: no retry will help."""


class StepFailed(StreamflowError):
    """A step failed for good; raised inside the workflow at the ``await``, which may catch it."""

    def __init__(self, step: str, error_type: str, message: str, attempts: int) -> None:
        super().__init__(
            f"step {step!r} failed after {attempts} attempt(s): {error_type}: {message}"
        )
        self.step, self.error_type, self.message, self.attempts = (
            step,
            error_type,
            message,
            attempts,
        )


class SignalTimeout(TimeoutError):
    """``wait_signal(..., timeout=...)`` passed its timeout with no signal."""


class Cancelled(StreamflowError):
    """The instance was cancelled: raised at the workflow's current ``await`` (and by
    ``ctx.check_cancelled()`` in a step whose attempt was cancelled).

    A workflow may catch it to clean up (``try/finally``, ``except Cancelled``); it cannot start
    new steps, sleeps or signal waits after it (they raise ``Cancelled`` again). Registered
    compensations run once the workflow function has ended and every step attempt it started
    has answered, so nothing changes an entity after the instance reports ``cancelled``.
    """


@dataclass(frozen=True)
class StepDef:
    """A registered step: the function, its policy, and (entity steps) how to find its entity."""

    name: str
    fn: Callable[..., Any]
    retry: Retry
    timeout: timedelta | None
    entity_store: str | None = None
    """Entity steps: the store of one value per entity; the first argument is the entity key."""
    args: tuple[AvroSerde | None, ...] = ()
    """Avro types of the arguments by position (None, or past the end: JSON)."""
    result: AvroSerde | None = None
    max_concurrency: int | None = None
    """Attempts of this step running at once on one worker (None: the worker's capacity)."""
    schedule_to_close: timedelta | None = None
    """The whole call, every attempt and backoff included: past it the step fails for good
    (a running attempt is cancelled), however many attempts the retry policy would allow."""

    @property
    def is_entity(self) -> bool:
        return self.entity_store is not None


@dataclass(frozen=True)
class WorkflowDef:
    name: str
    version: int
    fn: Callable[..., Any]
    input: AvroSerde | None = None
    """Avro types of the input, the result and signal payloads by signal name (None: JSON)."""
    result: AvroSerde | None = None
    signals: tuple[tuple[str, AvroSerde], ...] = ()
    retention: timedelta | None = None
    """How long a finished instance is kept (its journal, its counts): then it is deleted
    through the changelog, and its id may start a new instance. None: forever."""
    timeout: timedelta | None = None
    """From start to end, across ``continue_as_new`` runs: past it the instance is cancelled
    (``Cancelled`` at its current await, compensations run) and ends ``failed`` (or
    ``compensated``, when it had compensations to run) with the error ``WorkflowTimedOut``."""

    signal_types: tuple[tuple[str, Any], ...] = ()
    """Python types of JSON signal payloads by signal name (``signals={"approve": Approval}``):
    the client checks a payload against it before sending, the worker before keeping it, and
    ``ctx.wait_signal`` returns the payload rebuilt into it."""

    def signal_serde(self, name: str) -> AvroSerde | None:
        return dict(self.signals).get(name)

    def signal_type(self, name: str) -> Any:
        """The declared Python type of signal ``name``'s payload (None: any JSON)."""
        return dict(self.signal_types).get(name)
