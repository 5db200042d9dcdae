"""What changed between two versions of an Avro schema, one line per change.

``streamflow schemas diff`` prints these lines; kept apart from the CLI so the comparison can be
read, and called, without click. The diff is structural and by name: record fields are matched
by name (or by an alias naming an old field, which is a rename), union branches by what they
are, named types by full name. It says what changed, not whether readers cope with it: that is
``serde/registry/compatibility.py``.

Each line starts with ``+`` (added), ``-`` (removed) or ``~`` (changed), then the path of the
change in the schema (``/fields/amount/default``), then what it was and became.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from streamflow.serde.avro.schema import NAMED_KINDS, Schema, named_types, resolve


def schema_diff(old: Schema, new: Schema) -> list[str]:
    """The changes from ``old`` to ``new`` (both parsed), in schema order; empty when none."""
    return list(_SchemaDiff(named_types(old), named_types(new)).run(old, new))


def _show(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "[" + ", ".join(_show(b) for b in node) + "]"
    kind = node["type"]
    if kind in NAMED_KINDS:
        return f"{kind} {node['name']}"
    if kind == "array":
        return f"array<{_show(node['items'])}>"
    if kind == "map":
        return f"map<{_show(node['values'])}>"
    return _show(kind)


class _SchemaDiff:
    """A structural diff by field name; shared named types are compared once (recursive types)."""

    def __init__(self, old_names: dict[str, Any], new_names: dict[str, Any]) -> None:
        self._old_names, self._new_names = old_names, new_names
        self._seen: set[tuple[str, str]] = set()

    def run(self, old: Any, new: Any, path: str = "") -> Iterator[str]:
        o, n = resolve(old, self._old_names), resolve(new, self._new_names)
        ok = "union" if isinstance(o, list) else o if isinstance(o, str) else o["type"]
        nk = "union" if isinstance(n, list) else n if isinstance(n, str) else n["type"]
        where = path or "/"
        if ok != nk:
            yield f"~ {where}: {_show(o)} -> {_show(n)}"
        elif ok == "union":
            old_b, new_b = [_show(b) for b in o], [_show(b) for b in n]
            for branch in new_b:
                if branch not in old_b:
                    yield f"+ {where}: union branch {branch}"
            for branch in old_b:
                if branch not in new_b:
                    yield f"- {where}: union branch {branch}"
        elif ok in ("array", "map"):
            key = "items" if ok == "array" else "values"
            yield from self.run(o[key], n[key], f"{path}/{key}")
        elif ok in NAMED_KINDS:
            if o["name"] != n["name"]:
                yield f"~ {path}/name: {o['name']} -> {n['name']}"
            if (o["name"], n["name"]) in self._seen:
                return
            self._seen.add((o["name"], n["name"]))
            if ok == "fixed" and o["size"] != n["size"]:
                yield f"~ {path}/size: {o['size']} -> {n['size']}"
            elif ok == "enum":
                yield from self._enum(o, n, path)
            elif ok in ("record", "error"):
                yield from self._record(o, n, path)

    def _enum(self, o: dict[str, Any], n: dict[str, Any], path: str) -> Iterator[str]:
        for symbol in n["symbols"]:
            if symbol not in o["symbols"]:
                yield f"+ {path}/symbols: {symbol}"
        for symbol in o["symbols"]:
            if symbol not in n["symbols"]:
                yield f"- {path}/symbols: {symbol}"
        if o.get("default") != n.get("default"):
            yield f"~ {path}/default: {o.get('default', 'none')} -> {n.get('default', 'none')}"

    def _record(self, o: dict[str, Any], n: dict[str, Any], path: str) -> Iterator[str]:
        old_fields = {f["name"]: f for f in o["fields"]}
        new_fields = {f["name"]: f for f in n["fields"]}
        for name, field in new_fields.items():
            field_path = f"{path}/fields/{name}"
            renamed = [
                a for a in field.get("aliases", ()) if a in old_fields and a not in new_fields
            ]
            before = old_fields.get(name) or (old_fields[renamed[0]] if renamed else None)
            if before is None:
                default = json.dumps(field["default"]) if "default" in field else None
                note = f"default {default}" if default is not None else "no default"
                yield f"+ {field_path}: {_show(field['type'])} ({note})"
                continue
            if before["name"] != name:
                yield f"~ {field_path}: renamed from {before['name']} (alias)"
            if before.get("default", ...) != field.get("default", ...):
                old_d = json.dumps(before["default"]) if "default" in before else "none"
                new_d = json.dumps(field["default"]) if "default" in field else "none"
                yield f"~ {field_path}/default: {old_d} -> {new_d}"
            yield from self.run(before["type"], field["type"], field_path)
        for name, field in old_fields.items():
            taken = any(name in f.get("aliases", ()) for f in new_fields.values())
            if name not in new_fields and not taken:
                yield f"- {path}/fields/{name}: {_show(field['type'])}"
