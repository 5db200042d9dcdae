"""The Kafka-native schema registry on a real broker: ids allocated once under concurrency, the
same text the same id, registration idempotent, everything recovered by a fresh reader."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from streamflow.errors import SchemaIncompatible
from streamflow.serde.avro.schema import canonical_schema
from streamflow.serde.registry.base import RegisteredSchema
from streamflow.serde.registry.compatibility import CompatibilityMode
from streamflow.serde.registry.kafka import KafkaSchemaRegistry
from tests.kafka_helpers import delete_topics, unique_name

pytestmark = pytest.mark.kafka

NONE = CompatibilityMode.NONE


def schema(n: int) -> dict[str, Any]:
    return {
        "type": "record",
        "name": f"R{n}",
        "namespace": "it",
        "fields": [{"name": "x", "type": "int"}],
    }


@pytest.fixture
def registry_topic(kafka_admin: AdminClient) -> Iterator[str]:
    topic = unique_name("_streamflow_schemas-it")
    yield topic
    delete_topics(kafka_admin, [topic])


def test_concurrent_registrants_never_give_one_id_or_version_twice(
    kafka_bootstrap: str, registry_topic: str
) -> None:
    results: dict[int, list[RegisteredSchema]] = {}
    errors: list[BaseException] = []

    def registrant(n: int) -> None:
        registry = KafkaSchemaRegistry(kafka_bootstrap, topic=registry_topic)
        try:
            results[n] = [
                # A schema of its own in a shared subject: versions must not collide...
                registry.register("shared", schema(n), default_mode=NONE),
                # ...and one text everybody registers, each in its own subject: one id.
                registry.register(f"own-{n}", schema(99), default_mode=NONE),
            ]
        except BaseException as exc:  # noqa: BLE001  re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=registrant, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    fresh = KafkaSchemaRegistry(kafka_bootstrap, topic=registry_topic)
    shared = fresh.versions("shared")
    assert sorted(v.version for v in shared) == [1, 2, 3]
    assert len({v.id for v in shared}) == 3
    common_ids = {fresh.versions(f"own-{n}")[0].id for n in range(3)}
    assert len(common_ids) == 1 and common_ids.isdisjoint({v.id for v in shared})
    # What each registrant was told is what the log says.
    for registered in (r for rs in results.values() for r in rs):
        assert registered in fresh.versions(registered.subject)
    assert fresh.schema(common_ids.pop()) == canonical_schema(schema(99))


def test_registration_is_idempotent_checked_and_survives_a_fresh_reader(
    kafka_bootstrap: str, registry_topic: str
) -> None:
    registry = KafkaSchemaRegistry(kafka_bootstrap, topic=registry_topic)
    backward = CompatibilityMode.BACKWARD
    v1 = registry.register("users-value", schema(1), default_mode=backward)
    assert registry.register("users-value", schema(1), default_mode=backward) == v1
    renamed = {**schema(1), "name": "R1", "fields": [{"name": "y", "type": "int"}]}
    with pytest.raises(SchemaIncompatible, match="READER_FIELD_MISSING_DEFAULT_VALUE /fields/y"):
        registry.register("users-value", renamed, default_mode=backward)
    registry.set_mode("users-value", NONE)
    v2 = registry.register("users-value", renamed, default_mode=backward)
    fresh = KafkaSchemaRegistry(kafka_bootstrap, topic=registry_topic)
    assert fresh.versions("users-value") == [v1, v2]
    assert fresh.mode("users-value") is NONE
    assert fresh.subjects() == ["users-value"]
