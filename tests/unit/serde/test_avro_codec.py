"""The compiled codec against fastavro, the independent truth, on random schemas and values.

For every schema the compiler accepts: it writes the very bytes fastavro's ``schemaless_writer``
writes (so the choice of union branch is fastavro's too), and it reads back what fastavro's
``schemaless_reader`` reads, from fastavro's bytes and from bytes that take every union branch
(the witnesses of avro_witness.py).
"""

from __future__ import annotations

import io
import struct
from typing import Any

import fastavro
import pytest
from avro_witness import draw_datum, encode, plain, witnesses
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_compatibility_fastavro import writer_schemas

from streamflow.serde.avro.codec import CompiledCodec, compile_codec
from tests.avro_schemas import NODE

HEADER = b"\x00\x00\x00\x00\x2a"
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class Failed(Exception):
    pass


def compiled(schema: Any, classes: dict[str, type] | None = None) -> CompiledCodec | None:
    codec = compile_codec(schema, classes)
    if codec is not None:
        codec.env["_H"] = HEADER
        codec.env["_other"] = lambda b: ("other", b)
        codec.env["_enc_fail"] = lambda v, e: Failed(f"encode: {e!r}")
        codec.env["_dec_fail"] = lambda b, e: Failed(f"decode: {e!r}")
    return codec


def fastavro_bytes(parsed: Any, value: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, value)
    return buf.getvalue()


def fastavro_value(parsed: Any, body: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(body), parsed, None)


@SETTINGS
@given(st.data(), writer_schemas())
def test_compiled_codec_writes_and_reads_exactly_what_fastavro_does(
    data: st.DataObject, schema: dict[str, Any]
) -> None:
    parsed = fastavro.parse_schema(schema)
    codec = compiled(parsed)
    if codec is None:
        event("left to fastavro")
        return
    names = parsed["__named_schemas"]
    datum = st.composite(lambda draw: draw_datum(draw, parsed, names))()
    values = [plain(data.draw(datum)) for _ in range(3)]
    for value in values:
        try:
            expected = fastavro_bytes(parsed, value)
        except Exception:  # noqa: BLE001  fastavro refuses it (a value fitting no union branch)
            with pytest.raises(Failed):
                codec.encode(value)
            continue
        assert codec.encode(value) == HEADER + expected
        assert codec.decode(HEADER + expected) == fastavro_value(parsed, expected)
    for witness in witnesses(parsed, names):
        out = bytearray()
        encode(parsed, witness, names, out)
        assert codec.decode(HEADER + bytes(out)) == fastavro_value(parsed, bytes(out))


TEN_FIELDS = {
    "type": "record",
    "name": "Order",
    "namespace": "com.acme",
    "fields": [
        {"name": "order_id", "type": "string"},
        {"name": "amount", "type": "long"},
        {"name": "quantity", "type": "int"},
        {"name": "price", "type": "double"},
        {"name": "ratio", "type": "float"},
        {
            "name": "currency",
            "type": {"type": "enum", "name": "Currency", "symbols": ["EUR", "USD", "GBP"]},
        },
        {"name": "paid", "type": "boolean"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "blob", "type": "bytes"},
        {"name": "tags", "type": {"type": "map", "values": {"type": "array", "items": "long"}}},
    ],
}

ten_field_values = st.fixed_dictionaries(
    {
        "order_id": st.text(),
        "amount": st.integers(-(2**63), 2**63 - 1),
        "quantity": st.integers(-(2**31), 2**31 - 1),
        "price": st.floats(allow_nan=False),
        "ratio": st.floats(width=32, allow_nan=False),
        "currency": st.sampled_from(["EUR", "USD", "GBP"]),
        "paid": st.booleans(),
        "note": st.none() | st.text(max_size=300),
        "blob": st.binary(max_size=20_000),
        "tags": st.dictionaries(
            st.text(max_size=3), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=70), max_size=3
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(ten_field_values)
def test_every_long_and_length_round_trips_including_multi_byte_varints(
    value: dict[str, Any],
) -> None:
    parsed = fastavro.parse_schema(TEN_FIELDS)
    codec = compiled(parsed)
    assert codec is not None
    wire = codec.encode(value)
    assert wire == HEADER + fastavro_bytes(parsed, value)
    assert codec.decode(wire) == value


def test_a_missing_field_with_a_default_is_written_as_the_default_like_fastavro() -> None:
    parsed = fastavro.parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "a", "type": "int", "default": 7},
                {"name": "b", "type": ["null", "string"]},
            ],
        }
    )
    codec = compiled(parsed)
    assert codec is not None
    assert codec.encode({}) == HEADER + fastavro_bytes(parsed, {})
    assert codec.decode(codec.encode({})) == {"a": 7, "b": None}


def test_float_in_a_union_with_a_later_double_is_written_as_double_like_fastavro() -> None:
    parsed = fastavro.parse_schema(["null", "float", "string", "double"])
    codec = compiled(parsed)
    assert codec is not None
    for value in (0.1, 3, None, "x"):
        assert codec.encode(value) == HEADER + fastavro_bytes(parsed, value)


def test_a_union_index_past_63_takes_a_two_byte_varint() -> None:
    branches = ["null"] + [{"type": "fixed", "name": f"F{i}", "size": i + 1} for i in range(70)]
    parsed = fastavro.parse_schema(branches)
    codec = compiled(parsed)
    assert codec is not None
    value = b"x" * 70  # fits F69 only: branch 70
    assert codec.encode(value) == HEADER + fastavro_bytes(parsed, value)
    assert codec.decode(codec.encode(value)) == value


def test_logical_types_convert_as_fastavro_converts_them() -> None:
    import datetime
    import decimal
    import uuid

    parsed = fastavro.parse_schema(
        {
            "type": "record",
            "name": "L",
            "fields": [
                {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
                {"name": "day", "type": {"type": "int", "logicalType": "date"}},
                {
                    "name": "price",
                    "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
                },
                {"name": "id", "type": {"type": "string", "logicalType": "uuid"}},
            ],
        }
    )
    codec = compiled(parsed)
    assert codec is not None
    value = {
        "ts": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
        "day": datetime.date(2024, 5, 1),
        "price": decimal.Decimal("12.34"),
        "id": uuid.UUID(int=42),
    }
    wire = codec.encode(value)
    assert wire == HEADER + fastavro_bytes(parsed, value)
    assert codec.decode(wire) == fastavro_value(parsed, wire[5:]) == value


@pytest.mark.parametrize(
    "schema",
    [
        [
            {"type": "record", "name": "A", "fields": []},
            {"type": "record", "name": "B", "fields": []},
        ],
        [{"type": "record", "name": "A", "fields": []}, {"type": "map", "values": "int"}],
        [{"type": "array", "items": "int"}, {"type": "array", "items": "string"}],
        ["null", {"type": "long", "logicalType": "timestamp-millis"}],
    ],
)
def test_unions_that_need_fastavros_deep_validation_are_left_to_fastavro(schema: Any) -> None:
    assert compile_codec(fastavro.parse_schema(schema)) is None


def test_recursive_records_compile() -> None:
    parsed = fastavro.parse_schema(NODE)
    codec = compiled(parsed)
    assert codec is not None
    value = {"value": 1, "next": {"value": 2, "next": {"value": 3, "next": None}}}
    assert codec.encode(value) == HEADER + fastavro_bytes(parsed, value)
    assert codec.decode(codec.encode(value)) == value


def test_another_header_goes_to_the_slow_path_untouched() -> None:
    codec = compiled(fastavro.parse_schema("string"))
    assert codec is not None
    assert codec.decode(b"\x00\x00\x00\x00\x07\x02a") == ("other", b"\x00\x00\x00\x00\x07\x02a")


@pytest.mark.parametrize(
    "body",
    [
        b"",  # nothing at all
        b"\x06ab",  # string shorter than its length
        b"\x05abc",  # negative length
        b"\x02a\x00",  # a byte after the end of the record
        b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01",  # an endless varint
    ],
)
def test_corrupt_bodies_fail_instead_of_reading_garbage(body: bytes) -> None:
    codec = compiled(fastavro.parse_schema("string"))
    assert codec is not None
    with pytest.raises(Failed):
        codec.decode(HEADER + body)


def test_a_long_outside_64_bits_is_refused() -> None:
    codec = compiled(fastavro.parse_schema("long"))
    assert codec is not None
    with pytest.raises(Failed):
        codec.encode(2**63)
    with pytest.raises(Failed):
        codec.encode(-(2**63) - 1)
    assert codec.decode(codec.encode(-(2**63))) == -(2**63)


def test_floats_use_ieee_little_endian() -> None:
    codec = compiled(fastavro.parse_schema("float"))
    assert codec is not None
    assert codec.encode(1.5) == HEADER + struct.pack("<f", 1.5)
