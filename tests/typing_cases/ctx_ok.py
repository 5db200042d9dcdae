"""Typed use of the workflow API: mypy must accept all of it (tests/unit/test_typed_api.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import assert_type

from streamflow import App, EntityContext, StepContext, WorkflowContext

app = App("typed")


@dataclass
class Order:
    id: str
    cents: int


@app.step
def charge(ctx: StepContext, order: Order, attempt_note: str) -> int:
    return order.cents


@app.step(entity="stock")
async def reserve(ctx: StepContext, sku: str, count: int) -> bool:
    return count > 0


@app.workflow
async def checkout(ctx: WorkflowContext, order: Order) -> str:
    charged = await ctx.step(charge, order, "first")
    assert_type(charged, int)
    reserved = await ctx.step(reserve, "sku-1", 2)  # an async def step: its awaited result
    assert_type(reserved, bool)
    ctx.compensate(charge, order, "refund")
    return f"{order.id}: {charged}"


@dataclass
class Stock:
    sku: str
    count: int


@app.step(entity="stock")
def take(ctx: EntityContext[Stock], count: int) -> int:
    stock = ctx.state
    assert_type(stock, Stock | None)
    left = (stock.count if stock is not None else 0) - count
    ctx.state = Stock(ctx.entity or "", left)
    return left


@app.workflow
async def restock(ctx: WorkflowContext, count: int) -> int:
    return await ctx.step(take, count)
