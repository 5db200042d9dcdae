"""Registry rules without a broker: ids by canonical text, versions, modes, idempotency; the Kafka
registry's record format and replay; the Confluent adapter against a stub of its client."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamflow.errors import SchemaError, SchemaIncompatible
from streamflow.serde.registry.base import (
    InMemorySchemaRegistry,
    RegisteredSchema,
    canonical_schema,
)
from streamflow.serde.registry.compatibility import CompatibilityMode
from streamflow.serde.registry.confluent import ConfluentSchemaRegistry
from streamflow.serde.registry.kafka import KafkaSchemaRegistry, config_key, schema_key
from tests.avro_schemas import USER_NO_DEFAULT, USER_V1, USER_V2

BACKWARD = CompatibilityMode.BACKWARD


def test_canonical_text_ignores_whitespace_and_key_order_but_not_defaults() -> None:
    shuffled = (
        '{ "fields": [{"type": "string", "name": "id"}],\n "namespace": "acme", '
        '"name": "User", "type": "record" }'
    )
    assert (
        canonical_schema(shuffled)
        == canonical_schema(USER_V1)
        == canonical_schema(json.dumps(USER_V1))
    )
    with_default = {**USER_V1, "fields": [{"name": "id", "type": "string", "default": ""}]}
    assert canonical_schema(with_default) != canonical_schema(USER_V1)


def test_the_same_schema_gets_the_same_id_in_every_subject() -> None:
    registry = InMemorySchemaRegistry()
    a = registry.register("a-value", USER_V1, default_mode=BACKWARD)
    b = registry.register("b-value", json.dumps(USER_V1, indent=4), default_mode=BACKWARD)
    c = registry.register("b-value", USER_V2, default_mode=BACKWARD)
    assert (a.id, a.version) == (b.id, b.version) == (1, 1)
    assert (c.id, c.version) == (2, 2)
    assert registry.schema(1) == canonical_schema(USER_V1)


def test_registering_an_existing_version_is_a_no_op() -> None:
    registry = InMemorySchemaRegistry()
    first = registry.register("s", USER_V1, default_mode=BACKWARD)
    registry.register("s", USER_V2, default_mode=BACKWARD)
    again = registry.register("s", USER_V1, default_mode=BACKWARD)
    assert again == first
    assert [v.version for v in registry.versions("s")] == [1, 2]


def test_an_incompatible_version_is_refused_with_its_reasons() -> None:
    registry = InMemorySchemaRegistry()
    registry.register("s", USER_V1, default_mode=BACKWARD)
    assert [p.kind for p in registry.check("s", USER_NO_DEFAULT, default_mode=BACKWARD)] == [
        "READER_FIELD_MISSING_DEFAULT_VALUE"
    ]
    with pytest.raises(SchemaIncompatible, match=r"(?s)subject 's'.*BACKWARD.*/fields/age"):
        registry.register("s", USER_NO_DEFAULT, default_mode=BACKWARD)
    assert len(registry.versions("s")) == 1


def test_the_subject_mode_set_at_creation_wins_over_a_later_default() -> None:
    registry = InMemorySchemaRegistry()
    registry.register("s", USER_V1, default_mode=CompatibilityMode.NONE)
    assert registry.mode("s") is CompatibilityMode.NONE
    registry.register("s", USER_NO_DEFAULT, default_mode=BACKWARD)  # NONE: accepted
    assert len(registry.versions("s")) == 2


def test_an_unknown_id_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="schema id 9 is not registered"):
        InMemorySchemaRegistry().schema(9)


# -- the Kafka registry's log --------------------------------------------------------------------


@settings(max_examples=100)
@given(st.text(min_size=1), st.integers(1, 10_000))
def test_log_keys_are_canonical_bytes(subject: str, version: int) -> None:
    # Compaction keeps the last record per exact key bytes: one fact, one spelling.
    key = schema_key(subject, version)
    assert key == orjson.dumps(
        dict(reversed(list(orjson.loads(key).items()))), option=orjson.OPT_SORT_KEYS
    )
    assert key.startswith(b'{"keytype":"SCHEMA","subject":')
    assert config_key(subject) == orjson.dumps(
        {"keytype": "CONFIG", "subject": subject}, option=orjson.OPT_SORT_KEYS
    )


def test_replaying_the_log_rebuilds_subjects_ids_and_modes_and_skips_what_it_cannot_read() -> None:
    registry = KafkaSchemaRegistry("unused:9092")
    text1, text2 = canonical_schema(USER_V1), canonical_schema(USER_V2)
    records: list[tuple[bytes | None, bytes | None]] = [
        (config_key("s"), orjson.dumps({"compatibility": "FULL_TRANSITIVE"})),
        (
            schema_key("s", 1),
            orjson.dumps({"subject": "s", "version": 1, "id": 1, "schema": text1}),
        ),
        (b"not json", b"{}"),
        (orjson.dumps({"keytype": "FROM_THE_FUTURE"}), b"{}"),
        (
            schema_key("t", 1),
            orjson.dumps({"subject": "t", "version": 1, "id": 1, "schema": text1}),
        ),
        (
            schema_key("s", 2),
            orjson.dumps({"subject": "s", "version": 2, "id": 2, "schema": text2}),
        ),
        (
            schema_key("s", 2),
            orjson.dumps({"subject": "s", "version": 2, "id": 2, "schema": text2}),
        ),  # re-read: idempotent
        (config_key("t"), orjson.dumps({"compatibility": "NONE"})),
        (config_key("t"), None),  # tombstone: back to the default
    ]
    for offset, (key, value) in enumerate(records):
        registry._apply(key, value, offset)
    log = registry.log
    assert [v.id for v in log.subject_versions["s"]] == [1, 2]
    assert log.subject_versions["t"] == [RegisteredSchema("t", 1, 1, text1)]
    assert log.modes == {"s": CompatibilityMode.FULL_TRANSITIVE}
    assert log.schema(2) == text2
    # The next registration of a new text gets the next id; of a known text, its id.
    assert log.plan("u", text2, BACKWARD).id == 2
    assert log.plan("u", canonical_schema(USER_NO_DEFAULT), CompatibilityMode.NONE).id == 3


# -- the Confluent adapter -----------------------------------------------------------------------


class StubRegistryError(Exception):
    def __init__(self, status: int, code: int) -> None:
        super().__init__(f"HTTP {status} code {code}")
        self.http_status_code, self.error_code = status, code


@dataclass
class StubSchema:
    schema_str: str
    schema_type: str = "AVRO"


@dataclass
class StubRegistered:
    schema_id: int
    schema: StubSchema
    subject: str
    version: int


@dataclass
class StubClient:
    """The methods of SchemaRegistryClient the adapter calls, over dicts (no HTTP)."""

    subjects: dict[str, list[int]] = field(default_factory=dict)
    schemas: dict[int, str] = field(default_factory=dict)
    compat: dict[str, str] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def register_schema(self, subject_name: str, schema: StubSchema) -> int:
        self.calls.append(f"register {subject_name}")
        ids = {t: i for i, t in self.schemas.items()}
        schema_id = ids.get(schema.schema_str, len(self.schemas) + 100)
        self.schemas[schema_id] = schema.schema_str
        versions = self.subjects.setdefault(subject_name, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id

    def lookup_schema(self, subject_name: str, schema: StubSchema) -> StubRegistered:
        for number, schema_id in enumerate(self.subjects.get(subject_name, []), start=1):
            if self.schemas[schema_id] == schema.schema_str:
                return StubRegistered(
                    schema_id, StubSchema(schema.schema_str), subject_name, number
                )
        raise StubRegistryError(404, 40403)

    def get_schema(self, schema_id: int) -> StubSchema:
        if schema_id not in self.schemas:
            raise StubRegistryError(404, 40403)
        return StubSchema(self.schemas[schema_id])

    def get_subjects(self) -> list[str]:
        return list(self.subjects)

    def get_versions(self, subject_name: str) -> list[int]:
        if subject_name not in self.subjects:
            raise StubRegistryError(404, 40401)
        return list(range(1, len(self.subjects[subject_name]) + 1))

    def get_version(self, subject_name: str, version: int) -> StubRegistered:
        schema_id = self.subjects[subject_name][version - 1]
        return StubRegistered(schema_id, StubSchema(self.schemas[schema_id]), subject_name, version)

    def get_compatibility(self, subject_name: str) -> str:
        if subject_name not in self.compat:
            raise StubRegistryError(404, 40408)
        return self.compat[subject_name]

    def set_compatibility(self, subject_name: str, level: str) -> str:
        self.calls.append(f"compat {subject_name} {level}")
        self.compat[subject_name] = level
        return level


def confluent(client: StubClient) -> ConfluentSchemaRegistry:
    return ConfluentSchemaRegistry(client, StubSchema)


def test_confluent_adapter_sets_a_new_subjects_mode_then_registers() -> None:
    client = StubClient()
    registry = confluent(client)
    registered = registry.register(
        "shop-sums-value", USER_V1, default_mode=CompatibilityMode.FULL_TRANSITIVE
    )
    assert client.calls == ["compat shop-sums-value FULL_TRANSITIVE", "register shop-sums-value"]
    assert (registered.version, registered.id) == (1, 100)
    assert registry.schema(100) == canonical_schema(USER_V1)
    assert registry.mode("shop-sums-value") is CompatibilityMode.FULL_TRANSITIVE
    assert registry.mode("other") is None


def test_confluent_adapter_checks_locally_and_names_the_field_before_calling_the_server() -> None:
    client = StubClient()
    registry = confluent(client)
    registry.register("s", USER_V1, default_mode=BACKWARD)
    client.calls.clear()
    assert [p.path for p in registry.check("s", USER_NO_DEFAULT, default_mode=BACKWARD)] == [
        "/fields/age"
    ]
    with pytest.raises(SchemaIncompatible, match="/fields/age"):
        registry.register("s", USER_NO_DEFAULT, default_mode=BACKWARD)
    assert client.calls == []  # refused before any write
    assert registry.register("s", USER_V1, default_mode=BACKWARD).version == 1  # no-op
    assert registry.register("s", USER_V2, default_mode=BACKWARD).version == 2
    assert registry.subjects() == ["s"]
    assert [v.version for v in registry.versions("s")] == [1, 2]


def test_confluent_adapter_maps_unknown_ids_and_subjects() -> None:
    registry = confluent(StubClient())
    with pytest.raises(SchemaError, match="schema id 5 is not registered"):
        registry.schema(5)
    assert registry.versions("nope") == []
