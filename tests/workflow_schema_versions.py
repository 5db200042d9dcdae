"""Schema versions of a payment workflow's payloads, shared by the driver and the Kafka tests.

v1 → v2 changes every payload the four compatible ways: a field added with a default
(``Transfer.priority``, ``Receipt.charged_by``), a field that had a default removed
(``Transfer.memo``, ``Receipt.note``), int promoted to long (``amount``), and an enum symbol
added to an enum that has a default (``Channel.MOBILE``). v3 adds a field without a default to
``Transfer``: incompatible under FULL_TRANSITIVE both ways.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHANNEL = {"type": "enum", "name": "Channel", "namespace": "acme", "symbols": ["WEB", "BRANCH"],
           "default": "WEB"}
TRANSFER = {"type": "record", "name": "Transfer", "namespace": "acme", "fields": [
    {"name": "account", "type": "string"},
    {"name": "amount", "type": "int"},
    {"name": "channel", "type": "acme.Channel"},
    {"name": "memo", "type": "string", "default": ""},
]}
RECEIPT = {"type": "record", "name": "Receipt", "namespace": "acme", "fields": [
    {"name": "account", "type": "string"},
    {"name": "amount", "type": "int"},
    {"name": "channel", "type": "acme.Channel"},
    {"name": "note", "type": "string", "default": "v1"},
]}
V1 = [CHANNEL, TRANSFER, RECEIPT]
V2 = [
    {**CHANNEL, "symbols": ["WEB", "BRANCH", "MOBILE"]},
    {**TRANSFER, "fields": [
        {"name": "account", "type": "string"},
        {"name": "amount", "type": "long"},
        {"name": "channel", "type": "acme.Channel"},
        {"name": "priority", "type": "int", "default": 0},
    ]},
    {**RECEIPT, "fields": [
        {"name": "account", "type": "string"},
        {"name": "amount", "type": "long"},
        {"name": "channel", "type": "acme.Channel"},
        {"name": "charged_by", "type": "string", "default": "unknown"},
    ]},
]
V3 = [V2[0], {**V2[1], "fields": [*V2[1]["fields"], {"name": "currency", "type": "string"}]},
      V2[2]]


def write_schemas(directory: Path, schemas: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for schema in schemas:
        (directory / f"{schema['name'].lower()}.avsc").write_text(json.dumps(schema))
    return directory


def has_field(directory: Path, record: str, field: str) -> bool:
    schema = json.loads((directory / f"{record}.avsc").read_text())
    return any(f["name"] == field for f in schema["fields"])
