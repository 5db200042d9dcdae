"""The secured-cluster app: a keyed aggregation with a store writing Avro (so the Kafka-native
registry is used), and a workflow with a step. Its user topics (``in-``, ``out-``) lie outside
the app's internal prefixes, so each needs an ACL of its own. SF_TEST_APP names it."""

from __future__ import annotations

import os
from pathlib import Path

from streamflow import App, avro

NAME = os.environ["SF_TEST_APP"]
app = App(NAME, partitions=2)
payments = app.topic(f"in-{NAME}", partitions=2)
totals = app.topic(
    f"out-{NAME}",
    partitions=2,
    value=avro("secure.Total", schema_dir=Path(__file__).parent / "secure_schemas"),
)


def add(total: dict, payment: dict) -> dict:
    return {
        "account": payment["account"],
        "count": total["count"] + 1,
        "cents": total["cents"] + payment["cents"],
    }


(
    app.stream(payments)
    .aggregate("totals", initial=lambda: {"account": "", "count": 0, "cents": 0}, fn=add)
    .to(totals)
)


@app.step
def charge(ctx, cents: int) -> str:
    return f"charged {cents}"


@app.workflow
async def checkout(ctx, cents: int) -> str:
    return await ctx.step(charge, cents)
