"""A step's failure as the workflow sees it: the step's own exception class where it can.

A step that raised ``InsufficientFunds`` makes ``await ctx.step(...)`` raise an exception that
is an ``InsufficientFunds`` *and* a ``StepFailed``, so both ``except InsufficientFunds:`` and
``except StepFailed:`` read naturally. The class is found by module and qualified name among the
modules the worker has loaded (the step's module is, since it registered the step); when it is
gone (renamed, or the reply came from other code) the workflow gets a plain ``StepFailed``.
"""

from __future__ import annotations

import sys

from streamflow.workflow.api import StepFailed
from streamflow.workflow.messages import StepError


def step_exception(step: str, error: StepError, attempts: int) -> StepFailed:
    cls = _combined(error.module, error.qualname)
    exc = cls.__new__(cls) if cls is not StepFailed else None
    if exc is None:
        return StepFailed(step, error.type, error.message, attempts)
    StepFailed.__init__(exc, step, error.type, error.message, attempts)
    return exc


_COMBINED: dict[type[Exception], type[StepFailed]] = {}


def _combined(module: str | None, qualname: str | None) -> type[StepFailed]:
    original = _find(module, qualname)
    if original is None or issubclass(original, StepFailed):
        return StepFailed
    cls = _COMBINED.get(original)
    if cls is None:
        cls = _COMBINED[original] = _combine(original)
    return cls


def _combine(original: type[Exception]) -> type[StepFailed]:
    try:
        return type(
            original.__name__,
            (original, StepFailed),
            {
                "__module__": original.__module__,
                "__qualname__": original.__qualname__,
                "__str__": StepFailed.__str__,
            },
        )
    except TypeError:  # a layout that cannot be combined (some C exception types): fall back
        return StepFailed


_RAISED: dict[tuple[str, str], type[Exception]] = {}
"""Exception classes steps of this process raised, for those no import reaches (local classes)."""


def remember(cls: type[BaseException]) -> None:
    """Called by the step runner for each failure it reports."""
    if issubclass(cls, Exception) and len(_RAISED) < 10_000:
        _RAISED.setdefault((cls.__module__, cls.__qualname__), cls)


def _find(module: str | None, qualname: str | None) -> type[Exception] | None:
    if not module or not qualname:
        return None
    seen = _RAISED.get((module, qualname))
    if seen is not None:
        return seen
    if "<locals>" in qualname:
        return None
    found: object = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None
