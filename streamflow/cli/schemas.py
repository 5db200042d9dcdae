"""`streamflow schemas`: check and compare Avro schema versions before they reach a registry.

Made for CI: `compat` exits 0 when the new version is compatible, 1 when it is not (one reason
per line: kind, path, message), 2 when the input itself is bad, so a pipeline can tell "this
change breaks readers" from "this job is misconfigured".
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn

import click

from streamflow.errors import SchemaError
from streamflow.serde.avro_schema import (
    NAMED_KINDS,
    Schema,
    load_schema_dir,
    load_schema_file,
    named_types,
    resolve,
)
from streamflow.serde.compatibility import CompatibilityMode, check_compatibility

_MODES = ", ".join(m.value for m in CompatibilityMode)


@click.group()
def schemas() -> None:
    """Avro schemas: compatibility between versions, differences between two versions."""


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _load(paths: Sequence[str], schema_dir: str | None) -> list[Schema]:
    try:
        named: Mapping[str, Schema] = load_schema_dir(schema_dir) if schema_dir else {}
        return [load_schema_file(path, named) for path in paths]
    except SchemaError as exc:
        _fail(str(exc))


_DIR_HELP = "Directory of .avsc files defining named types the given files reference."


@schemas.command()
@click.option("--mode", "mode_text", required=True, metavar="MODE", help=f"One of {_MODES}.")
@click.option("--schema-dir", type=click.Path(file_okay=False), help=_DIR_HELP)
@click.argument("files", nargs=-1, metavar="V1.avsc [V2.avsc ...] NEW.avsc")
def compat(mode_text: str, schema_dir: str | None, files: tuple[str, ...]) -> None:
    """Check NEW.avsc against the existing versions (oldest first) under MODE.

    Non-transitive modes compare with the newest existing version only. Exit 0: compatible;
    1: incompatible, one reason per line; 2: bad input.
    """
    try:
        mode = CompatibilityMode.parse(mode_text)
    except SchemaError as exc:
        _fail(str(exc))
    if len(files) < 2:
        _fail(
            "give at least two schema files: the existing version(s), oldest first, then the new"
            " one"
        )
    *existing, candidate = _load(files, schema_dir)
    try:
        problems = check_compatibility(mode, existing, candidate)
    except SchemaError as exc:
        _fail(str(exc))
    if not problems:
        click.echo("compatible")
        return
    for problem in problems:
        context = f" ({problem.context})" if problem.context else ""
        click.echo(f"{problem.kind}\t{problem.path}\t{problem.message}{context}")
    sys.exit(1)


@schemas.command()
@click.option("--schema-dir", type=click.Path(file_okay=False), help=_DIR_HELP)
@click.argument("old_file", metavar="OLD.avsc")
@click.argument("new_file", metavar="NEW.avsc")
def diff(old_file: str, new_file: str, schema_dir: str | None) -> None:
    """List what changed from OLD.avsc to NEW.avsc: '+' added, '-' removed, '~' changed.

    Exit 0 when nothing changed, 1 when something did (like diff(1)), 2 on bad input.
    """
    old, new = _load([old_file, new_file], schema_dir)
    lines = list(_SchemaDiff(named_types(old), named_types(new)).run(old, new))
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo("no differences")
    sys.exit(1 if lines else 0)


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
