"""Avro schemas that several tests use, as the dicts an ``.avsc`` file holds.

The same schemas are tested at several layers: the serde and the registry in the driver, the
same evolution on a real broker, the CLI's checks. One definition of each keeps a v1 → v2
change the same change everywhere, and its name says what the version is for (a compatible
change, an incompatible one). A schema that is the point of a single test (a deliberately
invalid one, the corner of one resolution rule) stays in that test, and schema directories
read as they are on disk (``tests/unit/serde/schemas``, ``tests/apps/*_schemas``) stay files.

``write_schemas`` lays schemas out as ``avro(..., schema_dir=...)`` and the ``streamflow
schemas`` commands read them: one file per named type, ``<name>.avsc``.

Tests never change these dicts in place; a variant is a new dict (``with_fields``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Schema = dict[str, Any]
"""A schema as parsed JSON: a record, an enum, or a field of a record."""


def record(name: str, *fields: Schema, namespace: str | None = "acme") -> Schema:
    """A record in ``namespace`` (None: in none)."""
    if namespace is None:
        return {"type": "record", "name": name, "fields": list(fields)}
    return {"type": "record", "name": name, "namespace": namespace, "fields": list(fields)}


def with_fields(schema: Schema, *fields: Schema) -> Schema:
    """A later version of record ``schema``: the same, with ``fields`` added at the end."""
    return {**schema, "fields": [*schema["fields"], *fields]}


def write_schemas(directory: Path, schemas: Iterable[Schema]) -> Path:
    """``directory`` (made if missing) with one ``<name>.avsc`` per schema; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    for schema in schemas:
        (directory / f"{schema['name'].lower()}.avsc").write_text(json.dumps(schema))
    return directory


# -- acme.User: the registry's and the compatibility checks' subject ------------------------------


def user(*fields: Schema, id_type: str) -> Schema:
    """``acme.User``: an ``id`` of ``id_type`` (string; int or long where a test promotes it),
    then ``fields``."""
    return record("User", {"name": "id", "type": id_type}, *fields)


EMAIL: Schema = {"name": "email", "type": ["null", "string"], "default": None}
"""An optional field with a default: adding it (or removing it) is compatible both ways."""
AGE: Schema = {"name": "age", "type": "int"}
"""A field without a default: a reader that has it cannot read what was written without it."""

USER_V1 = user(id_type="string")
USER_V2 = with_fields(USER_V1, EMAIL)
"""BACKWARD and FORWARD compatible with ``USER_V1``."""
USER_NO_DEFAULT = with_fields(USER_V1, AGE)
"""Not BACKWARD compatible with ``USER_V1``: refused under the default mode."""


# -- acme.Reading → acme.Stats: an Avro topic folded into an Avro store and topic ---------------
# v1 → v2 changes them the four compatible ways: int promoted to long (Reading.value), an enum
# symbol added to an enum with a default (Status.DEGRADED), a field with a default added
# (Reading.unit, Stats.mean), and a field that had a default removed (Reading.firmware,
# Stats.source). v3 adds a field without a default to the store's Stats: incompatible.

STATUS_V1: Schema = {
    "type": "enum",
    "name": "Status",
    "namespace": "acme",
    "symbols": ["OK", "FAIL"],
    "default": "OK",
}
STATUS_V2 = {**STATUS_V1, "symbols": ["OK", "FAIL", "DEGRADED"]}
READING_V1 = record(
    "Reading",
    {"name": "sensor", "type": "string"},
    {"name": "value", "type": "int"},
    {"name": "status", "type": "acme.Status"},
    {"name": "firmware", "type": "string", "default": "1.0"},
)
READING_V2 = record(
    "Reading",
    {"name": "sensor", "type": "string"},
    {"name": "value", "type": "long"},
    {"name": "status", "type": "acme.Status"},
    {"name": "unit", "type": "string", "default": "celsius"},
)
STATS_V1 = record(  # the store's value and the output topic's
    "Stats",
    {"name": "count", "type": "long"},
    {"name": "max_value", "type": "long"},
    {"name": "last_status", "type": "acme.Status"},
    {"name": "source", "type": "string", "default": "v1"},
)
STATS_V2 = record(  # FULL compatible: a field with a default added, one with a default removed
    "Stats",
    {"name": "count", "type": "long"},
    {"name": "max_value", "type": "long"},
    {"name": "last_status", "type": "acme.Status"},
    {"name": "mean", "type": "double", "default": 0.0},
)
READINGS_V1 = [STATUS_V1, READING_V1, STATS_V1]
READINGS_V2 = [STATUS_V2, READING_V2, STATS_V2]
READINGS_V3 = [STATUS_V2, READING_V2, with_fields(STATS_V2, {"name": "median", "type": "double"})]


# -- acme.Transfer → acme.Receipt: a payment workflow's payloads (tests/workflow_schema_versions.py)
# v1 → v2 changes every payload the four compatible ways: a field added with a default
# (Transfer.priority, Receipt.charged_by), a field that had a default removed (Transfer.memo,
# Receipt.note), int promoted to long (amount), and an enum symbol added to an enum that has a
# default (Channel.MOBILE). v3 adds a field without a default to Transfer: incompatible under
# FULL_TRANSITIVE both ways.

CHANNEL_V1: Schema = {
    "type": "enum",
    "name": "Channel",
    "namespace": "acme",
    "symbols": ["WEB", "BRANCH"],
    "default": "WEB",
}
CHANNEL_V2 = {**CHANNEL_V1, "symbols": ["WEB", "BRANCH", "MOBILE"]}
TRANSFER_V1 = record(
    "Transfer",
    {"name": "account", "type": "string"},
    {"name": "amount", "type": "int"},
    {"name": "channel", "type": "acme.Channel"},
    {"name": "memo", "type": "string", "default": ""},
)
TRANSFER_V2 = record(
    "Transfer",
    {"name": "account", "type": "string"},
    {"name": "amount", "type": "long"},
    {"name": "channel", "type": "acme.Channel"},
    {"name": "priority", "type": "int", "default": 0},
)
RECEIPT_V1 = record(
    "Receipt",
    {"name": "account", "type": "string"},
    {"name": "amount", "type": "int"},
    {"name": "channel", "type": "acme.Channel"},
    {"name": "note", "type": "string", "default": "v1"},
)
RECEIPT_V2 = record(
    "Receipt",
    {"name": "account", "type": "string"},
    {"name": "amount", "type": "long"},
    {"name": "channel", "type": "acme.Channel"},
    {"name": "charged_by", "type": "string", "default": "unknown"},
)
PAYMENTS_V1 = [CHANNEL_V1, TRANSFER_V1, RECEIPT_V1]
PAYMENTS_V2 = [CHANNEL_V2, TRANSFER_V2, RECEIPT_V2]
PAYMENTS_V3 = [
    CHANNEL_V2,
    with_fields(TRANSFER_V2, {"name": "currency", "type": "string"}),
    RECEIPT_V2,
]


# -- a recursive record -----------------------------------------------------------------------

NODE = record(
    "Node",
    {"name": "value", "type": "int"},
    {"name": "next", "type": ["null", "Node"], "default": None},
    namespace=None,
)
