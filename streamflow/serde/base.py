"""Serdes turn keys and values into bytes and back.

A serde is a pair of plain functions rather than an object with methods: the hot path calls
them once per record, and a bound C function (``orjson.dumps``) is the cheapest call Python has.
Avro arrives through the same seam (``register_serde``) with the schemas issue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from streamflow.errors import ConfigError

Serializer = Callable[[Any], bytes]
Deserializer = Callable[[bytes], Any]


@dataclass(frozen=True)
class Serde:
    """How one key or value type is written to and read from Kafka (and stores)."""

    name: str
    serialize: Serializer
    deserialize: Deserializer

    @property
    def carries_schema(self) -> bool:
        """True when bytes written with this serde name their writer's schema (Avro): such
        payloads are journaled as written and read back through schema resolution."""
        return False


def _bytes_serialize(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"bytes serde expects bytes, got {type(value).__name__}")


JSON = Serde("json", orjson.dumps, orjson.loads)
# ``str.encode`` itself rejects non-str values ("descriptor 'encode' for 'str' objects doesn't
# apply to a 'int' object"): no Python-level type check on the hot path.
STR = Serde("str", str.encode, bytes.decode)
BYTES = Serde("bytes", _bytes_serialize, bytes)

_REGISTRY: dict[str, Serde] = {s.name: s for s in (JSON, STR, BYTES)}
_FAMILIES: dict[str, Callable[[str], Serde]] = {}
"""Serdes made from a name (``"avro:com.acme.Order"``) by the family that registered the prefix:
this module stays below the families it names (``serde/avro`` registers ``avro:``)."""


def register_serde(serde: Serde) -> None:
    """Make a serde available by name (``app.topic(..., value="avro:Order")`` uses this seam)."""
    _REGISTRY[serde.name] = serde


def register_family(prefix: str, make: Callable[[str], Serde]) -> None:
    """``resolve_serde("<prefix><name>")`` returns ``make(name)``."""
    _FAMILIES[prefix] = make


def resolve_serde(spec: str | Serde) -> Serde:
    """Accept a serde, its registered name, or ``avro:<full name>``; an unknown name is a
    configuration error."""
    if isinstance(spec, Serde):
        return spec
    prefix, colon, name = spec.partition(":")
    make = _FAMILIES.get(prefix + colon) if colon else None
    if make is not None:  # "avro:com.acme.Order": the schema from the schema directory
        return make(name)
    try:
        return _REGISTRY[spec]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown serde {spec!r}; known serdes: {known}") from None
