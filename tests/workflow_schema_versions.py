"""A payment workflow whose payloads are Avro, under whichever schema version a directory holds:
shared by the driver and the Kafka tests of workflow schema evolution.

The versions (``PAYMENTS_V1``, ``PAYMENTS_V2``, ``PAYMENTS_V3``) are in ``tests/avro_schemas.py``
with the other shared schemas, which says what each one changes.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any


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
