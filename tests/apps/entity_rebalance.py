"""Entity steps in flight while a worker joins, for the rebalance test on a real broker.

``deposit`` and ``withdraw`` share the ``accounts`` store, so one sub-topology reads both step
topics (the case the classic protocol can only rebalance eagerly). Each attempt appends
``<pid> <idempotency key>`` to SF_ATTEMPT_LOG when it starts, then waits until the file
SF_GATE exists (the test creates it once the new worker has its tasks): so every attempt is
still running while the group rebalances.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from streamflow import App

NAME = os.environ["SF_TEST_APP"]
ATTEMPT_LOG = Path(os.environ["SF_ATTEMPT_LOG"])
GATE = Path(os.environ["SF_GATE"])

app = App(NAME, partitions=4)
done = app.topic(f"done-{NAME}", partitions=1)


def _started(ctx) -> None:
    with open(ATTEMPT_LOG, "a") as log:  # one short O_APPEND write per line: never interleaved
        log.write(f"{os.getpid()} {ctx.idempotency_key}\n")
    deadline = time.monotonic() + 120
    while not GATE.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@app.step(entity="accounts")
def deposit(ctx, account: str, amount: int) -> int:
    _started(ctx)
    ctx.state = (ctx.state or 0) + amount
    return ctx.state


@app.step(entity="accounts")
def withdraw(ctx, account: str, amount: int) -> int:
    _started(ctx)
    ctx.state = (ctx.state or 0) - amount
    return ctx.state


@app.workflow
async def pay(ctx, account: str) -> int:
    balance = await ctx.step(deposit, account, 1)
    ctx.emit(done, ctx.workflow_id, balance)
    return balance
