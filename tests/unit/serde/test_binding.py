"""Binding at start: subjects per topic and store, default modes, and the refusal that names the
store (or topic) whose schema changed incompatibly, before anything is registered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamflow.app import App
from streamflow.errors import SchemaIncompatible
from streamflow.serde.avro.serde import avro
from streamflow.serde.registry.base import InMemorySchemaRegistry
from streamflow.serde.registry.binding import bind_schemas, schema_uses
from streamflow.serde.registry.compatibility import CompatibilityMode
from streamflow.testing import TestDriver
from tests.avro_schemas import record, write_schemas

EVENT = record("Event", {"name": "id", "type": "string"}, {"name": "amount", "type": "int"})
TOTAL = record("Total", {"name": "sum", "type": "int"})
TOTAL_LONG = record("Total", {"name": "sum", "type": "long"})  # backward, but not forward
TOTAL_NEW_FIELD = record(
    "Total", {"name": "sum", "type": "int"}, {"name": "count", "type": "int"}
)  # no default: not backward
EVENT_LONG = record("Event", {"name": "id", "type": "string"}, {"name": "amount", "type": "long"})


def schema_dir(tmp_path: Path, *schemas: dict[str, Any]) -> Path:
    """A new directory of ``tmp_path`` each call: one per version of the app's schemas."""
    return write_schemas(tmp_path / f"schemas{len(list(tmp_path.iterdir()))}", schemas)


def totals_app(directory: Path, name: str = "shop") -> App:
    app = App(name)
    events = app.topic("events", value=avro("acme.Event", schema_dir=directory))
    totals = app.topic("totals", value=avro("acme.Total", schema_dir=directory))
    app.stream(events).aggregate(
        "sums",
        initial=lambda: {"sum": 0},
        fn=lambda t, e: {"sum": t["sum"] + e["amount"]},
        value=avro("acme.Total", schema_dir=directory),
    ).to(totals)
    return app


def test_subjects_are_topic_key_or_value_and_app_store_value(tmp_path: Path) -> None:
    app = totals_app(schema_dir(tmp_path, EVENT, TOTAL))
    uses = {u.subject: (u.what, u.default_mode) for u in schema_uses(app.topology)}
    assert uses == {
        "shop-sums-value": ("store 'sums' value", CompatibilityMode.FULL_TRANSITIVE),
        "events-value": ("topic 'events' value", CompatibilityMode.BACKWARD),
        "totals-value": ("topic 'totals' value", CompatibilityMode.BACKWARD),
    }  # the changelog carries the store's bytes: no subject of its own


def test_binding_registers_each_subject_with_its_default_mode(tmp_path: Path) -> None:
    app = totals_app(schema_dir(tmp_path, EVENT, TOTAL))
    registry = InMemorySchemaRegistry()
    bind_schemas(app.topology, app.config, registry)
    assert {s: registry.mode(s) for s in registry.subjects()} == {
        "shop-sums-value": CompatibilityMode.FULL_TRANSITIVE,
        "events-value": CompatibilityMode.BACKWARD,
        "totals-value": CompatibilityMode.BACKWARD,
    }
    # Binding again (a restart) registers nothing new.
    bind_schemas(totals_app(schema_dir(tmp_path, EVENT, TOTAL)).topology, app.config, registry)
    assert all(len(registry.versions(s)) == 1 for s in registry.subjects())


def test_a_store_schema_changed_incompatibly_refuses_to_start_naming_store_and_reason(
    tmp_path: Path,
) -> None:
    registry = InMemorySchemaRegistry()
    v1 = totals_app(schema_dir(tmp_path, EVENT, TOTAL))
    bind_schemas(v1.topology, v1.config, registry)
    before = {s: registry.versions(s) for s in registry.subjects()}
    # Total.sum int→long: fine for the totals topic (BACKWARD), not for the store (FULL_TRANSITIVE:
    # a worker still on v1 during a rolling upgrade cannot read a long as an int).
    v2 = totals_app(schema_dir(tmp_path, EVENT_LONG, TOTAL_LONG))
    with pytest.raises(SchemaIncompatible) as refused:
        bind_schemas(v2.topology, v2.config, registry)
    message = str(refused.value)
    assert "app 'shop' cannot start" in message
    assert "store 'sums' value (acme.Total, subject 'shop-sums-value')" in message
    assert "FULL_TRANSITIVE" in message
    assert "TYPE_MISMATCH /fields/sum" in message and "version 1 reading new schema" in message
    assert "topic 'totals'" not in message and "topic 'events'" not in message
    # Nothing was registered, not even the compatible topic schemas.
    assert {s: registry.versions(s) for s in registry.subjects()} == before


def test_every_refused_subject_is_listed(tmp_path: Path) -> None:
    registry = InMemorySchemaRegistry()
    v1 = totals_app(schema_dir(tmp_path, EVENT, TOTAL))
    bind_schemas(v1.topology, v1.config, registry)
    v2 = totals_app(schema_dir(tmp_path, EVENT, TOTAL_NEW_FIELD))
    with pytest.raises(SchemaIncompatible, match="2 schemas changed incompatibly") as refused:
        bind_schemas(v2.topology, v2.config, registry)
    for what in ("store 'sums' value", "topic 'totals' value"):
        assert what in str(refused.value)
    assert "READER_FIELD_MISSING_DEFAULT_VALUE /fields/count" in str(refused.value)


def test_a_relaxed_subject_mode_lets_the_store_change_through(tmp_path: Path) -> None:
    registry = InMemorySchemaRegistry()
    v1 = totals_app(schema_dir(tmp_path, EVENT, TOTAL))
    bind_schemas(v1.topology, v1.config, registry)
    registry.set_mode("shop-sums-value", CompatibilityMode.BACKWARD_TRANSITIVE)
    v2 = totals_app(schema_dir(tmp_path, EVENT_LONG, TOTAL_LONG))
    bind_schemas(v2.topology, v2.config, registry)
    assert [v.version for v in registry.versions("shop-sums-value")] == [1, 2]


def test_the_test_driver_refuses_an_incompatible_store_like_a_worker(tmp_path: Path) -> None:
    registry = InMemorySchemaRegistry()
    TestDriver(totals_app(schema_dir(tmp_path, EVENT, TOTAL)), schema_registry=registry).close()
    with pytest.raises(SchemaIncompatible, match="store 'sums'"):
        TestDriver(
            totals_app(schema_dir(tmp_path, EVENT_LONG, TOTAL_LONG)), schema_registry=registry
        )


def test_a_topology_without_avro_needs_no_registry() -> None:
    app = App("plain")
    app.stream(app.topic("in")).to(app.topic("out"))
    assert bind_schemas(app.topology, app.config) is None  # would reach Kafka otherwise
