"""The Avro serde through the engine's seam: wire format, resolution of old records to the code's
schema, and the errors that send a record to the dead-letter topic with its reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamflow.app import App
from streamflow.errors import ConfigError, SerializationError
from streamflow.operate.dead_letter_format import HEADER_ERROR, HEADER_STAGE
from streamflow.serde.avro.serde import AvroSerde, avro
from streamflow.serde.avro.wire_format import header, schema_id_of, split
from streamflow.serde.registry.base import InMemorySchemaRegistry
from streamflow.serde.registry.binding import bind_schemas
from streamflow.testing import TestDriver
from tests.avro_schemas import (
    READING_V1,
    READING_V2,
    READINGS_V1,
    READINGS_V2,
    STATUS_V1,
    STATUS_V2,
    write_schemas,
)


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    return write_schemas(tmp_path / "v1", READINGS_V1)


@pytest.fixture
def v2(tmp_path: Path) -> Path:
    return write_schemas(tmp_path / "v2", READINGS_V2)


def bound(
    serde: AvroSerde,
    registry: InMemorySchemaRegistry,
    subject: str = "readings-value",
) -> AvroSerde:
    from streamflow.serde.registry.compatibility import CompatibilityMode

    serde.bind(
        registry,
        registry.register(subject, serde.schema_text, default_mode=CompatibilityMode.BACKWARD).id,
    )
    return serde


def test_declaring_a_type_the_schema_directory_lacks_fails_at_declaration(v1: Path) -> None:
    with pytest.raises(ConfigError, match=r"no named type 'acme\.Nope'.*acme\.Reading"):
        avro("acme.Nope", schema_dir=v1)
    with pytest.raises(ConfigError, match="schema directory not found"):
        avro("acme.Reading", schema_dir=v1 / "missing")


def test_the_schema_directory_defaults_to_the_environment(
    v1: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMFLOW_SCHEMA_DIR", str(v1))
    assert avro("acme.Reading").schema_name == "acme.Reading"


def test_an_unbound_serde_refuses_to_write_and_says_how_to_bind(v1: Path) -> None:
    serde = avro("acme.Reading", schema_dir=v1)
    with pytest.raises(ConfigError, match=r"not bound.*bind_schemas"):
        serde.serialize({"sensor": "s", "value": 1, "status": "OK"})


def test_records_carry_magic_byte_zero_and_the_bound_schema_id(v1: Path) -> None:
    registry = InMemorySchemaRegistry()
    serde = bound(avro("acme.Reading", schema_dir=v1), registry)
    data = serde.serialize({"sensor": "s", "value": 1, "status": "OK"})
    schema_id, body = split(data)
    assert data[0] == 0 and schema_id == serde.schema_id
    assert registry.schema(schema_id) == serde.schema_text
    assert bytes(body) == b"\x02s\x02\x00\x061.0"  # "s", 1, OK, default firmware "1.0"


def test_the_codec_switch_makes_fastavro_write_the_same_bytes(
    v1: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = {"sensor": "s", "value": 1, "status": "OK"}
    compiled = bound(avro("acme.Reading", schema_dir=v1), InMemorySchemaRegistry())
    monkeypatch.setenv("STREAMFLOW_AVRO_CODEC", "fastavro")
    interpreted = bound(avro("acme.Reading", schema_dir=v1), InMemorySchemaRegistry())
    assert compiled.binding.compiled is not None and interpreted.binding.compiled is None
    assert interpreted.serialize(value) == compiled.serialize(value)
    assert interpreted.deserialize(compiled.serialize(value))["sensor"] == "s"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_the_header_round_trips_every_schema_id(schema_id: int) -> None:
    assert schema_id_of(header(schema_id) + b"body") == schema_id


@settings(max_examples=200, deadline=None)
@given(
    sensor=st.text(),
    value=st.integers(-(2**31), 2**31 - 1),
    status=st.sampled_from(["OK", "FAIL"]),
    firmware=st.text(),
)
def test_wire_format_round_trips_every_value(
    tmp_path_factory: pytest.TempPathFactory, sensor: str, value: int, status: str, firmware: str
) -> None:
    serde = _shared_v1(tmp_path_factory)
    record = {"sensor": sensor, "value": value, "status": status, "firmware": firmware}
    assert serde.deserialize(serde.serialize(record)) == record


_V1_SERDE: list[AvroSerde] = []


def _shared_v1(factory: pytest.TempPathFactory) -> AvroSerde:
    if not _V1_SERDE:
        directory = write_schemas(factory.mktemp("shared") / "v1", [STATUS_V1, READING_V1])
        _V1_SERDE.append(
            bound(avro("acme.Reading", schema_dir=directory), InMemorySchemaRegistry())
        )
    return _V1_SERDE[0]


def expected_under_v2(old: dict[str, Any]) -> dict[str, Any]:
    """The specification's resolution, by hand: firmware dropped, unit defaulted."""
    return {
        "sensor": old["sensor"],
        "value": old["value"],
        "status": old["status"],
        "unit": "celsius",
    }


def test_records_written_with_v1_read_under_v2_by_the_resolution_rules(v1: Path, v2: Path) -> None:
    registry = InMemorySchemaRegistry()
    old_serde = bound(avro("acme.Reading", schema_dir=v1), registry)
    new_serde = bound(avro("acme.Reading", schema_dir=v2), registry)
    assert new_serde.schema_id != old_serde.schema_id
    olds = [
        {"sensor": f"s{i}", "value": i * 1000, "status": ["OK", "FAIL"][i % 2], "firmware": "2.1"}
        for i in range(5)
    ]
    for old in olds:
        assert new_serde.deserialize(old_serde.serialize(old)) == expected_under_v2(old)
    # ...and the new code's own records still take the fast path, with v2's id.
    new = {"sensor": "x", "value": 2**40, "status": "DEGRADED", "unit": "kelvin"}
    data = new_serde.serialize(new)
    assert schema_id_of(data) == new_serde.schema_id
    assert new_serde.deserialize(data) == new


def test_a_new_enum_symbol_reads_as_the_enum_default_under_the_old_schema(
    tmp_path: Path, v1: Path
) -> None:
    int_v2 = {
        **READING_V2,
        "fields": [
            dict(f, type="int") if f["name"] == "value" else f for f in READING_V2["fields"]
        ],
    }
    registry = InMemorySchemaRegistry()
    old_serde = bound(avro("acme.Reading", schema_dir=v1), registry)
    new_serde = bound(
        avro("acme.Reading", schema_dir=write_schemas(tmp_path / "v2i", [STATUS_V2, int_v2])),
        registry,
    )
    data = new_serde.serialize({"sensor": "s", "value": 3, "status": "DEGRADED"})
    assert old_serde.deserialize(data) == {
        "sensor": "s",
        "value": 3,
        "status": "OK",
        "firmware": "1.0",
    }


def test_a_writer_schema_the_reader_cannot_resolve_is_named_in_the_error(
    v1: Path, v2: Path
) -> None:
    registry = InMemorySchemaRegistry()
    old_serde = bound(avro("acme.Reading", schema_dir=v1), registry)
    new_serde = bound(avro("acme.Reading", schema_dir=v2), registry)
    data = new_serde.serialize({"sensor": "s", "value": 3, "status": "OK"})
    with pytest.raises(
        SerializationError,
        match=f"schema id {new_serde.schema_id}.*cannot be resolved.*long is not int",
    ):
        old_serde.deserialize(data)  # long → int is no promotion


def test_an_unknown_schema_id_is_a_serialization_error_naming_the_id(v1: Path) -> None:
    serde = bound(avro("acme.Reading", schema_dir=v1), InMemorySchemaRegistry())
    with pytest.raises(SerializationError, match="unknown schema id 4242"):
        serde.deserialize(header(4242) + b"\x02s\x02\x00\x00")
    with pytest.raises(SerializationError, match=r"unknown schema id 4242.*recently"):
        serde.deserialize(header(4242) + b"\x02s\x02\x00\x00")  # not asked again at once


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"sensor": "s"}', "unknown magic byte 123"),
        (b"\x01\x00\x00\x00\x01\x02s", "unknown magic byte 1"),
        (b"\x00\x00", "too short"),
    ],
)
def test_a_record_not_in_the_wire_format_is_a_serialization_error(
    v1: Path, data: bytes, reason: str
) -> None:
    serde = bound(avro("acme.Reading", schema_dir=v1), InMemorySchemaRegistry())
    with pytest.raises(SerializationError, match=reason):
        serde.deserialize(data)


def test_bytes_that_do_not_match_their_schema_are_a_serialization_error(v1: Path) -> None:
    serde = bound(avro("acme.Reading", schema_dir=v1), InMemorySchemaRegistry())
    good = serde.serialize({"sensor": "s", "value": 1, "status": "OK"})
    with pytest.raises(SerializationError, match="do not match the schema"):
        serde.deserialize(good[:-2])


def test_a_value_that_does_not_fit_the_schema_names_the_field(v1: Path) -> None:
    serde = bound(avro("acme.Reading", schema_dir=v1), InMemorySchemaRegistry())
    with pytest.raises(SerializationError, match=r"acme\.Reading\.value"):
        serde.serialize({"sensor": "s", "value": "not a number", "status": "OK"})


def fold(stats: dict[str, Any], reading: dict[str, Any]) -> dict[str, Any]:
    count = stats["count"] + 1
    out = {
        "count": count,
        "max_value": max(stats["max_value"], reading["value"]),
        "last_status": reading["status"],
    }
    if "mean" in stats:
        out["mean"] = stats["mean"] + (reading["value"] - stats["mean"]) / count
    return out


def reading_app(name: str, directory: Path) -> App:
    app = App(name)
    readings = app.topic("readings", value=avro("acme.Reading", schema_dir=directory))
    stats = app.topic("stats", value=avro("acme.Stats", schema_dir=directory))
    zero = {"count": 0, "max_value": -(2**62), "last_status": "OK"}
    fields = json.loads((directory / "stats.avsc").read_text())["fields"]
    if any(f["name"] == "mean" for f in fields):
        zero["mean"] = 0.0
    app.stream(readings).aggregate(
        "stats", initial=lambda: dict(zero), fn=fold, value=avro("acme.Stats", schema_dir=directory)
    ).to(stats)
    return app


def test_poison_records_go_to_the_dead_letter_topic_with_the_reason(v1: Path) -> None:
    with TestDriver(reading_app("dlq", v1)) as driver:
        driver.pipe_raw("readings", b"k", b"not avro")
        driver.pipe_raw("readings", b"k", header(777) + b"\x00")
        driver.pipe("readings", "k", {"sensor": "s", "value": 1, "status": "OK"})
        dead = [dict(m.headers()) for m in driver.dead_letters()]
        assert [h[HEADER_STAGE] for h in dead] == [b"deserialize", b"deserialize"]
        assert b"unknown magic byte" in dead[0][HEADER_ERROR]
        assert b"unknown schema id 777" in dead[1][HEADER_ERROR]
        assert driver.read("stats") == [
            ("k", {"count": 1, "max_value": 1, "last_status": "OK", "source": "v1"})
        ]


def test_state_and_input_written_under_v1_are_read_by_the_v2_topology(
    tmp_path: Path, v1: Path, v2: Path
) -> None:
    registry = InMemorySchemaRegistry()
    state = tmp_path / "state"
    olds = [
        {"sensor": "a", "value": 1, "status": "OK", "firmware": "1.0"},
        {"sensor": "a", "value": 5, "status": "FAIL", "firmware": "1.1"},
        {"sensor": "b", "value": 2, "status": "FAIL", "firmware": "1.1"},
    ]
    with TestDriver(reading_app("evolve", v1), state_dir=state, schema_registry=registry) as driver:
        for old in olds:
            driver.pipe("readings", old["sensor"], old)
        old_input = [(m.key(), m.value()) for m in driver.messages("readings")]
    app = reading_app("evolve", v2)
    with TestDriver(app, state_dir=state, schema_registry=registry) as driver:
        # The store holds v1 bytes, read under v2: "source" dropped, "mean" defaulted.
        assert driver.store("stats") == {
            "a": {"count": 2, "max_value": 5, "last_status": "FAIL", "mean": 0.0},
            "b": {"count": 1, "max_value": 2, "last_status": "FAIL", "mean": 0.0},
        }
        # Old input records (replayed) are read under v2 too, new ones beside them.
        for key, value in old_input[:1]:
            driver.pipe_raw("readings", key, value)
        driver.pipe("readings", "b", {"sensor": "b", "value": 2**40, "status": "DEGRADED"})
        v2_id = app.topology.topics["stats"].value_serde.schema_id  # type: ignore[attr-defined]
        assert [schema_id_of(m.value()) for m in driver.messages("stats")] == [v2_id, v2_id]
        assert driver.read("stats") == [
            ("a", {"count": 3, "max_value": 5, "last_status": "OK", "mean": 1 / 3}),
            ("b", {"count": 2, "max_value": 2**40, "last_status": "DEGRADED", "mean": 2**40 / 2}),
        ]


def test_the_same_schema_in_two_subjects_has_one_id(v1: Path) -> None:
    app = reading_app("ids", v1)
    registry = bind_schemas(app.topology, app.config, InMemorySchemaRegistry())
    assert registry is not None
    ids = {s: [v.id for v in registry.versions(s)] for s in registry.subjects()}
    assert ids == {"ids-stats-value": [1], "stats-value": [1], "readings-value": [2]}


def test_a_topic_spec_with_an_avro_serde_stays_hashable(v1: Path) -> None:
    from streamflow.serde.base import STR
    from streamflow.topology.specs import TopicSpec

    serde = avro("acme.Reading", schema_dir=v1)
    assert hash(TopicSpec("t", STR, serde)) == hash(TopicSpec("t", STR, serde))
    assert serde == serde and serde != avro("acme.Reading", schema_dir=v1)


def test_avro_by_name_through_the_serde_seam(v1: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMFLOW_SCHEMA_DIR", str(v1))
    app = App("by-name")
    spec = app.topic("readings", value="avro:acme.Reading")
    assert isinstance(spec.value_serde, AvroSerde) and spec.value_serde.name == "avro:acme.Reading"
    with TestDriver(app) as driver:
        driver.pipe("readings", "k", {"sensor": "s", "value": 1, "status": "OK"})
        assert driver.read("readings")[0][1]["firmware"] == "1.0"
