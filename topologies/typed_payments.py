"""A typed workflow: with ``ctx`` annotated, mypy checks each step call against the step.

The README's "Typed" example is this file, from its first import on, so that the example users
copy is one a type checker has read: ``make lint`` (which CI runs) type-checks ``topologies/``
with ``mypy --strict``, ``tests/unit/test_readme.py`` holds the README to this file, and
``tests/unit/workflow/test_typed_payments.py`` runs it in the test driver.

    streamflow run topologies/typed_payments.py --state-dir .state/t1
    streamflow workflows start topologies/typed_payments.py pay p-1 \\
        '{"account": "acct-1", "amount": 2500}'
"""

from __future__ import annotations

from dataclasses import dataclass

from streamflow import App, NonRetryable, StepContext, WorkflowContext

app = App("typed-payments")
LIMIT = 10_000  # the cents an account may spend


class OverLimit(NonRetryable):
    """No retry raises the limit: the workflow fails at once."""


@dataclass
class Payment:
    account: str
    amount: int  # cents


@app.step(entity="accounts")  # ctx.state: what this account has spent so far
def debit(ctx: StepContext, account: str, amount: int) -> int:
    spent: int = (ctx.state or 0) + amount
    if spent > LIMIT:
        raise OverLimit(f"{account} would spend {spent} of {LIMIT}")
    ctx.state = spent
    return LIMIT - spent


@app.workflow
async def pay(ctx: WorkflowContext, payment: Payment) -> str:
    account, amount = payment.account, payment.amount
    left = await ctx.step(debit, account, amount)  # an int; ctx.step(debit, account): mypy error
    return f"{account} paid {amount}, {left} left"
