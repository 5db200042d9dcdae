"""Misuses mypy must reject (tests/unit/test_typed_api.py reads the expected errors from the
``# error:`` comments: each line so marked must get an error, and no other line)."""

from __future__ import annotations

from streamflow import App, StepContext, WorkflowContext

app = App("misused")


@app.step
def debit(ctx: StepContext, account: str, cents: int) -> int:
    return cents


@app.workflow
async def transfer(ctx: WorkflowContext, cents: int) -> str:
    await ctx.step(debit, "acct-1")  # error: a missing argument
    await ctx.step(debit, "acct-1", "ten")  # error: a str where an int is declared
    await ctx.step(debit, 42, cents)  # error: an int where a str is declared
    balance: str = await ctx.step(debit, "acct-1", cents)  # error: the result is an int
    ctx.compensate(debit, "acct-1")  # error: a compensation's arguments are checked too
    return str(balance)
