"""An app for the big-payload test: input, step result, signal and entity state of any size,
the workflow answering with digests of what it received."""

import hashlib
import os

from streamflow import App

app = App(os.environ.get("SF_TEST_APP", "big-app"), partitions=2)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@app.step(entity="docs")
def render(ctx, doc_id: str, size: int) -> str:
    before = ctx.state or {"writes": 0}
    ctx.state = {"writes": before["writes"] + 1, "body": "s" * size}  # entity state of size
    return "r" * size  # a result of size


@app.workflow
async def carry(ctx, doc: dict) -> dict:
    rendered = await ctx.step(render, ctx.workflow_id, doc["size"])
    note = await ctx.wait_signal("note")
    return {"input": digest(doc["body"]), "result": digest(rendered), "signal": digest(note)}
