"""The corpus: one case per schema-resolution rule of the Avro 1.11 specification, both directions.

Each case is (reader, writer, expected kinds). The expectation is written from the specification
(and, where it is silent, from what registries report), never from a run of the checker.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from avro_witness import fastavro_failures

from streamflow.errors import SchemaError
from streamflow.serde.registry.compatibility import Incompatibility, IncompatibilityKind, check
from tests.avro_schemas import NODE

TYPE = IncompatibilityKind.TYPE_MISMATCH
NAME = IncompatibilityKind.NAME_MISMATCH
SIZE = IncompatibilityKind.FIXED_SIZE_MISMATCH
SYMBOLS = IncompatibilityKind.MISSING_ENUM_SYMBOLS
BRANCH = IncompatibilityKind.MISSING_UNION_BRANCH
DEFAULT = IncompatibilityKind.READER_FIELD_MISSING_DEFAULT_VALUE
OK: list[IncompatibilityKind] = []
_NO_DEFAULT = object()


def field(
    name: str, type_: Any, default: Any = _NO_DEFAULT, aliases: list[str] | None = None
) -> dict[str, Any]:
    f: dict[str, Any] = {"name": name, "type": type_}
    if default is not _NO_DEFAULT:
        f["default"] = default
    if aliases:
        f["aliases"] = aliases
    return f


def record(
    name: str,
    *fields: dict[str, Any],
    namespace: str | None = None,
    aliases: list[str] | None = None,
) -> dict[str, Any]:
    r: dict[str, Any] = {"type": "record", "name": name, "fields": list(fields)}
    if namespace is not None:
        r["namespace"] = namespace
    if aliases:
        r["aliases"] = aliases
    return r


def enum(
    name: str, symbols: list[str], default: str | None = None, aliases: list[str] | None = None
) -> dict[str, Any]:
    e: dict[str, Any] = {"type": "enum", "name": name, "symbols": symbols}
    if default is not None:
        e["default"] = default
    if aliases:
        e["aliases"] = aliases
    return e


def fixed(name: str, size: int) -> dict[str, Any]:
    return {"type": "fixed", "name": name, "size": size}


def array(items: Any) -> dict[str, Any]:
    return {"type": "array", "items": items}


def map_(values: Any) -> dict[str, Any]:
    return {"type": "map", "values": values}


def wrap(type_: Any, *extra: dict[str, Any]) -> dict[str, Any]:
    """A record R with one field `f` of the given type: puts any type at a known path /fields/f."""
    return record("R", field("f", type_), *extra)


PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
PROMOTIONS = [
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
]
NOT_PROMOTIONS = [
    ("long", "int"),
    ("float", "int"),
    ("double", "int"),
    ("float", "long"),
    ("double", "long"),
    ("double", "float"),
    ("boolean", "int"),
    ("int", "boolean"),
    ("null", "string"),
    ("string", "int"),
    ("int", "string"),
    ("bytes", "int"),
    ("string", "null"),
    ("boolean", "string"),
]


@pytest.mark.parametrize("type_", PRIMITIVES)
def test_every_primitive_reads_itself(type_: str) -> None:
    assert check(type_, type_) == []
    assert check(wrap(type_), wrap(type_)) == []


@pytest.mark.parametrize(("writer", "reader"), PROMOTIONS)
def test_spec_promotions_are_compatible_and_only_one_way_for_numbers(
    writer: str, reader: str
) -> None:
    assert check(reader, writer) == []
    assert fastavro_failures(reader, writer) == []
    reverse = check(writer, reader)
    if {writer, reader} == {"string", "bytes"}:
        assert reverse == []  # string and bytes promote both ways
    else:
        assert [i.kind for i in reverse] == [TYPE]


@pytest.mark.parametrize(("writer", "reader"), NOT_PROMOTIONS)
def test_types_without_a_promotion_are_a_type_mismatch(writer: str, reader: str) -> None:
    found = check(wrap(reader), wrap(writer))
    assert [(i.kind, i.path) for i in found] == [(TYPE, "/fields/f")]
    assert fastavro_failures(wrap(reader), wrap(writer))


ADDRESS = record("Address", field("street", "string"), field("zip", "string"))
ADDRESS_PLUS_CITY = record(
    "Address", field("street", "string"), field("zip", "string"), field("city", "string")
)
COLOR = enum("Color", ["RED", "GREEN", "BLUE"])
NODE_V2 = record(
    "Node",
    field("value", "long"),
    field("next", ["null", "Node"], None),
    field("label", "string", ""),
)
NODE_BAD = record(
    "Node", field("value", "int"), field("next", ["null", "Node"], None), field("label", "string")
)

# (id, reader, writer, expected kinds in order, expected path of the first one or None)
CASES: list[tuple[str, Any, Any, list[IncompatibilityKind], str | None]] = [
    # --- records: fields matched by name; extra writer fields skipped; missing ones need defaults
    ("record-identical", ADDRESS, ADDRESS, OK, None),
    (
        "record-reader-adds-field-with-default",
        record(
            "Address",
            field("street", "string"),
            field("zip", "string"),
            field("city", "string", ""),
        ),
        ADDRESS,
        OK,
        None,
    ),
    (
        "record-reader-adds-field-without-default",
        ADDRESS_PLUS_CITY,
        ADDRESS,
        [DEFAULT],
        "/fields/city",
    ),
    ("record-reader-drops-field", record("Address", field("street", "string")), ADDRESS, OK, None),
    ("record-writer-adds-field-without-default", ADDRESS, ADDRESS_PLUS_CITY, OK, None),
    (
        "record-field-order-changed",
        record("Address", field("zip", "string"), field("street", "string")),
        ADDRESS,
        OK,
        None,
    ),
    ("record-field-promoted", wrap("long"), wrap("int"), OK, None),
    ("record-field-narrowed", wrap("int"), wrap("long"), [TYPE], "/fields/f"),
    (
        "record-field-renamed-with-reader-alias",
        record("Address", field("street", "string"), field("postcode", "string", aliases=["zip"])),
        ADDRESS,
        OK,
        None,
    ),
    (
        "record-field-renamed-without-alias",
        record("Address", field("street", "string"), field("postcode", "string")),
        ADDRESS,
        [DEFAULT],
        "/fields/postcode",
    ),
    (
        "record-field-renamed-without-alias-but-default",
        record("Address", field("street", "string"), field("postcode", "string", "")),
        ADDRESS,
        OK,
        None,
    ),
    (
        "record-writer-alias-is-not-used",  # aliases are the reader's tool, not the writer's
        ADDRESS,
        record("Address", field("street", "string"), field("postcode", "string", aliases=["zip"])),
        [DEFAULT],
        "/fields/zip",
    ),
    (
        "record-null-default-in-optional-field",
        record(
            "Address",
            field("street", "string"),
            field("zip", "string"),
            field("note", ["null", "string"], None),
        ),
        ADDRESS,
        OK,
        None,
    ),
    ("record-empty-records", record("Empty"), record("Empty"), OK, None),
    (
        "record-two-missing-fields-two-reasons",
        record("Address", field("street", "string"), field("a", "int"), field("b", "int")),
        ADDRESS,
        [DEFAULT, DEFAULT],
        "/fields/a",
    ),
    (
        "record-name-mismatch",
        record("Location", field("street", "string")),
        ADDRESS,
        [NAME],
        "/name",
    ),
    (
        "record-name-via-reader-alias",
        record("Location", field("street", "string"), aliases=["Address"]),
        ADDRESS,
        OK,
        None,
    ),
    (
        "record-name-via-qualified-reader-alias",
        record("Location", field("street", "string"), namespace="new", aliases=["old.Address"]),
        record("Address", field("street", "string"), namespace="old"),
        OK,
        None,
    ),
    (
        "record-relative-alias-is-in-readers-namespace",
        record("Location", field("street", "string"), namespace="new", aliases=["Address"]),
        record("Address", field("street", "string"), namespace="old"),
        [NAME],
        "/name",
    ),
    (
        "record-namespace-change-same-unqualified-name",
        record("Address", field("street", "string"), namespace="b"),
        record("Address", field("street", "string"), namespace="a"),
        OK,
        None,
    ),
    ("record-vs-primitive", "string", ADDRESS, [TYPE], "/"),
    ("primitive-vs-record", ADDRESS, "string", [TYPE], "/"),
    ("record-vs-map", map_("string"), ADDRESS, [TYPE], "/"),
    (
        "nested-record-missing-default",
        record("Person", field("address", ADDRESS_PLUS_CITY)),
        record("Person", field("address", ADDRESS)),
        [DEFAULT],
        "/fields/address/fields/city",
    ),
    (
        "nested-record-name-mismatch",
        record("Person", field("address", record("Location", field("street", "string")))),
        record("Person", field("address", ADDRESS)),
        [NAME],
        "/fields/address/name",
    ),
    (
        "nested-record-compatible-evolution",
        record(
            "Person",
            field("address", record("Address", field("zip", "bytes"), field("n", "int", 0))),
        ),
        record("Person", field("address", ADDRESS)),
        OK,
        None,
    ),
    # --- enums: by name; writer symbols missing from the reader need a reader default
    ("enum-identical", wrap(COLOR), wrap(COLOR), OK, None),
    (
        "enum-reader-adds-symbol",
        wrap(enum("Color", ["RED", "GREEN", "BLUE", "PINK"])),
        wrap(COLOR),
        OK,
        None,
    ),
    (
        "enum-reader-removes-symbol",
        wrap(enum("Color", ["RED", "GREEN"])),
        wrap(COLOR),
        [SYMBOLS],
        "/fields/f/symbols",
    ),
    (
        "enum-reader-removes-symbol-with-default",
        wrap(enum("Color", ["RED", "GREEN"], default="RED")),
        wrap(COLOR),
        OK,
        None,
    ),
    (
        "enum-writer-default-does-not-help",
        wrap(enum("Color", ["RED", "GREEN"])),
        wrap(enum("Color", ["RED", "GREEN", "BLUE"], default="RED")),
        [SYMBOLS],
        "/fields/f/symbols",
    ),
    (
        "enum-symbols-reordered",
        wrap(enum("Color", ["BLUE", "RED", "GREEN"])),
        wrap(COLOR),
        OK,
        None,
    ),
    (
        "enum-name-mismatch",
        wrap(enum("Colour", ["RED", "GREEN", "BLUE"])),
        wrap(COLOR),
        [NAME],
        "/fields/f/name",
    ),
    (
        "enum-name-via-alias",
        wrap(enum("Colour", ["RED", "GREEN", "BLUE"], aliases=["Color"])),
        wrap(COLOR),
        OK,
        None,
    ),
    ("enum-vs-string", wrap("string"), wrap(COLOR), [TYPE], "/fields/f"),
    ("string-vs-enum", wrap(COLOR), wrap("string"), [TYPE], "/fields/f"),
    # --- fixed: by name and size
    ("fixed-identical", wrap(fixed("Hash", 16)), wrap(fixed("Hash", 16)), OK, None),
    (
        "fixed-size-mismatch",
        wrap(fixed("Hash", 32)),
        wrap(fixed("Hash", 16)),
        [SIZE],
        "/fields/f/size",
    ),
    (
        "fixed-size-mismatch-reverse",
        wrap(fixed("Hash", 16)),
        wrap(fixed("Hash", 32)),
        [SIZE],
        "/fields/f/size",
    ),
    (
        "fixed-name-mismatch",
        wrap(fixed("Digest", 16)),
        wrap(fixed("Hash", 16)),
        [NAME],
        "/fields/f/name",
    ),
    ("fixed-vs-bytes", wrap("bytes"), wrap(fixed("Hash", 16)), [TYPE], "/fields/f"),
    ("bytes-vs-fixed", wrap(fixed("Hash", 16)), wrap("bytes"), [TYPE], "/fields/f"),
    # --- arrays and maps recurse on items and values
    ("array-items-promoted", wrap(array("long")), wrap(array("int")), OK, None),
    ("array-items-narrowed", wrap(array("int")), wrap(array("long")), [TYPE], "/fields/f/items"),
    ("array-vs-map", wrap(map_("int")), wrap(array("int")), [TYPE], "/fields/f"),
    ("map-values-promoted", wrap(map_("double")), wrap(map_("int")), OK, None),
    ("map-values-mismatch", wrap(map_("int")), wrap(map_("string")), [TYPE], "/fields/f/values"),
    (
        "array-of-records-missing-default",
        wrap(array(ADDRESS_PLUS_CITY)),
        wrap(array(ADDRESS)),
        [DEFAULT],
        "/fields/f/items/fields/city",
    ),
    (
        "map-of-enums-missing-symbols",
        wrap(map_(enum("Color", ["RED"]))),
        wrap(map_(COLOR)),
        [SYMBOLS],
        "/fields/f/values/symbols",
    ),
    ("array-vs-its-item", wrap("int"), wrap(array("int")), [TYPE], "/fields/f"),
    ("nested-arrays", wrap(array(array("double"))), wrap(array(array("float"))), OK, None),
    # --- unions
    ("reader-union-has-writer-type", wrap(["null", "int"]), wrap("int"), OK, None),
    ("reader-union-promotes-writer-type", wrap(["null", "long"]), wrap("int"), OK, None),
    (
        "reader-union-lacks-writer-type",
        wrap(["null", "string"]),
        wrap("int"),
        [BRANCH],
        "/fields/f",
    ),
    ("writer-union-vs-reader-single-type", wrap("int"), wrap(["null", "int"]), [TYPE], "/fields/f"),
    ("same-union", wrap(["null", "int"]), wrap(["null", "int"]), OK, None),
    ("reader-union-adds-branch", wrap(["null", "int", "string"]), wrap(["null", "int"]), OK, None),
    (
        "reader-union-removes-branch",
        wrap(["null", "int"]),
        wrap(["null", "int", "string"]),
        [BRANCH],
        "/fields/f",
    ),
    ("union-branches-promoted", wrap(["null", "long"]), wrap(["null", "int"]), OK, None),
    ("union-reordered", wrap(["string", "int"]), wrap(["int", "string"]), OK, None),
    ("single-branch-writer-union", wrap("int"), wrap(["int"]), OK, None),
    ("single-branch-reader-union", wrap(["int"]), wrap("int"), OK, None),
    ("writer-union-all-promotable", wrap("long"), wrap(["int", "long"]), OK, None),
    (
        "writer-union-one-branch-unreadable",
        wrap("long"),
        wrap(["int", "double"]),
        [TYPE],
        "/fields/f",
    ),
    (
        "union-no-common-branch",
        wrap(["null", "string"]),
        wrap(["null", "int"]),
        [BRANCH],
        "/fields/f",
    ),
    (
        "reader-union-record-branch-resolved-recursively",
        wrap(["null", ADDRESS_PLUS_CITY]),
        wrap(ADDRESS),
        [DEFAULT],
        "/fields/f/fields/city",
    ),
    (
        "reader-union-record-of-another-name",
        wrap(["null", record("Location", field("street", "string"))]),
        wrap(ADDRESS),
        [BRANCH],
        "/fields/f",
    ),
    (
        "union-of-records-evolved-compatibly",
        wrap(["null", record("Address", field("street", "string"), field("city", "string", "?"))]),
        wrap(["null", ADDRESS]),
        OK,
        None,
    ),
    (
        "reader-union-enum-branch-lacks-symbols",
        wrap(["null", enum("Color", ["RED"])]),
        wrap(COLOR),
        [SYMBOLS],
        "/fields/f/symbols",
    ),
    ("reader-union-prefers-exact-bytes", wrap(["string", "bytes"]), wrap("bytes"), OK, None),
    ("reader-union-string-read-as-bytes", wrap(["null", "bytes"]), wrap("string"), OK, None),
    (
        "reader-union-array-promotes-items",
        wrap(["null", array("long")]),
        wrap(array("int")),
        OK,
        None,
    ),
    (
        "reader-union-map-vs-writer-array",
        wrap(["null", map_("int")]),
        wrap(array("int")),
        [BRANCH],
        "/fields/f",
    ),
    (
        "optional-field-becomes-required",
        wrap("string"),
        wrap(["null", "string"]),
        [TYPE],
        "/fields/f",
    ),
    ("required-field-becomes-optional", wrap(["null", "string"]), wrap("string"), OK, None),
    # --- named references, namespaces and recursion
    ("recursive-identical", NODE, NODE, OK, None),
    ("recursive-compatible-evolution", NODE_V2, NODE, OK, None),
    ("recursive-missing-default-reported-once", NODE_BAD, NODE, [DEFAULT], "/fields/label"),
    (
        "mutually-recursive",
        record("A", field("b", record("B", field("a", ["null", "A"], None))), field("n", "int", 1)),
        record("A", field("b", record("B", field("a", ["null", "A"], None)))),
        OK,
        None,
    ),
    (
        "reused-named-type-reported-at-first-use",
        record("Person", field("home", ADDRESS_PLUS_CITY), field("work", "Address")),
        record("Person", field("home", ADDRESS), field("work", "Address")),
        [DEFAULT],
        "/fields/home/fields/city",
    ),
    (
        "reference-by-short-name-in-namespace",
        record(
            "Person",
            field("home", ADDRESS),
            field("work", ["null", "Address"], None),
            namespace="acme",
        ),
        record(
            "Person",
            field("home", ADDRESS),
            field("work", ["null", "acme.Address"], None),
            namespace="acme",
        ),
        OK,
        None,
    ),
    (
        "nested-type-inherits-namespace-other-writer-namespace",
        record("Person", field("home", ADDRESS), namespace="b"),
        record("Person", field("home", ADDRESS), namespace="a"),
        OK,
        None,
    ),
    (
        "referenced-type-changed-incompatibly",
        record(
            "Person",
            field("home", record("Address", field("street", "int"))),
            field("work", "Address"),
        ),
        record("Person", field("home", ADDRESS), field("work", "Address")),
        [TYPE],
        "/fields/home/fields/street",
    ),
    # --- logical types resolve as their underlying type
    ("logical-date-as-int", wrap("int"), wrap({"type": "int", "logicalType": "date"}), OK, None),
    (
        "logical-timestamp-as-int",
        wrap("int"),
        wrap({"type": "long", "logicalType": "timestamp-millis"}),
        [TYPE],
        "/fields/f",
    ),
    (
        "logical-millis-to-micros-is-just-long",
        wrap({"type": "long", "logicalType": "timestamp-micros"}),
        wrap({"type": "long", "logicalType": "timestamp-millis"}),
        OK,
        None,
    ),
]


@pytest.mark.parametrize(
    ("reader", "writer", "kinds", "path"), [pytest.param(*c[1:], id=c[0]) for c in CASES]
)
def test_resolution_rule(
    reader: Any, writer: Any, kinds: list[IncompatibilityKind], path: str | None
) -> None:
    found = check(reader, writer)
    assert [i.kind for i in found] == kinds, [str(i) for i in found]
    if path is not None:
        assert found[0].path == path
    for problem in found:
        assert isinstance(problem, Incompatibility)
        assert problem.message and problem.path.startswith("/")


# Cases where fastavro's resolution departs from the specification (test_fastavro_divergences.py).
FASTAVRO_DIFFERS = {"record-relative-alias-is-in-readers-namespace"}


@pytest.mark.parametrize(
    ("reader", "writer", "kinds"),
    [pytest.param(*c[1:4], id=c[0]) for c in CASES if c[0] not in FASTAVRO_DIFFERS],
)
def test_corpus_verdict_matches_fastavro_resolution(
    reader: Any, writer: Any, kinds: list[IncompatibilityKind]
) -> None:
    """Independent truth for every case: fastavro reading data that takes every union branch and
    enum symbol fails for some datum exactly when the corpus expects an incompatibility."""
    failing = fastavro_failures(reader, writer)
    assert bool(failing) == bool(kinds), failing[:3]


def test_messages_name_the_field_and_the_rule() -> None:
    [problem] = check(record("P", field("a", ADDRESS_PLUS_CITY)), record("P", field("a", ADDRESS)))
    assert "'city'" in problem.message and "default" in problem.message
    [problem] = check(wrap("int"), wrap("string"))
    assert (
        "'string'" in problem.message
        and "'int'" in problem.message
        and "promotion" in problem.message
    )


def test_accepts_json_text_dicts_and_fastavro_parsed_schemas_alike() -> None:
    from fastavro import parse_schema

    reader, writer = ADDRESS_PLUS_CITY, ADDRESS
    expected = [i.kind for i in check(reader, writer)]
    assert [i.kind for i in check(json.dumps(reader), json.dumps(writer))] == expected
    assert [i.kind for i in check(parse_schema(reader), parse_schema(writer))] == expected
    assert [i.kind for i in check(json.dumps(reader).encode(), parse_schema(writer))] == expected
    assert check('"int"', "int") == []


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ('{"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]}', "Nope"),
        ('{"type": "fixed", "name": "F"}', "size"),
        (json.dumps(record("R", field("a", "int"), field("a", "long"))), "twice"),
        (json.dumps(wrap(["int", "int"])), "same type"),
        (json.dumps(record("R", field("a", ["null", "int"], 3))), "first branch"),
        (json.dumps(record("R", field("a", "int", "x"))), "int"),
        (json.dumps(enum("E", ["A", "B"], default="C")), "enum"),
    ],
)
def test_bad_schemas_raise_schema_error_naming_the_schema(schema: str, fragment: str) -> None:
    with pytest.raises(SchemaError) as err:
        check(schema, '"int"')
    assert "reader schema" in str(err.value) and fragment in str(err.value)
    with pytest.raises(SchemaError, match="writer schema"):
        check('"int"', schema)
