"""Workflows for the integration tests; SF_WF_VARIANT swaps code as a careless deploy would."""

from __future__ import annotations

import os
from datetime import timedelta

from streamflow import App

app = App(os.environ["SF_TEST_APP"], partitions=3)
app.topic("wake-log-" + os.environ["SF_TEST_APP"], partitions=1)
VARIANT = os.environ.get("SF_WF_VARIANT", "a")


@app.step
def record(ctx, what: str) -> str:
    return f"recorded {what}"


@app.step
def other(ctx, what: str) -> str:
    return f"other {what}"


@app.step(entity="counters")
def bump(ctx, counter: str, by: int) -> int:
    ctx.state = (ctx.state or 0) + by
    return ctx.state


@app.workflow
async def sleeper(ctx, seconds: float) -> str:
    await ctx.sleep(timedelta(seconds=seconds))
    ctx.emit("wake-log-" + os.environ["SF_TEST_APP"], ctx.workflow_id, {"woke": True})
    return "woke"


@app.workflow
async def waiter(ctx, _: None) -> object:
    await ctx.step(record, "before wait")
    return await ctx.wait_signal("go")


@app.workflow
async def changing(ctx, _: None) -> str:
    first = record if VARIANT == "a" else other
    await ctx.step(first, "x")
    await ctx.wait_signal("next")
    return "done"


@app.workflow
async def saga(ctx, counter: str) -> str:
    await ctx.step(bump, counter, 5)
    ctx.compensate(bump, counter, -5)
    await ctx.wait_signal("finish")
    return "finished"


@app.workflow(name="versioned", version=1)
async def versioned_v1(ctx, _: None) -> str:
    await ctx.wait_signal("go")
    return "v1"


if VARIANT == "b":

    @app.workflow(name="versioned", version=2)
    async def versioned_v2(ctx, _: None) -> str:
        await ctx.wait_signal("go")
        return "v2"
