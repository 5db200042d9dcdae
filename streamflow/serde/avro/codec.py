"""Compile one Avro schema into two plain functions: ``encode(value) -> bytes`` and
``decode(bytes) -> value``, both speaking the wire format (5-byte header, then the Avro body).

Why generate code: fastavro interprets the schema for every record (a type-name comparison and
a dict lookup per field, a file-object ``read`` call per varint byte), and that interpretation is
most of its cost. The functions built here have the schema unrolled into straight-line Python:
a field becomes a few local operations, small varints come from a table, an enum symbol is one
dict lookup, and the record is assembled with one ``bytes.join``. They run at about twice
fastavro's speed with a pre-parsed schema (``bench/avro_bench.py``).

The generated code handles only the *writer schema == reader schema* case, which is every record
written by the running code. Records written with another schema version go through fastavro's
resolving reader (``serde.avro.serde``), so the specification's resolution rules come from
one implementation. Where fastavro's behaviour is a choice rather than the encoding, this module
copies it: a union value is written as the first branch it fits, in branch order (as fastavro's
validation decides it); a missing field with a default is written as the default; a missing
optional field (a union with null, no default) as null. Schema shapes where copying fastavro
would take a deep validation (a union of two records, or of a record and a map, when values are
dicts; logical types inside a union) are not compiled: ``compile_codec`` returns None and the
caller falls back to fastavro for that schema, correct and slower.

Generated functions take their constants from one namespace dict (``CompiledCodec.env``).
``_H`` (the header, None until the serde is bound to a registry), ``_other`` (what decode does
with another header) and the two error builders are set there by the caller.

Size: a code generator is one recursive walk over the schema with a case per Avro type for
each direction; splitting encode from decode would separate the two halves that must agree
byte for byte. The run-time helpers of the generated code (``_BASE_ENV``: the varint table and
reader, the error builders) stay beside the generator that emits their names, so one is checked
against the other in one place.
"""

from __future__ import annotations

import dataclasses
import keyword
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastavro.read import LOGICAL_READERS
from fastavro.write import LOGICAL_WRITERS

from streamflow.errors import SchemaError
from streamflow.serde.avro.schema import PRIMITIVES, named_types
from streamflow.serde.avro.wire_format import HEADER_SIZE

_SMALL = 16384
"""Varints of values below this (2 bytes or less) come from a table: lengths, counts, enums and
most integers people store."""


def _varint_slow(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_VARINTS: tuple[bytes, ...] = tuple(_varint_slow(i) for i in range(_SMALL))


def _varint(z: int) -> bytes:
    """Unsigned LEB128 of an already zig-zagged long."""
    if 0 <= z < _SMALL:
        return _VARINTS[z]
    if _SMALL <= z < 1 << 21:
        return bytes((z & 127 | 128, z >> 7 & 127 | 128, z >> 14))
    if _SMALL <= z < 1 << 28:
        return bytes((z & 127 | 128, z >> 7 & 127 | 128, z >> 14 & 127 | 128, z >> 21))
    if 0 <= z < 1 << 64:
        return _varint_slow(z)
    raise ValueError(f"{(z >> 1) ^ -(z & 1)} is outside the range of an Avro long")


def _read_varint(b: bytes, p: int) -> tuple[int, int]:
    """The unsigned varint at ``b[p]`` (whose first byte has the continuation bit) and the
    position after it."""
    x = b[p] & 127
    c = b[p + 1]
    x |= (c & 127) << 7
    if c < 128:
        return x, p + 2
    c = b[p + 2]
    x |= (c & 127) << 14
    if c < 128:
        return x, p + 3
    shift, p = 21, p + 3
    while True:
        c = b[p]
        p += 1
        x |= (c & 127) << shift
        if c < 128:
            return x, p
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fixed_size_error(name: str, size: int, value: Any) -> ValueError:
    return ValueError(f"fixed {name!r} takes exactly {size} bytes, got {len(value)}")


def _no_branch(value: Any, union: str) -> ValueError:
    return ValueError(f"{type(value).__name__} value {value!r:.80} fits no branch of {union}")


def _negative(what: str) -> ValueError:
    return ValueError(f"negative {what} in the Avro body: the bytes are corrupt or not Avro")


def _unbound(*_args: Any) -> Any:
    raise RuntimeError("codec used before it was bound")  # replaced by the serde at creation


_BASE_ENV: dict[str, Any] = {
    "_join": b"".join,
    "_V": _VARINTS,
    "_varint": _varint,
    "_rv": _read_varint,
    "_pf": struct.Struct("<f").pack,
    "_pd": struct.Struct("<d").pack,
    "_uf": struct.Struct("<f").unpack_from,
    "_ud": struct.Struct("<d").unpack_from,
    "_fixed_size_error": _fixed_size_error,
    "_no_branch": _no_branch,
    "_negative": _negative,
    "_H": None,
    "_other": _unbound,
    "_enc_fail": _unbound,
    "_dec_fail": _unbound,
}


@dataclass(frozen=True)
class CompiledCodec:
    """The compiled functions of one schema. ``env`` is their global namespace."""

    encode: Callable[[Any], bytes]
    decode: Callable[[bytes], Any]
    decode_unchecked: Callable[[bytes], Any]
    """``decode`` without the header check: for a writer schema equal to this one under another
    id."""
    env: dict[str, Any]
    source: str


class _Unsupported(Exception):
    """A schema shape left to fastavro (see the module docstring)."""


CODEC_SWITCH = "STREAMFLOW_AVRO_CODEC"
"""``fastavro`` makes every schema use fastavro instead of compiled code: the way out should the
generated code ever disagree with fastavro on some schema (report it; the suite cross-checks
the two byte for byte)."""


def compile_codec(schema: Any, classes: Mapping[str, type] | None = None) -> CompiledCodec | None:
    """Compile a fastavro-parsed schema; None when its shape is left to fastavro (or when
    ``STREAMFLOW_AVRO_CODEC=fastavro`` asks for fastavro everywhere).

    ``classes`` maps record full names to dataclasses whose fields are the record's fields in
    schema order (``streamflow schemas codegen`` writes them): such records are encoded from
    attributes and decoded into instances; other records are dicts.
    """
    if os.environ.get(CODEC_SWITCH, "compiled") == "fastavro":
        return None
    gen = _Generator(named_types(schema), dict(classes or {}))
    try:
        source = gen.module(schema)
    except _Unsupported:
        return None
    env = dict(_BASE_ENV)
    env.update(gen.consts)
    exec(compile(source, f"<avro codec {_label(schema)}>", "exec"), env)
    return CompiledCodec(env["encode"], env["decode"], env["decode_unchecked"], env, source)


def _label(schema: Any) -> str:
    if isinstance(schema, dict) and "name" in schema:
        return str(schema["name"])
    return str(schema)[:40]


def check_class(cls: type, record: Mapping[str, Any]) -> None:
    """A dataclass stands for a record only if its fields are the record's, in schema order."""
    if not dataclasses.is_dataclass(cls):
        raise SchemaError(f"{cls.__qualname__} is not a dataclass")
    have = [f.name for f in dataclasses.fields(cls)]
    want = [f["name"] for f in record["fields"]]
    if have != want:
        raise SchemaError(
            f"{cls.__module__}.{cls.__qualname__} has fields {have} but Avro record "
            f"{record['name']!r} has {want} (in that order); regenerate the classes with "
            "`streamflow schemas codegen` after changing the schema"
        )


class _Generator:
    def __init__(self, names: dict[str, Any], classes: dict[str, type]) -> None:
        self.names = names
        self.classes = classes
        self.consts: dict[str, Any] = {}
        self.helpers: list[str] = []
        self.count = 0
        self.record_writers: dict[str, str] = {}
        self.record_readers: dict[str, str] = {}
        for name, cls in classes.items():
            if name in names:
                check_class(cls, names[name])

    # -- bookkeeping -----------------------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value: Any, prefix: str = "_k") -> str:
        name = self.fresh(prefix)
        self.consts[name] = value
        return name

    def resolve(self, node: Any) -> Any:
        """A reference becomes its definition; ``{"type": "int"}`` becomes ``"int"`` unless it
        carries a logical type fastavro converts (kept: the value needs the conversion)."""
        while True:
            if isinstance(node, str):
                if node in PRIMITIVES:
                    return node
                node = self.names[node]
            elif isinstance(node, dict) and not isinstance(node["type"], str):
                node = node["type"]
            elif isinstance(node, dict) and node["type"] in PRIMITIVES:
                return node if self.logical_key(node) else node["type"]
            elif isinstance(node, dict) and node["type"] not in (
                "record",
                "error",
                "enum",
                "fixed",
                "array",
                "map",
            ):
                node = node["type"]
            else:
                return node

    @staticmethod
    def logical_key(node: Any) -> str | None:
        if isinstance(node, dict) and "logicalType" in node:
            key = f"{node['type']}-{node['logicalType']}"
            if key in LOGICAL_WRITERS and key in LOGICAL_READERS:
                return key
        return None

    @staticmethod
    def kind(node: Any) -> str:
        if isinstance(node, str):
            return node
        if isinstance(node, list):
            return "union"
        return "record" if node["type"] == "error" else str(node["type"])

    # -- the module ------------------------------------------------------------------------------

    def module(self, schema: Any) -> str:
        top = self.resolve(schema)
        if self.kind(top) == "record":
            enc_lines, enc_parts = self.write_fields(top, "v")
            dec_lines = self.read_fields(top)
            result = self.construct(top)
        else:
            enc_lines, enc_parts = self.write(top, "v")
            dec_lines = self.read(top, "r")
            result = "r"
        encode = [
            "def encode(v):",
            "    try:",
            *_indent(enc_lines, 2),
            f"        return _join((_H, {', '.join(enc_parts)}{',' if enc_parts else ''}))",
            "    except Exception as e:",
            "        raise _enc_fail(v, e) from e",
        ]
        body = [
            f"        p = {HEADER_SIZE}",
            *_indent(dec_lines, 2),
            "        if p != len(b):",
            "            raise ValueError(f'{len(b) - p} bytes after the end of the record')",
            f"        return {result}",
            "    except Exception as e:",
            "        raise _dec_fail(b, e) from e",
        ]
        decode = [
            "def decode(b):",
            f"    if b[:{HEADER_SIZE}] != _H:",
            "        return _other(b)",
            "    try:",
            *body,
        ]
        unchecked = ["def decode_unchecked(b):", "    try:", *body]
        return "\n".join([*self.helpers, *encode, *decode, *unchecked, ""])

    # -- writing ---------------------------------------------------------------------------------

    def write(self, node: Any, src: str) -> tuple[list[str], list[str]]:
        """Statements to run and bytes-valued expressions to join, to write ``src`` as ``node``.

        ``src`` is evaluated exactly once.
        """
        node = self.resolve(node)
        key = self.logical_key(node)
        if key is not None:
            t = self.fresh("t")
            fn, schema = self.const(LOGICAL_WRITERS[key], "_lw"), self.const(node, "_ls")
            lines, parts = self.write(_without_logical(node), t)
            return [f"{t} = {fn}({src}, {schema})", *lines], parts
        kind = self.kind(node)
        if kind == "null":
            return [], []
        if kind == "boolean":
            return [], [f'(b"\\x01" if {src} else b"\\x00")']
        if kind in ("int", "long"):
            z = self.fresh("z")
            return (
                [f"{z} = {src}", f"{z} = ({z} << 1) ^ ({z} >> 63)"],
                [f"(_V[{z}] if 0 <= {z} < {_SMALL} else _varint({z}))"],
            )
        if kind == "float":
            return [], [f"_pf({src})"]
        if kind == "double":
            return [], [f"_pd({src})"]
        if kind in ("string", "bytes"):
            s, n = self.fresh("s"), self.fresh("n")
            first = f"{s} = {src}.encode()" if kind == "string" else f"{s} = {src}"
            return (
                [first, f"{n} = len({s})"],
                [f"(_V[{n} + {n}] if {n} < {_SMALL // 2} else _varint({n} + {n}))", s],
            )
        if kind == "fixed":
            s = self.fresh("s")
            name, size = repr(node["name"]), node["size"]
            return (
                [
                    f"{s} = {src}",
                    f"if len({s}) != {size}:",
                    f"    raise _fixed_size_error({name}, {size}, {s})",
                ],
                [s],
            )
        if kind == "enum":
            table = {sym: _VARINTS[2 * i] for i, sym in enumerate(node["symbols"])}
            return [], [f"{self.const(table, '_e')}[{src}]"]
        if kind == "record":
            return [], [f"{self.record_writer(node)}({src})"]
        if kind in ("array", "map"):
            return [], [f"{self.collection_writer(node)}({src})"]
        return self.write_union(node, src)

    def write_fields(self, record: dict[str, Any], v: str) -> tuple[list[str], list[str]]:
        cls = self.classes.get(record["name"])
        lines: list[str] = []
        parts: list[str] = []
        for field in record["fields"]:
            name = field["name"]
            if cls is not None:
                if keyword.iskeyword(name):
                    raise _Unsupported(f"field {name!r} is a Python keyword")
                src = f"{v}.{name}"
            elif "default" in field:
                src = f"{v}.get({name!r}, {self.const(field['default'], '_d')})"
            elif isinstance(field["type"], list) and "null" in field["type"]:
                src = f"{v}.get({name!r})"  # as fastavro: a missing optional field is null
            else:
                src = f"{v}[{name!r}]"
            more_lines, more_parts = self.write(field["type"], src)
            lines += more_lines
            parts += more_parts
        return lines, parts

    def record_writer(self, record: dict[str, Any]) -> str:
        name = record["name"]
        if name not in self.record_writers:
            fn = self.record_writers[name] = self.fresh("_wr")
            lines, parts = self.write_fields(record, "v")
            self.helpers += [
                f"def {fn}(v):",
                *_indent(lines, 1),
                f"    return _join(({', '.join(parts)}{',' if parts else ''}))",
            ]
        return self.record_writers[name]

    def collection_writer(self, node: dict[str, Any]) -> str:
        fn = self.fresh("_wc")
        is_map = node["type"] == "map"
        item_lines, item_parts = self.write(node["values" if is_map else "items"], "x")
        if is_map:
            key_lines, key_parts = self.write("string", "k")
            item_lines, item_parts = key_lines + item_lines, key_parts + item_parts
        loop = "for k, x in v.items():" if is_map else "for x in v:"
        self.helpers += [
            f"def {fn}(v):",
            "    if not v:",
            '        return b"\\x00"',
            "    n = len(v) * 2",
            f"    out = [_V[n] if n < {_SMALL} else _varint(n)]",
            f"    {loop}",
            *_indent(item_lines, 2),
            f"        out += ({', '.join(item_parts)}{',' if item_parts else ''})",
            '    out.append(b"\\x00")',
            "    return _join(out)",
        ]
        return fn

    def write_union(self, union: list[Any], src: str) -> tuple[list[str], list[str]]:
        branches = [self.resolve(b) for b in union]
        if any(self.logical_key(b) for b in branches):
            raise _Unsupported("logical type in a union")
        dict_like = [
            b
            for b in branches
            if self.kind(b) == "map" or (self.kind(b) == "record" and b["name"] not in self.classes)
        ]
        if len(dict_like) > 1:
            raise _Unsupported("two union branches take a dict")
        arrays = sum(self.kind(b) == "array" for b in branches)
        if arrays > 1 or (arrays and any(self.kind(b) in ("bytes", "fixed") for b in branches)):
            # fastavro validates an array's items, and takes bytes for a sequence of ints
            raise _Unsupported("array branch beside another array or bytes")
        t, u = self.fresh("t"), self.fresh("u")
        description = repr("union [" + ", ".join(_short(b) for b in branches) + "]")
        lines = [f"{t} = {src}"]
        kinds = [self.kind(b) for b in branches]
        for index, branch in enumerate(branches):
            test = self.branch_test(branch, t)
            if kinds[index] == "float" and "double" in kinds[index:]:
                # fastavro prefers a later double to a float for any number (no precision lost)
                index = kinds.index("double", index)
                branch = branches[index]
            branch_lines, branch_parts = self.write(branch, t)
            tag = repr(_VARINTS[2 * index])
            value = f"_join(({tag}, {', '.join(branch_parts)}))" if branch_parts else tag
            lines += [
                f"{'elif' if len(lines) > 1 else 'if'} {test}:",
                *_indent(branch_lines, 1),
                f"    {u} = {value}",
            ]
        lines += ["else:", f"    raise _no_branch({t}, {description})"]
        return lines, [u]

    def branch_test(self, branch: Any, t: str) -> str:
        """fastavro's (shallow) validation for one branch: it writes the first branch that
        validates, so testing in branch order picks the same one."""
        kind = self.kind(branch)
        if kind == "null":
            return f"{t} is None"
        if kind == "boolean":
            return f"isinstance({t}, bool)"
        if kind in ("int", "long"):
            bits = 31 if kind == "int" else 63
            return (
                f"(isinstance({t}, int) and not isinstance({t}, bool) "
                f"and {-(2**bits)} <= {t} < {2**bits})"
            )
        if kind in ("float", "double"):
            return f"(isinstance({t}, (int, float)) and not isinstance({t}, bool))"
        if kind == "string":
            return f"isinstance({t}, str)"
        if kind == "bytes":
            return f"isinstance({t}, (bytes, bytearray))"
        if kind == "fixed":
            return f"(isinstance({t}, bytes) and len({t}) == {branch['size']})"
        if kind == "enum":
            return f"{t} in {self.const(tuple(branch['symbols']), '_es')}"
        if kind == "array":
            return f"isinstance({t}, (list, tuple))"
        if kind == "record" and branch["name"] in self.classes:
            return f"isinstance({t}, {self.const(self.classes[branch['name']], '_cls')})"
        return f"isinstance({t}, dict)"  # a map, or a record written from a dict

    # -- reading ---------------------------------------------------------------------------------

    def read_long(self, target: str) -> list[str]:
        """Read a varint into ``target`` (still zig-zagged)."""
        return [
            f"{target} = b[p]",
            f"if {target} < 128:",
            "    p += 1",
            "else:",
            f"    {target}, p = _rv(b, p)",
        ]

    def read(self, node: Any, target: str) -> list[str]:
        """Statements that read ``node`` at ``b[p]`` into ``target`` and advance ``p``."""
        node = self.resolve(node)
        key = self.logical_key(node)
        if key is not None:
            fn, schema = self.const(LOGICAL_READERS[key], "_lr"), self.const(node, "_ls")
            return [
                *self.read(_without_logical(node), target),
                f"{target} = {fn}({target}, {schema}, {schema})",
            ]
        kind = self.kind(node)
        if kind == "null":
            return [f"{target} = None"]
        if kind == "boolean":
            return [f"{target} = b[p] != 0", "p += 1"]
        if kind in ("int", "long"):
            return [*self.read_long("x"), f"{target} = (x >> 1) ^ -(x & 1)"]
        if kind in ("float", "double"):
            fn, size = ("_uf", 4) if kind == "float" else ("_ud", 8)
            return [f"{target} = {fn}(b, p)[0]", f"p += {size}"]
        if kind in ("string", "bytes"):
            decode = ".decode()" if kind == "string" else ""
            return [
                *self.read_long("x"),
                "if x & 1:",
                f"    raise _negative('{kind} length')",
                "q = p + (x >> 1)",
                f"{target} = b[p:q]{decode}",
                "p = q",
            ]
        if kind == "fixed":
            return [f"q = p + {node['size']}", f"{target} = b[p:q]", "p = q"]
        if kind == "enum":
            symbols = self.const(tuple(node["symbols"]), "_sym")
            return [
                *self.read_long("x"),
                "if x & 1:",
                "    raise _negative('enum index')",
                f"{target} = {symbols}[x >> 1]",
            ]
        if kind == "record":
            return [f"{target}, p = {self.record_reader(node)}(b, p)"]
        if kind in ("array", "map"):
            return [f"{target}, p = {self.collection_reader(node)}(b, p)"]
        lines = [*self.read_long("x")]
        for index, branch in enumerate(node):
            lines += [
                f"{'if' if index == 0 else 'elif'} x == {2 * index}:",
                *_indent(self.read(branch, target), 1),
            ]
        lines += [
            "else:",
            "    raise ValueError(f'union branch {(x >> 1) ^ -(x & 1)} of "
            f"{len(node)} in the Avro body: the bytes are corrupt')",
        ]
        return lines

    def read_fields(self, record: dict[str, Any]) -> list[str]:
        lines: list[str] = []
        for i, field in enumerate(record["fields"]):
            lines += self.read(field["type"], f"f{i}")
        return lines

    def construct(self, record: dict[str, Any]) -> str:
        values = [f"f{i}" for i in range(len(record["fields"]))]
        cls = self.classes.get(record["name"])
        pairs = list(zip(record["fields"], values, strict=True))
        if cls is not None:  # keywords: generated classes are kw_only (defaults in any order)
            args = ", ".join(f"{f['name']}={v}" for f, v in pairs)
            return f"{self.const(cls, '_cls')}({args})"
        items = ", ".join(f"{f['name']!r}: {v}" for f, v in pairs)
        return "{" + items + "}"

    def record_reader(self, record: dict[str, Any]) -> str:
        name = record["name"]
        if name not in self.record_readers:
            fn = self.record_readers[name] = self.fresh("_rr")
            self.helpers += [
                f"def {fn}(b, p):",
                *_indent(self.read_fields(record), 1),
                f"    return {self.construct(record)}, p",
            ]
        return self.record_readers[name]

    def collection_reader(self, node: dict[str, Any]) -> str:
        fn = self.fresh("_rc")
        is_map = node["type"] == "map"
        item = self.read(node["values" if is_map else "items"], "y")
        if is_map:
            item = [*self.read("string", "k"), *item, "out[k] = y"]
        else:
            item = [*item, "out.append(y)"]
        self.helpers += [
            f"def {fn}(b, p):",
            f"    out = {'{}' if is_map else '[]'}",
            "    while True:",
            *_indent(self.read_long("x"), 2),
            "        if x == 0:",
            "            return out, p",
            "        if x & 1:",  # a negative count is followed by the block's size in bytes
            "            x += 1",
            *_indent(self.read_long("s"), 3),
            "        for _ in range(x >> 1):",
            *_indent(item, 3),
        ]
        return fn


def _indent(lines: list[str], levels: int) -> list[str]:
    pad = "    " * levels
    return [pad + line for line in lines]


def _without_logical(node: dict[str, Any]) -> Any:
    if node["type"] in PRIMITIVES:
        return node["type"]
    return {k: v for k, v in node.items() if k != "logicalType"}


def _short(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    if "name" in node:
        return str(node["name"])
    return str(node["type"])
