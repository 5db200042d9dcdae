"""Avro schemas as the rest of streamflow sees them: parsed once, validated, self-contained.

Every consumer of a schema (the serde, the registry, the compatibility checker, the CLI) gets it
through this module, so all of them agree on what a schema *is*:

* a fastavro-parsed schema (names fully qualified, references as full-name strings);
* checked beyond what fastavro checks, so a bad schema is refused when it is loaded rather than
  when the first record written years ago fails to resolve: duplicate field names, duplicate or
  nested union branches, and defaults that do not match their type (for a union, its *first*
  branch, as the Avro specification requires and Java-based registries enforce);
* self-contained: a type that references named types from other ``.avsc`` files carries their
  definitions inline, so its text can be registered and resolved on its own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro.schema
import orjson
from fastavro.schema import UnknownType

from streamflow.errors import SchemaError

# JSON shape of a schema: a type name, a union, or an object. Values inside are plain JSON.
Schema = str | list["Schema"] | dict[str, object]

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED_KINDS = frozenset({"record", "error", "enum", "fixed"})
COMPLEX_KINDS = NAMED_KINDS | {"array", "map"}


def parse(
    schema: Schema | bytes,
    *,
    source: str = "schema",
    named: Mapping[str, Schema] | None = None,
) -> Schema:
    """Parse JSON text, a schema dict/list, or an already fastavro-parsed schema, and validate it.

    ``named`` supplies types defined elsewhere (e.g. by :func:`load_schema_dir`) that this schema
    may reference by name. ``source`` names the schema in errors (a file path, "candidate"...).
    """
    raw = _from_text(schema, source) if isinstance(schema, (str, bytes)) else schema
    known: dict[str, Any] = dict(named or {})
    try:
        parsed = fastavro.schema.parse_schema(raw, named_schemas=known)
    except Exception as exc:  # fastavro raises SchemaParseException, KeyError...
        raise SchemaError(f"{source}: not a valid Avro schema: {_describe_error(exc)}") from exc
    validate(parsed, named_types(parsed, known), source=source)
    return parsed


def _from_text(text: str | bytes, source: str) -> Schema:
    if isinstance(text, str) and text in PRIMITIVES:
        return text  # a parsed primitive is the bare name, not the JSON string '"int"'
    try:
        loaded: Schema = json.loads(text)
    except ValueError as exc:
        raise SchemaError(
            f"{source}: not valid JSON ({exc}); an .avsc file holds one JSON schema"
        ) from exc
    return loaded


def _describe_error(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing attribute {exc}"
    if isinstance(exc, UnknownType):
        return f"unknown type {exc} (define it first, or load it from the schema directory)"
    return str(exc) or type(exc).__name__


def named_types(parsed: Schema, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every named type visible to ``parsed``: those it defines, plus ``extra`` (external ones)."""
    found: dict[str, Any] = dict(extra or {})
    if isinstance(parsed, dict):
        found.update(parsed.get("__named_schemas", {}))  # type: ignore[call-overload]
    for node in _walk(parsed):
        if node.get("type") in NAMED_KINDS:
            found[str(node["name"])] = node
    return found


def _walk(schema: Any) -> Iterator[dict[str, Any]]:
    """Yield every schema object defined inline (references are names and are not followed)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            yield node
            kind = node.get("type")
            if kind in ("record", "error"):
                stack.extend(field["type"] for field in node["fields"])
            elif kind == "array":
                stack.append(node["items"])
            elif kind == "map":
                stack.append(node["values"])
            elif isinstance(kind, (dict, list)):
                stack.append(kind)


def resolve(schema: Any, names: Mapping[str, Any]) -> Any:
    """Follow a reference to its definition; reduce ``{"type": "int", ...}`` to ``"int"``.

    Logical types resolve as their underlying type: the specification's resolution rules ignore
    them, and so does the compatibility checker.
    """
    while True:
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return schema
            try:
                schema = names[schema]
            except KeyError:
                raise SchemaError(f"unknown named type {schema!r}") from None
        elif isinstance(schema, dict) and schema.get("type") not in COMPLEX_KINDS:
            schema = schema["type"]
        else:
            return schema


def validate(parsed: Schema, names: Mapping[str, Any], *, source: str = "schema") -> None:
    """Refuse what fastavro accepts but the specification (and every registry) rejects."""
    for node in _walk(parsed):
        kind = node.get("type")
        if kind in ("record", "error"):
            seen: set[str] = set()
            for field in node["fields"]:
                name = field["name"]
                where = f"{source}: field {name!r} of record {node['name']!r}"
                if name in seen:
                    raise SchemaError(f"{where} is declared twice; field names must be unique")
                seen.add(name)
                if "default" in field:
                    problem = _default_problem(field["type"], field["default"], names)
                    if problem:
                        raise SchemaError(f"{where}: default {field['default']!r} {problem}")
        elif kind == "enum" and len(set(node["symbols"])) != len(node["symbols"]):
            raise SchemaError(f"{source}: enum {node['name']!r} lists a symbol twice")
    for union in _unions(parsed):
        keys = [_union_key(branch, names) for branch in union]
        if "union" in keys:
            raise SchemaError(f"{source}: union {union} directly contains another union")
        if len(set(keys)) != len(keys):
            raise SchemaError(f"{source}: union {union} has two branches of the same type")


def _unions(schema: Any) -> Iterator[list[Any]]:
    if isinstance(schema, list):
        yield schema
    for node in _walk(schema):
        kind = node.get("type")
        children = (
            [f["type"] for f in node["fields"]]
            if kind in ("record", "error")
            else [node["items"]]
            if kind == "array"
            else [node["values"]]
            if kind == "map"
            else [kind]
            if isinstance(kind, list)
            else []
        )
        yield from (child for child in children if isinstance(child, list))


def _union_key(branch: Any, names: Mapping[str, Any]) -> str:
    """Unions may hold one schema per type, and one per name for named types (spec, 'Unions')."""
    node = resolve(branch, names)
    if isinstance(node, list):
        return "union"
    if isinstance(node, str):
        return node
    return str(node["name"]) if node["type"] in NAMED_KINDS else str(node["type"])


def _default_problem(schema: Any, value: object, names: Mapping[str, Any]) -> str | None:
    """Why ``value`` is not a valid JSON default for ``schema``, or None if it is."""
    node = resolve(schema, names)
    if isinstance(node, list):
        problem = _default_problem(node[0], value, names)
        return (
            None
            if problem is None
            else f"{problem} (a union's default must match its first branch)"
        )
    kind = node if isinstance(node, str) else node["type"]
    ok: bool
    if kind == "null":
        ok = value is None
    elif kind == "boolean":
        ok = isinstance(value, bool)
    elif kind in ("int", "long"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind in ("float", "double"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind in ("string", "bytes"):
        ok = isinstance(value, str)
    elif kind == "fixed":
        ok = isinstance(value, str) and len(value) == node["size"]
    elif kind == "enum":
        ok = value in node["symbols"]
    elif kind == "array":
        if not isinstance(value, list):
            return f"is not a JSON array for {kind}"
        return next(filter(None, (_default_problem(node["items"], v, names) for v in value)), None)
    elif kind == "map":
        if not isinstance(value, dict):
            return "is not a JSON object for map"
        problems = (_default_problem(node["values"], v, names) for v in value.values())
        return next(filter(None, problems), None)
    else:  # record
        if not isinstance(value, dict):
            return f"is not a JSON object for record {node['name']!r}"
        for field in node["fields"]:
            if field["name"] in value:
                problem = _default_problem(field["type"], value[field["name"]], names)
            else:
                problem = None if "default" in field else f"lacks field {field['name']!r}"
            if problem:
                return problem
        return None
    return None if ok else f"is not a valid {kind}"


def load_schema_file(
    path: str | os.PathLike[str], named: Mapping[str, Schema] | None = None
) -> Schema:
    """Read and parse one ``.avsc`` file; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read schema file ({exc.strerror})") from exc
    return parse(text, source=str(path), named=named)


def load_schema_dir(path: str | os.PathLike[str]) -> dict[str, Schema]:
    """Every named type defined by ``path/*.avsc``, by full name, each one self-contained.

    Files may reference types defined in other files, in any order: they are parsed in
    dependency order. Cached on the files' names, sizes and modification times, so a long-running
    process parses them once and a changed file is seen.
    """
    root = Path(path)
    if not root.is_dir():
        raise SchemaError(f"{root}: schema directory not found")
    files = sorted(root.glob("*.avsc"))
    stamp = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files)
    return dict(_load_dir_cached(stamp))


@lru_cache(maxsize=16)
def _load_dir_cached(stamp: tuple[tuple[str, int, int], ...]) -> Mapping[str, Schema]:
    pending = {name: _read_json(Path(name)) for name, _, _ in stamp}
    known: dict[str, Any] = {}
    while pending:
        progressed = False
        errors: dict[str, Exception] = {}
        for name, raw in list(pending.items()):
            attempt = dict(known)  # a failed parse may have registered half of the file's types
            try:
                fastavro.schema.parse_schema(raw, named_schemas=attempt)
            except Exception as exc:  # noqa: BLE001  retried once its dependencies load
                errors[name] = exc
                continue
            # fastavro silently replaces a redefined type; two files defining one name is a bug.
            clash = sorted(k for k in known if attempt[k] is not known[k])
            if clash:
                raise SchemaError(f"{name}: redefines {clash}, already defined by another file")
            known = attempt
            del pending[name]
            progressed = True
        if not progressed:
            name, error = min(errors.items(), key=lambda item: item[0])
            raise SchemaError(
                f"{name}: not a valid Avro schema: {_describe_error(error)}"
            ) from error
    return {full: parse(self_contained(full, known), source=full) for full in sorted(known)}


def _read_json(path: Path) -> Schema:
    try:
        return _from_text(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise SchemaError(f"{path}: cannot read schema file ({exc.strerror})") from exc


def self_contained(fullname: str, names: Mapping[str, Any]) -> Schema:
    """The definition of ``fullname`` with each referenced named type defined inline at its first
    use, so the text stands alone (what a registry stores); later uses stay references."""
    defined: set[str] = set()

    def expand(schema: Any) -> Any:
        if isinstance(schema, str) and schema not in PRIMITIVES:
            if schema in defined:
                return schema
            return expand(names[schema])
        if isinstance(schema, list):
            return [expand(branch) for branch in schema]
        if not isinstance(schema, dict):
            return schema
        node = {k: v for k, v in schema.items() if not k.startswith("__")}
        kind = node["type"]
        if kind in NAMED_KINDS:
            if node["name"] in defined:  # inline in its file, but already expanded from a reference
                return node["name"]
            defined.add(node["name"])
        if kind in ("record", "error"):
            node["fields"] = [{**f, "type": expand(f["type"])} for f in node["fields"]]
        elif kind == "array":
            node["items"] = expand(node["items"])
        elif kind == "map":
            node["values"] = expand(node["values"])
        elif isinstance(kind, (str, list, dict)) and kind not in PRIMITIVES | COMPLEX_KINDS:
            node["type"] = expand(kind)
        return node

    return expand(fullname)  # type: ignore[no-any-return]


def canonical_schema(schema: Schema | str | bytes) -> str:
    """The text a registry stores and compares: parsed (full names), fastavro's bookkeeping
    removed, keys sorted, no whitespace.

    Not the specification's Parsing Canonical Form, which drops defaults, aliases and docs:
    defaults and aliases change how old data is read, so two schemas that differ in them must
    not share an id.
    """
    parsed = parse(schema, source="schema") if not _is_parsed(schema) else schema
    return orjson.dumps(_strip(parsed), option=orjson.OPT_SORT_KEYS).decode()


def _is_parsed(schema: Any) -> bool:
    return isinstance(schema, dict) and "__fastavro_parsed" in schema


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node
