"""Schema versions of a payment workflow's payloads, shared by the driver and the Kafka tests.

v1 → v2 changes every payload the four compatible ways: a field added with a default
(``Transfer.priority``, ``Receipt.charged_by``), a field that had a default removed
(``Transfer.memo``, ``Receipt.note``), int promoted to long (``amount``), and an enum symbol
added to an enum that has a default (``Channel.MOBILE``). v3 adds a field without a default to
``Transfer``: incompatible under FULL_TRANSITIVE both ways.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

CHANNEL = {
    "type": "enum",
    "name": "Channel",
    "namespace": "acme",
    "symbols": ["WEB", "BRANCH"],
    "default": "WEB",
}
TRANSFER = {
    "type": "record",
    "name": "Transfer",
    "namespace": "acme",
    "fields": [
        {"name": "account", "type": "string"},
        {"name": "amount", "type": "int"},
        {"name": "channel", "type": "acme.Channel"},
        {"name": "memo", "type": "string", "default": ""},
    ],
}
RECEIPT = {
    "type": "record",
    "name": "Receipt",
    "namespace": "acme",
    "fields": [
        {"name": "account", "type": "string"},
        {"name": "amount", "type": "int"},
        {"name": "channel", "type": "acme.Channel"},
        {"name": "note", "type": "string", "default": "v1"},
    ],
}
V1 = [CHANNEL, TRANSFER, RECEIPT]
V2 = [
    {**CHANNEL, "symbols": ["WEB", "BRANCH", "MOBILE"]},
    {
        **TRANSFER,
        "fields": [
            {"name": "account", "type": "string"},
            {"name": "amount", "type": "long"},
            {"name": "channel", "type": "acme.Channel"},
            {"name": "priority", "type": "int", "default": 0},
        ],
    },
    {
        **RECEIPT,
        "fields": [
            {"name": "account", "type": "string"},
            {"name": "amount", "type": "long"},
            {"name": "channel", "type": "acme.Channel"},
            {"name": "charged_by", "type": "string", "default": "unknown"},
        ],
    },
]
V3 = [V2[0], {**V2[1], "fields": [*V2[1]["fields"], {"name": "currency", "type": "string"}]}, V2[2]]


def write_schemas(directory: Path, schemas: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for schema in schemas:
        (directory / f"{schema['name'].lower()}.avsc").write_text(json.dumps(schema))
    return directory


def has_field(directory: Path, record: str, field: str) -> bool:
    schema = json.loads((directory / f"{record}.avsc").read_text())
    return any(f["name"] == field for f in schema["fields"])


def settle_app(
    schemas: Path,
    *,
    app_name: str = "wfschemas",
    receipts: str = "receipts",
    sleep: timedelta = timedelta(hours=1),
    partitions: int = 1,
    changed_call: bool = False,
    **app_settings: Any,
) -> Any:
    """The payment workflow under whichever schemas ``schemas`` holds. Its step fills what the
    schema version has (v1: ``note`` from the memo, v2: ``charged_by``); ``changed_call`` makes
    the workflow ask for something else, as a real code change would."""
    from streamflow import App
    from streamflow.serde.avro.serde import avro

    app = App(app_name, partitions=partitions, **app_settings)
    app.topic(receipts, value=avro("acme.Receipt", schema_dir=schemas))
    transfer = avro("acme.Transfer", schema_dir=schemas)
    receipt = avro("acme.Receipt", schema_dir=schemas)
    v2 = has_field(schemas, "receipt", "charged_by")

    @app.step(args=(transfer,), result=receipt)
    def charge(ctx: Any, t: dict) -> dict:
        out = {"account": t["account"], "amount": t["amount"] * 2, "channel": t["channel"]}
        return {**out, "charged_by": f"bank-p{t['priority']}"} if v2 else {**out, "note": t["memo"]}

    @app.workflow(input=transfer, result=receipt)
    async def settle(ctx: Any, t: dict) -> dict:
        asked = {**t, "amount": t["amount"] + 1} if changed_call else t
        charged = await ctx.step(charge, asked)
        await ctx.sleep(sleep)
        ctx.emit(receipts, ctx.workflow_id, charged)
        return charged

    return app
