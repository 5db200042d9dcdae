"""A small app for the client tests: a one-step workflow and one that waits for a signal."""

import os
from datetime import timedelta

from streamflow import App
from streamflow.workflow.api import NonRetryable

app = App(os.environ.get("SF_TEST_APP", "client-app"), partitions=3)


@app.step
def measure(ctx, text: str) -> int:
    return len(text)


@app.workflow
async def sized(ctx, text: str) -> int:
    ctx.set_attributes(length="long" if len(text) >= 10 else "short")
    return await ctx.step(measure, text)


@app.workflow
async def gated(ctx, _: None) -> str:
    go = await ctx.wait_signal("go", timeout=timedelta(minutes=5))
    return f"went {go}"


@app.step
def refuse(ctx, why: str) -> None:
    raise NonRetryable(why)


@app.workflow
async def refused(ctx, why: str) -> None:
    await ctx.step(refuse, why)


@app.workflow(retention=timedelta(seconds=3))
async def brief(ctx, n: int) -> int:
    """Finished instances of this one are deleted 3 s after they end (the retention soak)."""
    return await ctx.step(measure, "x" * n)
