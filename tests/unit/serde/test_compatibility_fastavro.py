"""Properties of the checker, and its verdicts cross-validated against fastavro's own resolution.

The independent truth is fastavro reading, with a reader schema R, bytes written with a writer
schema W (``schemaless_reader(buf, W, R)``). Hypothesis generates W, derives R from it by the
evolutions people make (fields added, dropped, renamed; types promoted or changed; enum symbols,
fixed sizes, union branches, names and aliases changed), and for both directions asserts:

* check(R, W) == []  =>  fastavro reads every witness datum and random data written with W;
* check(R, W) != []  =>  fastavro fails on at least one witness datum.

Witnesses (avro_witness.py) take every union branch and enum symbol at every position. Bytes are
ASCII: fastavro's bytes-to-string promotion fails on non-UTF-8 bytes (see
test_fastavro_divergences.py).
"""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
from avro_witness import (
    PRIMS,
    draw_datum,
    encode,
    fastavro_failures,
    fastavro_reads,
    parsed_with_names,
    plain,
    witnesses,
)
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from streamflow.errors import SchemaError
from streamflow.serde.avro.schema import parse
from streamflow.serde.registry.compatibility import CompatibilityMode, check, check_compatibility

WIDER = {
    "int": ["long", "float", "double"],
    "long": ["float", "double"],
    "float": ["double"],
    "string": ["bytes"],
    "bytes": ["string"],
}
NARROWER = {
    "long": ["int"],
    "float": ["int", "long"],
    "double": ["int", "long", "float"],
    "string": ["bytes"],
    "bytes": ["string"],
}
SYMBOLS = ["A", "B", "C", "D", "E"]


class _Ctx:
    """Fresh names, and the named types defined so far (what a later reference may use)."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.count = prefix, 0
        self.defined: dict[str, dict[str, Any]] = {}

    def fresh(self) -> str:
        self.count += 1
        return f"{self.prefix}{self.count}"


def default_for(t: Any, defs: dict[str, Any]) -> Any:
    """A valid JSON default for t (for a union: for its first branch, as the spec requires)."""
    if isinstance(t, list):
        return default_for(t[0], defs)
    if isinstance(t, str):
        if t not in PRIMS:
            return default_for(defs[t], defs)
        return {
            "null": None,
            "boolean": False,
            "int": 0,
            "long": 0,
            "float": 0.0,
            "double": 0.0,
            "bytes": "",
            "string": "",
        }[t]
    kind = t["type"]
    if kind == "record":
        return {f["name"]: default_for(f["type"], defs) for f in t["fields"]}
    return {
        "enum": lambda: t["symbols"][0],
        "fixed": lambda: "\u0000" * t["size"],
        "array": list,
        "map": dict,
    }[kind]()


def gen_type(draw: Any, ctx: _Ctx, depth: int, in_union: bool = False, kind: str = "") -> Any:
    options = ["prim", "prim", "prim", "enum", "fixed"]
    if depth < 3:
        options += ["record", "record", "array", "map"] + ([] if in_union else ["union", "union"])
    if ctx.defined:
        options.append("ref")
    kind = kind or draw(st.sampled_from(options))
    if kind == "prim":
        return draw(st.sampled_from(PRIMS))
    if kind == "ref":
        return draw(st.sampled_from(sorted(ctx.defined)))
    if kind == "enum":
        symbols = draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=4, unique=True))
        node: dict[str, Any] = {"type": "enum", "name": ctx.fresh(), "symbols": symbols}
        if draw(st.booleans()):
            node["default"] = draw(st.sampled_from(symbols))
    elif kind == "fixed":
        node = {"type": "fixed", "name": ctx.fresh(), "size": draw(st.integers(1, 3))}
    elif kind in ("array", "map"):
        return {
            "type": kind,
            ("items" if kind == "array" else "values"): gen_type(draw, ctx, depth + 1),
        }
    elif kind == "union":
        branches, keys = [], set()
        for _ in range(draw(st.integers(1, 3))):
            before = dict(ctx.defined)
            branch = gen_type(draw, ctx, depth + 1, in_union=True)
            key = branch if isinstance(branch, str) else branch.get("name", branch["type"])
            if key in keys:
                ctx.defined = before  # the dropped branch's definitions must not be referenced
            else:
                keys.add(key)
                branches.append(branch)
        return branches
    else:
        name = ctx.fresh()
        fields = []
        for i in range(draw(st.integers(0 if depth else 1, 4))):
            ftype = gen_type(draw, ctx, depth + 1)
            field: dict[str, Any] = {"name": f"f{i}", "type": ftype}
            if draw(st.booleans()):
                field["default"] = default_for(ftype, ctx.defined)
            fields.append(field)
        node = {"type": "record", "name": name, "fields": fields}
    ctx.defined[node["name"]] = node
    return node


@st.composite
def writer_schemas(draw: Any) -> dict[str, Any]:
    return gen_type(draw, _Ctx("T"), 0, kind="record")  # type: ignore[no-any-return]


class _Mutation:
    def __init__(self, draw: Any, rate: float) -> None:
        self.draw, self.rate = draw, rate
        self.ctx = _Ctx("M")
        self.renamed: dict[str, str] = {}
        self.defs: dict[str, Any] = {}

    def hit(self) -> bool:
        return bool(self.draw(st.floats(0, 1)) < self.rate)

    def pick(self, options: list[Any]) -> Any:
        return self.draw(st.sampled_from(options))

    def rename(self, node: dict[str, Any]) -> None:
        old, new = node["name"], self.ctx.fresh()
        node["name"] = new
        if self.draw(st.booleans()):
            node["aliases"] = [old]
        self.renamed[old] = new

    def fresh_type(self, in_union: bool = False) -> Any:
        """A new type that references nothing outside itself (the writer's names may be gone)."""
        self.ctx.defined = {}
        return gen_type(self.draw, self.ctx, 2, in_union)

    def type_(self, t: Any, in_union: bool = False) -> Any:
        if self.hit() and self.draw(st.integers(0, 9)) == 0:
            return self.fresh_type(in_union)  # replaced by something else
        if isinstance(t, str):
            if t not in PRIMS or not self.hit():
                return t
            op = self.pick(
                ["wider", "wider", "narrower", "other"] + ([] if in_union else ["optional"] * 2)
            )
            if op == "optional":
                return self.pick([["null", t], [t, "null"]]) if t != "null" else t
            return self.pick({"wider": WIDER, "narrower": NARROWER}.get(op, {}).get(t, PRIMS))
        if isinstance(t, list):
            branches = [self.type_(b, in_union=True) for b in t]
            if self.hit():
                op = self.pick(["drop", "add", "reorder", "unwrap"])
                if op == "drop" and len(branches) > 1:
                    branches.pop(self.draw(st.integers(0, len(branches) - 1)))
                elif op == "add":
                    branches.append(self.pick([p for p in PRIMS if p not in branches] or ["null"]))
                elif op == "reorder":
                    branches.reverse()
                elif op == "unwrap" and not in_union:
                    return self.pick(branches)
            return branches
        node = dict(t)
        kind = node["type"]
        if kind in ("array", "map"):
            key = "items" if kind == "array" else "values"
            node[key] = self.type_(node[key])
            if self.hit():
                node = {
                    "type": "map" if kind == "array" else "array",
                    ("values" if kind == "array" else "items"): node[key],
                }
            return node
        if kind == "record":
            node["fields"] = [self.field(f) for f in node["fields"]]
        if self.hit():
            self.named_op(node)
        self.defs[t["name"]] = self.defs[node["name"]] = node
        return node

    def field(self, f: dict[str, Any]) -> dict[str, Any]:
        new = {**f, "type": self.type_(f["type"])}
        if "default" in f and new["type"] != f["type"]:
            try:
                new["default"] = default_for(new["type"], {**self.defs, **self.ctx.defined})
            except KeyError:
                pass  # the type references a definition this evolution removed: parse refuses R
        return new

    def named_op(self, node: dict[str, Any]) -> None:
        kind = node["type"]
        ops = ["rename"] + {
            "fixed": ["resize"],
            "enum": ["add", "remove", "toggle_default"],
            "record": ["add_field", "drop_field", "rename_field", "toggle_default"],
        }[kind]
        op = self.pick(ops)
        if op == "rename":
            self.rename(node)
        elif op == "resize":
            node["size"] = max(1, node["size"] + self.pick([-1, 1]))
        elif kind == "enum" and op == "add":
            node["symbols"] = node["symbols"] + [s for s in SYMBOLS if s not in node["symbols"]][:1]
        elif kind == "enum" and op == "remove" and len(node["symbols"]) > 1:
            node["symbols"] = node["symbols"][1:]
            if node.get("default") not in node["symbols"]:
                node.pop("default", None)
        elif kind == "enum" and op == "toggle_default":
            if node.pop("default", None) is None:
                node["default"] = self.pick(node["symbols"])
        elif op == "add_field":
            ftype = self.fresh_type()
            field = {"name": self.ctx.fresh().lower(), "type": ftype}
            if self.draw(st.booleans()):
                field["default"] = default_for(ftype, self.ctx.defined)
            node["fields"] = node["fields"] + [field]
        elif kind == "record" and node["fields"] and op != "add_field":
            i = self.draw(st.integers(0, len(node["fields"]) - 1))
            fields = [dict(f) for f in node["fields"]]
            if op == "drop_field":
                fields.pop(i)
            elif op == "rename_field":
                old = fields[i]["name"]
                fields[i]["name"] = f"{old}_{self.ctx.fresh()}"
                if self.draw(st.booleans()):
                    fields[i]["aliases"] = [old]
            elif fields[i].pop("default", ...) is ...:
                try:
                    fields[i]["default"] = default_for(
                        fields[i]["type"], {**self.defs, **self.ctx.defined}
                    )
                except KeyError:
                    pass
            node["fields"] = fields


def _renamed(t: Any, renamed: dict[str, str]) -> Any:
    if isinstance(t, str):
        return renamed.get(t, t)
    if isinstance(t, list):
        return [_renamed(b, renamed) for b in t]
    node = dict(t)
    if node["type"] == "record":
        node["fields"] = [{**f, "type": _renamed(f["type"], renamed)} for f in node["fields"]]
    elif node["type"] in ("array", "map"):
        key = "items" if node["type"] == "array" else "values"
        node[key] = _renamed(node[key], renamed)
    return node


@st.composite
def evolved(draw: Any, writer: dict[str, Any]) -> Any:
    mutation = _Mutation(draw, rate=draw(st.sampled_from([0.03, 0.08, 0.15, 0.3])))
    return _renamed(mutation.type_(writer), mutation.renamed)


# ---- properties --------------------------------------------------------------------------------

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@SETTINGS
@given(writer_schemas())
def test_every_schema_is_compatible_with_itself_in_every_mode(schema: dict[str, Any]) -> None:
    for mode in CompatibilityMode:
        assert check_compatibility(mode, [schema, json.dumps(schema)], schema) == []


@SETTINGS
@given(st.data(), writer_schemas())
def test_adding_an_optional_field_with_a_default_is_full_transitive_compatible(
    data: st.DataObject, schema: dict[str, Any]
) -> None:
    ctx = _Ctx("N")
    ctx.defined = dict(fastavro.parse_schema(schema)["__named_schemas"])
    ftype = gen_type(data.draw, ctx, 1)
    grown = {
        **schema,
        "fields": [
            *schema["fields"],
            {"name": "added", "type": ftype, "default": default_for(ftype, ctx.defined)},
        ],
    }
    assert check_compatibility(CompatibilityMode.FULL_TRANSITIVE, [schema, schema], grown) == []
    # ... and removing a field that had a default is FULL_TRANSITIVE compatible too.
    assert check_compatibility(CompatibilityMode.FULL_TRANSITIVE, [grown, grown], schema) == []


@SETTINGS
@given(st.data(), writer_schemas())
def test_encoder_writes_what_fastavro_reads_back(
    data: st.DataObject, schema: dict[str, Any]
) -> None:
    parsed = fastavro.parse_schema(schema)
    names = parsed["__named_schemas"]
    for value in [*witnesses(schema, names), draw_datum(data.draw, schema, names)]:
        out = bytearray()
        encode(schema, value, names, out)
        buf = io.BytesIO(bytes(out))
        assert fastavro.schemaless_reader(buf, parsed, None) == plain(value)
        assert buf.tell() == len(out)


@settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(st.data(), writer_schemas())
def test_checker_verdict_matches_fastavro_resolution(
    data: st.DataObject, writer: dict[str, Any]
) -> None:
    reader = data.draw(evolved(writer))
    try:
        parse(reader)
    except SchemaError:
        assume(
            False
        )  # the evolution broke the schema itself (dangling reference, duplicate branch)
    for r, w in ((reader, writer), (writer, reader)):
        found = check(r, w)
        same = "identical" if r == w else "evolved"
        event(
            f"{same}, compatible"
            if not found
            else "incompatible: " + ",".join(sorted({i.kind for i in found}))
        )
        failing = fastavro_failures(r, w)
        if found:
            assert failing, (
                f"checker found {[str(i) for i in found]} but fastavro read every witness"
            )
        else:
            assert not failing, f"checker found nothing but fastavro failed on {failing[:3]}"
            (w_parsed, names), (r_parsed, _) = parsed_with_names(w), parsed_with_names(r)
            out = bytearray()
            encode(w_parsed, draw_datum(data.draw, w_parsed, names), names, out)
            assert fastavro_reads(w_parsed, r_parsed, bytes(out))
