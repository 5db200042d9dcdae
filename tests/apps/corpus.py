"""The bad-input corpus app: JSON in, a processor that raises what the record asks, JSON out;
Avro in (corpus.Reading), JSON out; and a workflow with a dataclass input. SF_TEST_APP names it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from streamflow import App, avro

NAME = os.environ["SF_TEST_APP"]
app = App(NAME, partitions=1)
source = app.topic(f"in-{NAME}", partitions=1, config={"max.message.bytes": str(8 * 1024 * 1024)})
sink = app.topic(f"out-{NAME}", partitions=1)
readings = app.topic(
    f"avro-{NAME}",
    partitions=1,
    value=avro("corpus.Reading", schema_dir=Path(__file__).parent / "corpus_schemas"),
)
RAISES = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "RecursionError": RecursionError,
    "SystemExit": SystemExit,
}


def check(value: object) -> object:
    if isinstance(value, dict) and value.get("raise") in RAISES:
        raise RAISES[value["raise"]](f"asked to raise {value['raise']}")
    return value


app.stream(source).map(check).to(sink)
app.stream(readings).map(lambda r: {"good": "avro", "sensor": r["sensor"]}).to(sink)


@dataclass
class Order:
    id: str
    cents: int


@app.step
def charge(ctx, order: Order) -> int:
    return order.cents


@app.workflow
async def checkout(ctx, order: Order) -> int:
    return await ctx.step(charge, order)
