"""Money transfers as a durable saga over accounts held in Kafka — exactly once, end to end.

Accounts are *entities*: ``debit`` and ``credit`` are entity steps keyed by account id, so each
account's balance lives in one task's store and changes exactly once with its command. A
transfer is a workflow: fraud check (retried with backoff), human approval by signal for large
amounts, a fee, then the principal. When funds are short the saga compensates: the fee is
refunded. Cancelling a transfer at any point (waiting for approval, in a retry backoff, while a
debit runs) stops it and runs the compensations of what already moved.

    streamflow run topologies/payments.py --state-dir .state/p1        # one or more workers
    streamflow workflows start topologies/payments.py transfer t-1 \\
        '{"id": "t-1", "source": "acct-1", "target": "acct-2", "amount": 250}'
    streamflow workflows show topologies/payments.py transfer t-1

``make demo`` runs thousands of transfers with a worker killed mid-way and checks the books.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from streamflow import App, StepContext, WorkflowContext
from streamflow.workflow.api import Exponential, NonRetryable, Retry, SignalTimeout

app = App(os.environ.get("PAYMENTS_APP", "payments"))  # env: run several copies on one cluster

FEE_ACCOUNT = "fees"
APPROVAL_LIMIT = 10_000
FAILURE_RATE = float(os.environ.get("PAYMENTS_FAILURE_RATE", "0"))
"""Chaos for demos and tests: the share of step attempts that fail with a transient error."""
LEDGER_LATENCY = float(os.environ.get("PAYMENTS_LEDGER_LATENCY", "0"))
SCORING_LATENCY = float(os.environ.get("PAYMENTS_SCORING_LATENCY", "0"))
"""Seconds each ledger / scoring call waits, standing in for the services' round trips."""


def _injected_failure(ctx: StepContext, what: str) -> None:
    # Seeded by idempotency key and attempt, so a replayed attempt fails (or not) the same way.
    if (
        FAILURE_RATE
        and random.Random(f"{ctx.idempotency_key}/{ctx.attempt}").random() < FAILURE_RATE
    ):
        raise ConnectionError(f"{what} unavailable (injected failure)")


@dataclass
class Transfer:
    id: str
    source: str
    target: str
    amount: int  # cents: money is never a float


@dataclass
class Receipt:
    transfer_id: str
    status: str  # completed | rejected | insufficient_funds | expired
    fee: int = 0


class InsufficientFunds(NonRetryable):
    """No retry will make the money appear."""


LEDGER_RETRY = Retry(attempts=10, backoff=Exponential(0.05, 2))


@app.step(entity="accounts", retry=LEDGER_RETRY)
def credit(ctx: StepContext, account: str, amount: int) -> int:
    time.sleep(LEDGER_LATENCY)
    balance: int = (ctx.state or 0) + amount  # ctx.state: this account's balance in cents
    ctx.state = balance
    _injected_failure(ctx, "ledger")  # after the write: a failed attempt's write must not stick
    return balance


@app.step(entity="accounts", retry=LEDGER_RETRY)
def debit(ctx: StepContext, account: str, amount: int) -> int:
    time.sleep(LEDGER_LATENCY)
    balance: int = ctx.state or 0
    if balance < amount:
        raise InsufficientFunds(f"account {account} has {balance}, needs {amount}")
    balance -= amount
    ctx.state = balance
    _injected_failure(ctx, "ledger")
    return balance


@app.step(retry=Retry(attempts=5, backoff=Exponential(0.2, 30)), timeout=timedelta(seconds=10))
def fraud_check(ctx: StepContext, t: Transfer) -> str:
    """Stands in for a call to a scoring service (which would get ctx.idempotency_key)."""
    time.sleep(SCORING_LATENCY)
    _injected_failure(ctx, "fraud scoring")
    return "reject" if t.source == t.target else "ok"


def fee_for(amount: int) -> int:
    return max(1, amount // 100)


@app.workflow(version=1)
async def transfer(ctx: WorkflowContext, t: Transfer) -> Receipt:
    if await ctx.step(fraud_check, t) == "reject":
        return Receipt(t.id, "rejected")
    if t.amount > APPROVAL_LIMIT:
        try:
            await ctx.wait_signal("approved", timeout=timedelta(days=2))
        except SignalTimeout:
            return Receipt(t.id, "expired")
    fee = fee_for(t.amount)
    try:
        await ctx.step(debit, t.source, fee)
    except InsufficientFunds:
        return Receipt(t.id, "insufficient_funds")  # nothing moved yet: nothing to undo
    ctx.compensate(credit, t.source, fee)  # refunded if anything below fails for good
    await ctx.step(debit, t.source, t.amount)  # InsufficientFunds fails the saga: fee refunded
    ctx.compensate(credit, t.source, t.amount)
    await ctx.step(credit, FEE_ACCOUNT, fee)
    # Registered after each step returns, so a cancel at any point undoes exactly what moved.
    # The fee account only ever receives, so taking a fee back from it cannot fail.
    ctx.compensate(debit, FEE_ACCOUNT, fee)
    # The target is credited last: once it has the money the transfer is done, so no
    # compensation ever has to take money back from an account that may have spent it.
    await ctx.step(credit, t.target, t.amount)
    return Receipt(t.id, "completed", fee)


@app.workflow(version=1)
async def open_account(ctx: WorkflowContext, opening: dict[str, Any]) -> int:
    """Fund a new account; a second open with the same id is a no-op (idempotent start).

    ``opening`` is the JSON object a client sends, ``{"account": str, "deposit": int}``. It is
    annotated as a dict, not a TypedDict, because the input check at start (``serde/typed.py``)
    refuses anything but a JSON object for a dict and would let anything through for a
    TypedDict; its fields get their types here, so the ``credit`` call below is checked."""
    account: str = opening["account"]
    deposit: int = opening["deposit"]
    return await ctx.step(credit, account, deposit)
