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


def register_serde(serde: Serde) -> None:
    """Make a serde available by name (``app.topic(..., value="avro:Order")`` uses this seam)."""
    _REGISTRY[serde.name] = serde


def resolve_serde(spec: str | Serde) -> Serde:
    """Accept a serde, its registered name, or ``avro:<full name>``; an unknown name is a
    configuration error."""
    if isinstance(spec, Serde):
        return spec
    if spec.startswith("avro:"):  # "avro:com.acme.Order": the schema from the schema directory
        from streamflow.serde.avro.serde import avro

        return avro(spec.removeprefix("avro:"))
    try:
        return _REGISTRY[spec]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown serde {spec!r}; known serdes: {known}") from None
