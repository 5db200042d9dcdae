"""Misuses mypy must reject: tests/unit/test_typed_api.py expects an error on each line whose
comment starts with "error", and on no other line."""

from __future__ import annotations

from streamflow import App, EntityContext, StepContext, WorkflowContext

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


@app.step(entity="counter")
def bump(ctx: EntityContext[int], by: int) -> int:
    ctx.state = "one"  # error: the entity's state is an int
    now: int = ctx.state  # error: None until the entity has a value
    return now + by
