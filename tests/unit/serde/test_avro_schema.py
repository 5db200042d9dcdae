"""Schema files: named types referencing each other across files load in dependency order, and
each loaded type stands alone (what a registry stores and what fastavro needs to write)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pytest

from streamflow.errors import SchemaError
from streamflow.serde.avro.schema import load_schema_dir, load_schema_file, parse
from streamflow.serde.registry.compatibility import check

FIXTURES = Path(__file__).parent / "schemas"


def test_loads_every_named_type_across_files_whatever_the_file_order() -> None:
    # address.avsc sorts before country.avsc but references acme.Country.
    types = load_schema_dir(FIXTURES)
    assert set(types) == {
        "acme.Address",
        "acme.Country",
        "acme.Customer",
        "acme.shop.Order",
        "acme.shop.OrderId",
        "acme.shop.OrderLine",
        "acme.shop.Status",
    }


def test_each_loaded_type_is_self_contained_and_round_trips_through_fastavro() -> None:
    order = load_schema_dir(FIXTURES)["acme.shop.Order"]
    # Stand-alone: parse it again with no other types known, from its JSON text.
    assert isinstance(order, dict)
    text = json.dumps({k: v for k, v in order.items() if not k.startswith("__")})
    standalone = fastavro.parse_schema(json.loads(text))
    address = {"street": "Main St 1", "zip": "10115", "country": "DE"}
    datum = {
        "id": b"0123456789abcdef",
        "customer": {
            "id": 7,
            "home": address,
            "work": None,
            "referrer": {"id": 1, "home": address, "work": address, "referrer": None},
        },
        "lines": [{"sku": "A-1", "quantity": 2, "price_cents": 1999}],
        "status": "PAID",
        "placed_at": 1_700_000_000_000,
        "attributes": {"gift": "yes"},
    }
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, standalone, datum)
    buf.seek(0)
    back = fastavro.schemaless_reader(buf, standalone, None)
    assert back["customer"] == datum["customer"] and back["lines"] == datum["lines"]


def test_load_is_cached_until_a_file_changes(tmp_path: Path) -> None:
    (tmp_path / "a.avsc").write_text('{"type": "enum", "name": "E", "symbols": ["A"]}')
    first = load_schema_dir(tmp_path)
    assert load_schema_dir(tmp_path)["E"] is first["E"]  # parsed once
    (tmp_path / "a.avsc").write_text('{"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}')
    assert load_schema_dir(tmp_path)["E"]["symbols"] == ["A", "B", "C"]  # type: ignore[index]


def test_unresolvable_reference_names_the_file_and_the_type(tmp_path: Path) -> None:
    (tmp_path / "a.avsc").write_text(
        '{"type": "record", "name": "A", "fields": [{"name": "b", "type": "Missing"}]}'
    )
    with pytest.raises(SchemaError, match=r"a\.avsc.*Missing"):
        load_schema_dir(tmp_path)


def test_two_files_defining_one_name_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.avsc").write_text('{"type": "enum", "name": "E", "symbols": ["A"]}')
    (tmp_path / "b.avsc").write_text('{"type": "enum", "name": "E", "symbols": ["B"]}')
    with pytest.raises(SchemaError, match="redefines"):
        load_schema_dir(tmp_path)


def test_bad_json_and_missing_directory_name_the_path(tmp_path: Path) -> None:
    (tmp_path / "broken.avsc").write_text("{")
    with pytest.raises(SchemaError, match=r"broken\.avsc"):
        load_schema_dir(tmp_path)
    with pytest.raises(SchemaError, match="not found"):
        load_schema_dir(tmp_path / "nope")
    with pytest.raises(SchemaError, match="cannot read"):
        load_schema_file(tmp_path / "nope.avsc")


def test_a_file_may_reference_the_directory_types(tmp_path: Path) -> None:
    new_customer = tmp_path / "customer_v2.avsc"
    new_customer.write_text(
        json.dumps(
            {
                "type": "record",
                "name": "Customer",
                "namespace": "acme",
                "fields": [
                    {"name": "id", "type": "long"},
                    {"name": "home", "type": "Address"},
                    {"name": "email", "type": ["null", "string"], "default": None},
                ],
            }
        )
    )
    types = load_schema_dir(FIXTURES)
    candidate = load_schema_file(new_customer, types)
    assert check(candidate, types["acme.Customer"]) == []
    with pytest.raises(SchemaError, match="Address"):
        load_schema_file(new_customer)  # without the directory the reference cannot resolve


def test_evolving_a_type_used_by_another_file_is_checked_where_it_is_used(tmp_path: Path) -> None:
    for name in ("address", "customer", "order"):
        (tmp_path / f"{name}.avsc").write_text((FIXTURES / f"{name}.avsc").read_text())
    (tmp_path / "country.avsc").write_text(  # OTHER and the default removed: old data unreadable
        '{"type": "enum", "name": "Country", "namespace": "acme", "symbols": ["DE", "FR", "US"]}'
    )
    old, new = load_schema_dir(FIXTURES), load_schema_dir(tmp_path)
    found = check(new["acme.shop.Order"], old["acme.shop.Order"])
    assert [(i.kind, i.path) for i in found] == [
        ("MISSING_ENUM_SYMBOLS", "/fields/customer/fields/home/fields/country/symbols")
    ]


def test_parse_keeps_fastavro_parsed_schemas_as_they_are() -> None:
    parsed = fastavro.parse_schema({"type": "record", "name": "R", "fields": []})
    assert parse(parsed) is parsed
    assert parse("long") == "long"


def test_a_type_defined_inline_elsewhere_is_defined_once_in_a_self_contained_schema(
    tmp_path: Path,
) -> None:
    # p.avsc defines X inline inside P; q.avsc uses X by name before P: X must not appear twice.
    (tmp_path / "p.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "P",
                "fields": [{"name": "x", "type": {"type": "enum", "name": "X", "symbols": ["A"]}}],
            }
        )
    )
    (tmp_path / "q.avsc").write_text(
        json.dumps(
            {
                "type": "record",
                "name": "Q",
                "fields": [{"name": "x", "type": "X"}, {"name": "p", "type": "P"}],
            }
        )
    )
    q = load_schema_dir(tmp_path)["Q"]
    assert isinstance(q, dict)
    text = json.dumps({k: v for k, v in q.items() if not k.startswith("__")})
    assert text.count('"enum"') == 1
    assert json.loads(text)["fields"][1]["type"]["fields"][0]["type"] == "X"
