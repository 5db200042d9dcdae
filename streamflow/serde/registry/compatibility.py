"""Can data written with one Avro schema be read with another? The answer, field by field.

fastavro resolves schemas while reading but has no checker, and finding out at read time is too
late: a restore replays every old changelog record and a workflow may sleep for a year before its
journal is read again. This module applies the Avro 1.11 specification's "Schema Resolution" rules
to the schemas themselves, so an incompatible schema is refused before anything is written with
it, and each reason names the field (a readable path) and the rule (one of the six kinds
registries report).

Where the specification leaves room, the checker takes the strict reading that registries take:
a writer union is compatible only if *every* branch can be read, and an enum that loses symbols is
compatible only if the reader declares a default symbol. Logical types are ignored, as in the
specification (they resolve as their underlying type).

Why not the Apache ``avro`` package's checker: what matters is whether *fastavro*, the reader
that actually reads our records, can read old data, and the Apache package is a second Avro
implementation (its own parser and name resolution) pulled in for one function. This checker
works on the schemas fastavro parsed, and its verdicts are cross-checked against fastavro's own
resolution: ``tests/unit/serde/test_compatibility_fastavro.py`` writes witness values with one
schema and reads them with the other, and the two must agree (the known, deliberate
differences are pinned in ``test_fastavro_divergences.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from streamflow.errors import SchemaError
from streamflow.serde.avro.schema import NAMED_KINDS, Schema, named_types, parse, resolve

# The specification's promotions: the writer's type (key) may be read as any of these.
PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


class IncompatibilityKind(StrEnum):
    """The six kinds Java Avro and Confluent-compatible registries report, with the same names."""

    TYPE_MISMATCH = "TYPE_MISMATCH"
    NAME_MISMATCH = "NAME_MISMATCH"
    FIXED_SIZE_MISMATCH = "FIXED_SIZE_MISMATCH"
    MISSING_ENUM_SYMBOLS = "MISSING_ENUM_SYMBOLS"
    MISSING_UNION_BRANCH = "MISSING_UNION_BRANCH"
    READER_FIELD_MISSING_DEFAULT_VALUE = "READER_FIELD_MISSING_DEFAULT_VALUE"


@dataclass(frozen=True)
class Incompatibility:
    """One reason the reader cannot read what the writer wrote.

    ``path`` locates the problem in the reader's schema by field names: ``/fields/address/fields/
    zip``, ``/fields/tags/items``, ``/fields/attrs/values``; ``/`` is the top level. A union adds
    no segment (the message names the branch), so a path reads the same whether or not a field
    is optional. ``context``
    says which pair of schemas it came from when a mode compares several (empty for ``check``).
    """

    kind: IncompatibilityKind
    path: str
    message: str
    context: str = ""

    def __str__(self) -> str:
        suffix = f" ({self.context})" if self.context else ""
        return f"{self.kind} {self.path}: {self.message}{suffix}"


class CompatibilityMode(StrEnum):
    """Which versions a new schema must be compatible with, and in which direction.

    BACKWARD: the new schema reads data written with the latest one (upgrade consumers first).
    FORWARD: the latest schema reads data written with the new one (upgrade producers first).
    FULL: both. The TRANSITIVE forms check against every existing version, not only the latest:
    what stores and journals need, since a restore replays records of every age.
    """

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @classmethod
    def parse(cls, text: str | CompatibilityMode) -> CompatibilityMode:
        """Case-insensitive, ``-`` or ``_``: 'full-transitive' is FULL_TRANSITIVE."""
        if isinstance(text, CompatibilityMode):
            return text
        try:
            return cls(text.strip().upper().replace("-", "_"))
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise SchemaError(
                f"unknown compatibility mode {text!r}; use one of {choices}"
            ) from None


def check(reader: Schema | bytes, writer: Schema | bytes) -> list[Incompatibility]:
    """Every reason data written with ``writer`` cannot be read with ``reader``; empty if it can.

    Schemas may be JSON text, dicts/lists, or fastavro-parsed; an invalid one raises SchemaError.
    """
    return _pair(parse(reader, source="reader schema"), parse(writer, source="writer schema"))


def check_compatibility(
    mode: CompatibilityMode | str,
    existing: Sequence[Schema | bytes],
    candidate: Schema | bytes,
) -> list[Incompatibility]:
    """Why ``candidate`` may not become the next version after ``existing`` (oldest first).

    Non-transitive modes compare with the newest existing version only. The first version of a
    subject, and anything under NONE, is always accepted.
    """
    mode = CompatibilityMode.parse(mode)
    new = parse(candidate, source="candidate schema")
    old = [parse(s, source=f"existing version {i}") for i, s in enumerate(existing, start=1)]
    if mode is CompatibilityMode.NONE or not old:
        return []
    transitive = mode.value.endswith("_TRANSITIVE")
    versions = list(enumerate(old, start=1)) if transitive else [(len(old), old[-1])]
    backward = mode.value.startswith(("BACKWARD", "FULL"))
    forward = mode.value.startswith(("FORWARD", "FULL"))
    found: list[Incompatibility] = []
    for number, version in reversed(versions):  # newest first: the likeliest to matter
        if backward:
            found += _with_context(_pair(new, version), f"new schema reading version {number}")
        if forward:
            found += _with_context(_pair(version, new), f"version {number} reading new schema")
    return found


def _pair(reader: Schema, writer: Schema) -> list[Incompatibility]:
    return _Checker(named_types(reader), named_types(writer)).run(reader, writer)


def _with_context(found: list[Incompatibility], context: str) -> list[Incompatibility]:
    return [Incompatibility(i.kind, i.path, i.message, context) for i in found]


def _kind(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    return "record" if node["type"] == "error" else str(node["type"])


def _describe(node: Any) -> str:
    kind = _kind(node)
    if kind in ("record", "enum", "fixed"):
        return f"{kind} {node['name']!r}"
    if kind == "union":
        return "union [" + ", ".join(_short_type(b) for b in node) + "]"
    return f"{kind} {_short_type(node)!r}" if kind in ("array", "map") else repr(kind)


def _short_type(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    if node.get("type") in NAMED_KINDS:
        return str(node["name"])
    if node.get("type") == "array":
        return f"array<{_short_type(node['items'])}>"
    if node.get("type") == "map":
        return f"map<{_short_type(node['values'])}>"
    return _short_type(node["type"])


def _unqualified(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _accepts_name(r: dict[str, Any], w: dict[str, Any]) -> bool:
    """Named types resolve when their unqualified names match (spec 1.11: namespaces need not), or
    when the writer's full name is one of the reader's aliases. An alias without a dot is relative
    to the reader type's namespace; comparing aliases by full name is what Java Avro does, and
    fastavro accepts every alias match this accepts."""
    if _unqualified(r["name"]) == _unqualified(w["name"]):
        return True
    namespace = r["name"].rpartition(".")[0]
    aliases = {a if "." in a or not namespace else f"{namespace}.{a}" for a in r.get("aliases", ())}
    return w["name"] in aliases


class _Checker:
    """One reader/writer comparison. Remembers record pairs already compared, which both stops
    recursive types (a linked list's ``next``) from recursing forever and reports a problem in a
    type used in many places once, at its first path."""

    def __init__(self, reader_names: dict[str, Any], writer_names: dict[str, Any]) -> None:
        self._r_names = reader_names
        self._w_names = writer_names
        self._compared: set[tuple[str, str]] = set()
        self._found: list[Incompatibility] = []

    def run(self, reader: Any, writer: Any) -> list[Incompatibility]:
        self._compare(reader, writer, "")
        return self._found

    def _report(self, kind: IncompatibilityKind, path: str, message: str) -> None:
        self._found.append(Incompatibility(kind, path or "/", message))

    def _compare(self, reader: Any, writer: Any, path: str) -> None:
        r = resolve(reader, self._r_names)
        w = resolve(writer, self._w_names)
        rk, wk = _kind(r), _kind(w)
        if wk == "union":
            # The writer may have chosen any branch: every one must be readable.
            for branch in w:
                b = resolve(branch, self._w_names)
                if rk == "union":
                    self._into_union(r, b, path)
                elif rk != _kind(b) and rk not in PROMOTIONS.get(_kind(b), ()):
                    self._report(
                        IncompatibilityKind.TYPE_MISMATCH,
                        path,
                        f"the writer's {_describe(w)} may hold {_describe(b)}, which the reader's "
                        f"{_describe(r)} cannot read; keep that branch in a reader union",
                    )
                else:
                    self._compare(r, b, path)
        elif rk == "union":
            self._into_union(r, w, path)
        elif rk != wk:
            if rk not in PROMOTIONS.get(wk, ()):
                self._report(
                    IncompatibilityKind.TYPE_MISMATCH,
                    path,
                    f"the writer's {_describe(w)} cannot be read as the reader's {_describe(r)}; "
                    "the only promotions are int to long/float/double, long to float/double, "
                    "float to double and string to/from bytes",
                )
        elif rk == "array":
            self._compare(r["items"], w["items"], f"{path}/items")
        elif rk == "map":
            self._compare(r["values"], w["values"], f"{path}/values")
        elif rk in ("record", "enum", "fixed") and self._names_match(r, w, path):
            if rk == "record":
                self._compare_records(r, w, path)
            elif rk == "enum":
                self._compare_enums(r, w, path)
            elif r["size"] != w["size"]:
                self._report(
                    IncompatibilityKind.FIXED_SIZE_MISMATCH,
                    f"{path}/size",
                    f"fixed {r['name']!r} is {w['size']} bytes in the writer's schema and "
                    f"{r['size']} in the reader's; fixed types resolve only at the same size",
                )

    def _names_match(self, r: dict[str, Any], w: dict[str, Any], path: str) -> bool:
        if _accepts_name(r, w):
            return True
        self._report(
            IncompatibilityKind.NAME_MISMATCH,
            f"{path}/name",
            f"the writer's {_describe(w)} cannot be read as the reader's {_describe(r)}: the "
            f"names differ and the reader lists no alias {w['name']!r}",
        )
        return False

    def _compare_records(self, r: dict[str, Any], w: dict[str, Any], path: str) -> None:
        pair = (r["name"], w["name"])
        if pair in self._compared:
            return
        self._compared.add(pair)
        writer_fields = {f["name"]: f for f in w["fields"]}
        for field in r["fields"]:
            # Fields match by name, else by one of the reader field's aliases; writer fields the
            # reader does not declare are skipped.
            names = [field["name"], *field.get("aliases", ())]
            match = next((writer_fields[n] for n in names if n in writer_fields), None)
            field_path = f"{path}/fields/{field['name']}"
            if match is not None:
                self._compare(field["type"], match["type"], field_path)
            elif "default" not in field:
                self._report(
                    IncompatibilityKind.READER_FIELD_MISSING_DEFAULT_VALUE,
                    field_path,
                    f"field {field['name']!r} of record {r['name']!r} is not in the writer's "
                    "schema and has no default, so data written without it cannot be read; "
                    "give it a default",
                )

    def _compare_enums(self, r: dict[str, Any], w: dict[str, Any], path: str) -> None:
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if missing and "default" not in r:
            self._report(
                IncompatibilityKind.MISSING_ENUM_SYMBOLS,
                f"{path}/symbols",
                f"enum {r['name']!r} of the reader lacks the writer's symbols {missing} and "
                "declares no default symbol to read them as",
            )

    def _into_union(self, union: list[Any], writer: Any, path: str) -> None:
        """A non-union writer resolves to the reader union's first matching branch (spec).

        An exact match (same type, or same name for named types) is preferred over a promotion,
        as the Java implementation does: the reader gets the writer's type back when it can.
        """
        w = resolve(writer, self._w_names)
        branches = [resolve(b, self._r_names) for b in union]
        exact = [
            b
            for b in branches
            if _kind(b) == _kind(w) and (_kind(w) not in NAMED_KINDS or _accepts_name(b, w))
        ]
        promoted = [b for b in branches if _kind(b) in PROMOTIONS.get(_kind(w), ())]
        if exact or promoted:
            self._compare((exact or promoted)[0], w, path)
            return
        self._report(
            IncompatibilityKind.MISSING_UNION_BRANCH,
            path,
            f"the reader's {_describe(union)} has no branch that can read the writer's "
            f"{_describe(w)}",
        )
