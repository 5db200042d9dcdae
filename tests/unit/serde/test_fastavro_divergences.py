"""Where fastavro's schema resolution (1.13) departs from the Avro 1.11 specification.

Each test pins both sides: what the checker says (the specification, as registries apply it) and
what fastavro actually does. If a fastavro upgrade changes its behaviour, the test fails and this
list, and the streamflow serde that relies on fastavro, get reviewed.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest

from streamflow.errors import SchemaError
from streamflow.serde.registry.compatibility import check


def read(writer: Any, reader: Any, datum: Any) -> Any:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(writer), datum)
    buf.seek(0)
    return fastavro.schemaless_reader(
        buf, fastavro.parse_schema(writer), fastavro.parse_schema(reader)
    )


def test_bytes_promoted_to_string_fails_in_fastavro_on_non_utf8_bytes() -> None:
    assert check("string", "bytes") == []  # the spec promotes bytes to string
    assert read("bytes", "string", b"ok") == "ok"
    with pytest.raises(UnicodeDecodeError):
        read("bytes", "string", b"\xff")


def test_fastavro_resolves_to_the_first_promotable_union_branch_not_the_exact_one() -> None:
    # Java Avro picks the branch of the writer's own type; fastavro takes the first that matches.
    assert check(["string", "bytes"], "bytes") == []
    assert (
        read("bytes", ["string", "bytes"], b"ok") == "ok"
    )  # a str, read through the string branch
    with pytest.raises(UnicodeDecodeError):
        read("bytes", ["string", "bytes"], b"\xff")
    assert read("int", ["float", "int"], 3) == 3.0  # a float, although the reader has int


@pytest.mark.parametrize(
    "reader",
    [
        {"type": "record", "name": "X", "fields": []},
        {"type": "enum", "name": "X", "symbols": ["A"]},
    ],
)
def test_fastavro_reads_a_fixed_as_any_named_type_of_the_same_name(reader: Any) -> None:
    writer = {"type": "fixed", "name": "X", "size": 2}
    assert [i.kind for i in check(reader, writer)] == ["TYPE_MISMATCH"]
    assert read(writer, reader, b"ab") == b"ab"  # silently returns the raw bytes


def test_other_named_kinds_of_the_same_name_crash_fastavro_with_key_error() -> None:
    writer = {"type": "enum", "name": "X", "symbols": ["A"]}
    reader = {"type": "fixed", "name": "X", "size": 1}
    assert [i.kind for i in check(reader, writer)] == ["TYPE_MISMATCH"]
    with pytest.raises(KeyError):  # rather than SchemaResolutionError
        read(writer, reader, "A")


def test_fastavro_matches_aliases_by_unqualified_name_across_namespaces() -> None:
    # The reader's alias "Old" is relative to its namespace: it names ns.Old, not other.Old.
    writer = {"type": "record", "name": "Old", "namespace": "other", "fields": []}
    reader = {"type": "record", "name": "New", "namespace": "ns", "aliases": ["Old"], "fields": []}
    assert [i.kind for i in check(reader, writer)] == ["NAME_MISMATCH"]
    assert read(writer, reader, {}) == {}
    # Same alias, writer in the reader's namespace: both agree.
    assert check(reader, {**writer, "namespace": "ns"}) == []


def test_fastavro_crashes_when_a_reader_field_matches_two_writer_fields() -> None:
    # Reader field a (alias b) matches writer field a by name; writer field b is then skipped.
    writer = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
    }
    reader = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "a", "type": "int", "aliases": ["b"]}],
    }
    assert check(reader, writer) == []
    with pytest.raises(KeyError):
        read(writer, reader, {"a": 1, "b": 2})


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        (
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "u", "type": ["null", "int"], "default": 1}],
            },
            "first branch",
        ),
        (
            {
                "type": "record",
                "name": "R",
                "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}],
            },
            "twice",
        ),
        (["int", "int"], "same type"),
    ],
)
def test_fastavro_parses_schemas_the_spec_forbids_and_streamflow_refuses(
    schema: Any, why: str
) -> None:
    fastavro.parse_schema(schema)
    with pytest.raises(SchemaError, match=why):
        check(schema, schema)
