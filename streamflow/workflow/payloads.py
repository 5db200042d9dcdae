"""Workflow and step payloads as JSON, with dataclasses rebuilt from type annotations.

Inputs and results cross Kafka as JSON (orjson writes dataclasses natively). On the way back a
value is rebuilt into the parameter's or return value's annotated dataclass, so workflow code
sees the same types on first run and on replay.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import typing
from collections.abc import Callable
from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def to_plain(value: Any) -> Any:
    """The JSON shape of ``value`` (dataclasses become dicts), as it will be after a round trip."""
    return orjson.loads(dumps(value))


def digest(name: str, args: Any) -> str:
    """What a call asked for, for the determinism check on replay."""
    return hashlib.blake2b(dumps([name, args]), digest_size=8).hexdigest()


def _build(tp: Any, value: Any) -> Any:
    if value is None or tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _build(arg, value)
            except (TypeError, ValueError):
                continue
        return value
    if origin in (list, tuple) and isinstance(value, list):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        items = [_build(item, v) for v in value]
        return items if origin is list else tuple(items)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        return tp(**{k: _build(hints.get(k, Any), v) for k, v in value.items() if k in names})
    return value


def rebuild(tp: Any, value: Any) -> Any:
    """``value`` (plain JSON) as an instance of ``tp`` where ``tp`` names a dataclass."""
    return _build(tp, value)


def parameter_types(fn: Callable[..., Any], skip: int = 1) -> list[Any]:
    """Annotated types of ``fn``'s parameters after the first ``skip`` (the ctx)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to plain JSON
        hints = {}
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return [hints.get(p.name, Any) for p in params]


def return_type(fn: Callable[..., Any]) -> Any:
    try:
        return typing.get_type_hints(fn).get("return", Any)
    except Exception:  # noqa: BLE001
        return Any
