"""Workflows whose steps wait on I/O, for the step-execution tests on a real broker.

SF_TEST_APP names the app; SF_STEP_SLEEP is each step's wait in seconds; SF_LONG_STEP the wait
of the one long step. Every completed workflow emits one record to ``done-<app>``, in the same
transaction as its completion: the test counts them.
"""

from __future__ import annotations

import asyncio
import os
import time

from streamflow import App

NAME = os.environ["SF_TEST_APP"]
SLEEP = float(os.environ.get("SF_STEP_SLEEP", "0.05"))
LONG = float(os.environ.get("SF_LONG_STEP", "30"))

app = App(NAME, partitions=int(os.environ.get("SF_TEST_PARTITIONS", "2")))
done = app.topic(f"done-{NAME}", partitions=1)


@app.step
def reserve(ctx, n: int) -> int:
    time.sleep(SLEEP)
    return n + 1


@app.step
def charge(ctx, n: int) -> int:
    time.sleep(SLEEP)
    return n * 2


@app.step
def notify(ctx, n: int) -> int:
    time.sleep(SLEEP)
    return n - 1


@app.step
async def reserve_async(ctx, n: int) -> int:
    await asyncio.sleep(SLEEP)
    return n + 1


@app.step
async def charge_async(ctx, n: int) -> int:
    await asyncio.sleep(SLEEP)
    return n * 2


@app.step
async def notify_async(ctx, n: int) -> int:
    await asyncio.sleep(SLEEP)
    return n - 1


@app.step
def long_call(ctx, n: int) -> int:
    time.sleep(LONG)
    return n


@app.workflow
async def sync3(ctx, n: int) -> int:
    a = await ctx.step(reserve, n)
    b = await ctx.step(charge, a)
    result = await ctx.step(notify, b)
    ctx.emit(done, ctx.workflow_id, result)
    return result


@app.workflow
async def async3(ctx, n: int) -> int:
    a = await ctx.step(reserve_async, n)
    b = await ctx.step(charge_async, a)
    result = await ctx.step(notify_async, b)
    ctx.emit(done, ctx.workflow_id, result)
    return result


@app.workflow
async def long_one(ctx, n: int) -> int:
    result = await ctx.step(long_call, n)
    ctx.emit(done, ctx.workflow_id, result)
    return result


@app.step(entity="wallets")
async def hold_funds(ctx, wallet: str, amount: int) -> int:
    """A slow entity step: cancelled while it waits, its state write must never land."""
    await asyncio.sleep(LONG)
    ctx.state = (ctx.state or 0) - amount
    return ctx.state


@app.step
def polling_export(ctx, n: int) -> int:
    """A sync step that checks for a cancel between chunks of work."""
    for _ in range(int(LONG * 20)):
        ctx.check_cancelled()
        time.sleep(0.05)
    return n


@app.step(entity="wallets")
def release_funds(ctx, wallet: str, amount: int) -> int:
    ctx.state = (ctx.state or 0) + amount
    return ctx.state


@app.workflow
async def cancellable(ctx, n: int) -> str:
    await ctx.step(release_funds, f"w-{n}", 100)  # opens the wallet with 100
    exported = ctx.step(polling_export, n)
    held = await ctx.step(hold_funds, f"w-{n}", 30)
    ctx.compensate(release_funds, f"w-{n}", 30)
    await exported
    return f"held {held}"
