"""The chaos suite's workflows: a durable timer, then an entity step, then one record out."""

from __future__ import annotations

import os
from datetime import timedelta

from streamflow import App

NAME = os.environ["SF_TEST_APP"]
app = App(NAME, partitions=4)
done = app.topic(f"done-{NAME}", partitions=4)  # keyed by workflow id: as the workflows


@app.step(entity="counters")
def bump(ctx, counter: str) -> int:
    ctx.state = (ctx.state or 0) + 1
    return ctx.state


@app.workflow
async def tick(ctx, n: int) -> int:
    await ctx.sleep(timedelta(seconds=1))
    value = await ctx.step(bump, f"c{n % 20}")
    ctx.emit(done, ctx.workflow_id, n)
    return value
