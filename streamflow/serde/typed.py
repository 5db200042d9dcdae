"""Plain values (what JSON and fastavro give) into the annotated types code declares.

One converter for every place a dict must become a dataclass: workflow inputs, step arguments
and results (``workflow/payloads.py``), and Avro records read by fastavro into generated classes
(``serde/avro/serde.py``). It is driven by the annotations, so a dataclass written by hand and one
generated from a schema are rebuilt the same way, nested ones and unions included.

A value that does not fit its type raises ``ValueMismatch`` naming the path to the field and
what was wrong (a missing field, a string where an int belongs) instead of passing the raw value
through for the code to trip over later. Ints are accepted where a float is declared (JSON does
not tell 1 from 1.0); other primitives must be what they say. Keys the dataclass does not have
are ignored: a field the code removed is still in journals of running instances, and reading
them must go on (as an Avro reader skips fields only the writer has).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import functools
import types
import typing
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from streamflow.errors import SerializationError


class ValueMismatch(SerializationError, TypeError):
    """A value does not fit the type declared for it; the message names the field.

    A ``TypeError`` too: what the dataclass constructor would have raised, and what callers
    that predate this converter catch."""


_SCALARS: tuple[type, ...] = (
    bool,
    str,
    bytes,
    datetime.datetime,
    datetime.date,
    datetime.time,
    decimal.Decimal,
    uuid.UUID,
)


def from_plain(tp: Any, value: Any, where: str = "value") -> Any:
    """``value`` as an instance of ``tp``; ``where`` names it in errors (``order.items[2]``)."""
    if tp is Any or tp is object:
        return value
    if value is None:
        if tp is None or tp is type(None) or _admits_none(tp):
            return None
        raise ValueMismatch(f"{where}: null where {_name(tp)} is declared")
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _union(tp, value, where)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueMismatch(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin in (list, Sequence, tuple) or tp in (list, tuple):
        return _sequence(tp, origin, value, where)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ValueMismatch(f"{where}: {type(value).__name__} where a mapping is declared")
        args = typing.get_args(tp)
        item = args[1] if len(args) == 2 else Any
        if item is Any:
            return value
        return {k: from_plain(item, v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, where)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if isinstance(value, int) else value
        raise ValueMismatch(f"{where}: {type(value).__name__} {value!r} where a float is declared")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueMismatch(f"{where}: {type(value).__name__} {value!r} where an int is declared")
    if tp in _SCALARS:
        if isinstance(value, tp):
            return value
        raise ValueMismatch(
            f"{where}: {type(value).__name__} {value!r} where {_name(tp)} is declared"
        )
    return value  # a type this converter does not know (an enum class, a TypedDict): as it is


def _admits_none(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return (origin is typing.Union or origin is types.UnionType) and type(None) in typing.get_args(
        tp
    )


def _union(tp: Any, value: Any, where: str) -> Any:
    errors = []
    branches = typing.get_args(tp)
    if isinstance(value, dict):  # a record of a union: the branch whose fields it has, exactly
        keys = value.keys()
        for arg in branches:
            if (
                isinstance(arg, type)
                and dataclasses.is_dataclass(arg)
                and keys == _shape(arg)[0].keys()
            ):
                return _dataclass(arg, value, where)
    for arg in branches:
        if arg is type(None):
            continue
        try:
            return from_plain(arg, value, where)
        except ValueMismatch as exc:
            errors.append(str(exc))
    raise ValueMismatch(f"{where}: fits no branch of {_name(tp)} ({'; '.join(errors)})")


def _sequence(tp: Any, origin: Any, value: Any, where: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ValueMismatch(f"{where}: {type(value).__name__} where a list is declared")
    args = typing.get_args(tp)
    if (origin is tuple or tp is tuple) and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise ValueMismatch(f"{where}: {len(value)} items where {len(args)} are declared")
        return tuple(
            from_plain(a, v, f"{where}[{i}]")
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    item = args[0] if args else Any
    items = (
        value
        if item is Any
        else [from_plain(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    )
    return tuple(items) if origin is tuple or tp is tuple else list(items)


@functools.lru_cache(maxsize=1024)
def _shape(cls: type) -> tuple[dict[str, Any], frozenset[str]]:
    """(field → annotated type, required fields) of a dataclass, resolved once per class."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}
    required = frozenset(
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    return fields, required


def _dataclass(cls: type, value: Any, where: str) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ValueMismatch(
            f"{where}: {type(value).__name__} where {cls.__name__} (an object) is declared"
        )
    fields, required = _shape(cls)
    missing = sorted(required - value.keys())
    if missing:
        raise ValueMismatch(
            f"{where}: does not fit {cls.__name__} (missing {', '.join(map(repr, missing))})"
        )
    return cls(
        **{k: from_plain(fields[k], v, f"{where}.{k}") for k, v in value.items() if k in fields}
    )


def _name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")
