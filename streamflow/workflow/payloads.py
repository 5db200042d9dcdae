"""Workflow and step payloads: JSON by default, Avro where declared.

Inputs and results cross Kafka as JSON (orjson writes dataclasses natively). On the way back a
value is rebuilt into the parameter's or return value's annotated dataclass, so workflow code
sees the same types on first run and on replay.

A payload declared Avro (``@app.workflow(input=avro("acme.Transfer"))``, ``@app.step(args=…,
result=…)``) is *packed*: its wire-format bytes (magic byte, schema id, body) sit in the JSON
event, command or journal entry as ``{"$avro": "<base64>"}``. The envelope keeps the journal one
JSON document per entry, and ``$`` cannot start an Avro field name, so a packed payload is never
mistaken for a record written as a dict. Packed payloads are unpacked with the code's current
schema, resolving from the schema id they were written with: a journal written under v1 reads
under v2 (docs/architecture.md, "Promises").

Determinism digests of Avro arguments are taken over the arguments as the current schema reads
them (``canonical``), never over their bytes: a compatible schema change must not make a running
instance look non-deterministic.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from streamflow.errors import SerializationError
from streamflow.serde.avro.serde import AvroSerde
from streamflow.serde.typed import from_plain
from streamflow.workflow.messages import dumps  # payload digests and messages: one JSON encoding

AVRO = "$avro"
"""The key of a packed payload: ``{"$avro": base64 of the wire-format bytes}``."""


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def to_plain(value: Any) -> Any:
    """The JSON shape of ``value`` (dataclasses become dicts), as it will be after a round trip.

    Scalars the round trip would give back unchanged skip it: it runs for every step argument
    and result. (A float may not: NaN becomes null; an int JSON cannot hold, or a string that
    is not valid UTF-8, must still fail here, naming the call.)"""
    kind = type(value)
    if (
        value is None
        or kind is bool
        or (kind is int and _INT64_MIN <= value <= _UINT64_MAX)
        or (kind is str and value.isascii())
    ):
        return value
    return orjson.loads(dumps(value))


def digest(name: str, args: Any) -> str:
    """What a call asked for, for the determinism check on replay."""
    return hashlib.blake2b(dumps([name, args]), digest_size=8).hexdigest()


def rebuild(tp: Any, value: Any, where: str = "value") -> Any:
    """``value`` (plain JSON) as an instance of ``tp`` where ``tp`` names a dataclass; a value
    that does not fit raises ``ValueMismatch`` naming the field (``serde/typed.py``)."""
    if tp in _PLAIN:
        return value
    return from_plain(tp, value, where)


_PLAIN = (Any, int, float, str, bool, type(None), dict, list, object)


def check_fits(tp: Any, value: Any, where: str) -> None:
    """``ValueMismatch`` naming the field when ``value`` (plain JSON) does not fit ``tp``:
    scalars included (``rebuild`` passes them through), so a client refuses a dict where a
    ``str`` is declared before anything is sent."""
    if tp is Any or tp is object:
        return
    from_plain(tp, value, where)


def is_plain_type(tp: Any) -> bool:
    """JSON gives values of ``tp`` as they are: nothing to rebuild."""
    return tp in _PLAIN


@functools.lru_cache(maxsize=4096)
def parameter_types(fn: Callable[..., Any], skip: int = 1) -> tuple[Any, ...]:
    """Annotated types of ``fn``'s parameters after the first ``skip`` (the ctx)."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to plain JSON
        hints = {}
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return tuple(hints.get(p.name, Any) for p in params)


@functools.lru_cache(maxsize=4096)
def return_type(fn: Callable[..., Any]) -> Any:
    try:
        return typing.get_type_hints(fn).get("return", Any)
    except Exception:  # noqa: BLE001
        return Any


# -- Avro payloads -----------------------------------------------------------------------------


def is_packed(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and AVRO in value


def pack(serde: AvroSerde | None, value: Any) -> Any:
    """``value`` as it is sent and journaled: plain JSON, or with an Avro serde the envelope of
    its wire-format bytes, written with the serde's (the code's) schema id.

    A payload that is packed already (an Avro-aware client sent it) is kept as written: its
    schema id says how to read it. A dict given for a generated dataclass (the JSON path of
    the test driver) is rebuilt into the class first.
    """
    if serde is None:
        return to_plain(value)
    if value is None or is_packed(value):
        return value
    cls = serde.binding.classes.get(serde.schema_name)
    if cls is not None and isinstance(value, dict):
        value = rebuild(cls, value)
    return {AVRO: base64.b64encode(serde.serialize(value)).decode("ascii")}


def unpack(serde: AvroSerde | None, stored: Any, what: str = "payload") -> Any:
    """A journaled or received payload as the code's schema reads it (JSON passes through)."""
    if not is_packed(stored):
        return stored
    if serde is None:
        raise SerializationError(
            f"{what} was written as Avro but the code declares no Avro type for it; declare "
            "it again (payloads of running instances must stay readable)"
        )
    return serde.deserialize(base64.b64decode(stored[AVRO]))


def canonical(serde: AvroSerde | None, stored: Any) -> Any:
    """What a packed payload means under the code's schema, as plain JSON: the same for bytes
    written under v1 and under a compatible v2, so it is what determinism digests cover."""
    return to_plain(unpack(serde, stored)) if is_packed(stored) else stored


def pack_args(serdes: Sequence[AvroSerde | None], args: Sequence[Any]) -> list[Any]:
    """A call's arguments, each packed with the serde declared for its position (JSON beyond)."""
    return [pack(serdes[i] if i < len(serdes) else None, a) for i, a in enumerate(args)]


def args_digest(name: str, serdes: Sequence[AvroSerde | None], packed: Sequence[Any]) -> str:
    """The determinism digest of a call's packed arguments, evolution-invariant for Avro ones.

    With no Avro argument this is ``digest(name, args)``, as before Avro payloads existed.
    """
    if not any(is_packed(a) for a in packed):
        return digest(name, list(packed))
    return digest(
        name, [canonical(serdes[i] if i < len(serdes) else None, a) for i, a in enumerate(packed)]
    )
