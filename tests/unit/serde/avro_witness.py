"""Witness data for cross-validating compatibility verdicts against fastavro's resolution.

Values carry explicit union branches (``Branch``) and are written by the small Avro binary encoder
below, not by fastavro: fastavro's writer picks the first union branch a value fits, which would
hide branches (a 1 in ``["long", "int"]`` is always written as long). Witnesses take every union
branch and every enum symbol at every position, zipped across record fields so they stay few.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import fastavro
from hypothesis import strategies as st

PRIMS = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]


@dataclass(frozen=True)
class Branch:
    index: int
    value: Any


def _resolve(t: Any, names: dict[str, Any]) -> Any:
    if isinstance(t, str) and t not in PRIMS:
        return names[t]
    if isinstance(t, dict) and t["type"] in PRIMS:
        return t["type"]  # a logical type is written as its underlying type
    return t


def witnesses(t: Any, names: dict[str, Any], depth: int = 0) -> list[Any]:
    t = _resolve(t, names)
    if isinstance(t, list):
        # Deep down a recursive type take only the first branch (null, in a well-formed one).
        branches = t[:1] if depth > 6 else t
        return [
            Branch(i, v) for i, b in enumerate(branches) for v in witnesses(b, names, depth + 1)
        ]
    if isinstance(t, str):
        return [
            {
                "null": None,
                "boolean": True,
                "int": 7,
                "long": 2**40,
                "float": 1.5,
                "double": 2.25,
                "bytes": b"by",
                "string": "st",
            }[t]
        ]
    kind = t["type"]
    if kind == "enum":
        return list(t["symbols"])
    if kind == "fixed":
        return [b"\x01" * t["size"]]
    if kind == "array":
        return [witnesses(t["items"], names, depth + 1)]
    if kind == "map":
        return [{f"k{i}": v for i, v in enumerate(witnesses(t["values"], names, depth + 1))}]
    per_field = [witnesses(f["type"], names, depth + 1) for f in t["fields"]]
    count = max((len(v) for v in per_field), default=1)
    return [
        {f["name"]: vs[i % len(vs)] for f, vs in zip(t["fields"], per_field, strict=True)}
        for i in range(count)
    ]


def draw_datum(draw: Any, t: Any, names: dict[str, Any]) -> Any:
    t = _resolve(t, names)
    if isinstance(t, list):
        i = draw(st.integers(0, len(t) - 1))
        return Branch(i, draw_datum(draw, t[i], names))
    if isinstance(t, str):
        return draw(
            {
                "null": st.none(),
                "boolean": st.booleans(),
                "int": st.integers(-(2**31), 2**31 - 1),
                "long": st.integers(-(2**63), 2**63 - 1),
                "float": st.floats(width=32, allow_nan=False),
                "double": st.floats(allow_nan=False),
                "string": st.text(max_size=5),
                "bytes": st.text("abc\x00\x7f", max_size=5).map(str.encode),
            }[t]
        )
    kind = t["type"]
    if kind == "enum":
        return draw(st.sampled_from(t["symbols"]))
    if kind == "fixed":
        return draw(st.binary(min_size=t["size"], max_size=t["size"]))
    if kind == "array":
        return [draw_datum(draw, t["items"], names) for _ in range(draw(st.integers(0, 2)))]
    if kind == "map":
        return {
            f"k{i}": draw_datum(draw, t["values"], names) for i in range(draw(st.integers(0, 2)))
        }
    return {f["name"]: draw_datum(draw, f["type"], names) for f in t["fields"]}


def _long(n: int, out: bytearray) -> None:
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def encode(t: Any, value: Any, names: dict[str, Any], out: bytearray) -> None:
    t = _resolve(t, names)
    if isinstance(t, list):
        _long(value.index, out)
        encode(t[value.index], value.value, names, out)
        return
    kind = t if isinstance(t, str) else t["type"]
    if kind == "boolean":
        out.append(1 if value else 0)
    elif kind in ("int", "long"):
        _long(value, out)
    elif kind in ("float", "double"):
        out += struct.pack("<f" if kind == "float" else "<d", value)
    elif kind in ("bytes", "string"):
        data = value.encode() if kind == "string" else value
        _long(len(data), out)
        out += data
    elif kind == "fixed":
        out += value
    elif kind == "enum":
        _long(t["symbols"].index(value), out)
    elif kind in ("array", "map"):
        if value:
            _long(len(value), out)
            for key, item in value.items() if kind == "map" else ((None, v) for v in value):
                if key is not None:
                    encode("string", key, names, out)
                encode(t["items"] if kind == "array" else t["values"], item, names, out)
        out.append(0)
    elif kind == "record":
        for f in t["fields"]:
            encode(f["type"], value[f["name"]], names, out)


def plain(value: Any) -> Any:
    if isinstance(value, Branch):
        return plain(value.value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def parsed_with_names(schema: Any) -> tuple[Any, dict[str, Any]]:
    names: dict[str, Any] = {}
    return fastavro.parse_schema(schema, named_schemas=names), names


def fastavro_reads(writer: Any, reader: Any, payload: bytes) -> bool:
    buf = io.BytesIO(payload)
    try:
        fastavro.schemaless_reader(buf, writer, reader)
    except Exception:  # noqa: BLE001  SchemaResolutionError, or KeyError for some mismatches
        return False
    return buf.tell() == len(payload)  # a "successful" read of the wrong bytes is a failure too


def fastavro_failures(reader: Any, writer: Any) -> list[Any]:
    """The witnesses of ``writer`` that fastavro cannot read with ``reader`` (as plain values)."""
    (w_parsed, names), (r_parsed, _) = parsed_with_names(writer), parsed_with_names(reader)
    failing = []
    for value in witnesses(w_parsed, names):
        out = bytearray()
        encode(w_parsed, value, names, out)
        if not fastavro_reads(w_parsed, r_parsed, bytes(out)):
            failing.append(plain(value))
    return failing
