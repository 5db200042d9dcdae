"""Signals declared with a Python type: the client refuses a payload that does not fit before
sending it (naming the field), the worker refuses one that reaches it anyway (a dead letter
naming the field; the instance keeps waiting), and ``ctx.wait_signal`` returns the type."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streamflow import App
from streamflow.operate.dead_letter_format import HEADER_ERROR
from streamflow.serde.typed import ValueMismatch
from streamflow.testing import TestDriver


@dataclass
class Approval:
    by: str
    amount: int


def _app() -> App:
    app = App("typed-signals")

    @app.workflow(signals={"approve": Approval, "count": int})
    async def payout(ctx, _: None) -> str:
        approval = await ctx.wait_signal("approve")
        assert isinstance(approval, Approval)
        extra = await ctx.wait_signal("count")
        return f"{approval.by} approved {approval.amount + extra}"

    return app


def test_a_fitting_payload_arrives_as_the_declared_type() -> None:
    with TestDriver(_app()) as driver:
        wf = driver.workflows
        wf.start("payout", id="p1")
        wf.signal("payout", "p1", "approve", {"by": "ana", "amount": 40})
        wf.signal("payout", "p1", "count", 2)
        assert wf.get("payout", "p1").result == "ana approved 42"


def test_a_payload_that_does_not_fit_is_refused_at_the_client_naming_the_field() -> None:
    with TestDriver(_app()) as driver:
        wf = driver.workflows
        wf.start("payout", id="p1")
        sent = len(driver.messages("typed-signals.payout.events"))
        with pytest.raises(ValueMismatch, match=r"signal 'approve' of payout 'p1'.*amount"):
            wf.signal("payout", "p1", "approve", {"by": "ana", "amount": "forty"})
        with pytest.raises(ValueMismatch, match="signal 'count'"):
            wf.signal("payout", "p1", "count", "two")
        assert len(driver.messages("typed-signals.payout.events")) == sent  # nothing sent
        assert wf.get("payout", "p1").status == "running"


def test_a_payload_that_reaches_the_worker_anyway_is_dead_lettered_and_the_wait_goes_on() -> None:
    with TestDriver(_app()) as driver:
        wf = driver.workflows
        wf.start("payout", id="p1")
        driver.pipe(
            "typed-signals.payout.events",
            "p1",
            {"type": "signal", "id": "p1", "name": "approve", "payload": {"by": "ana"}},
        )
        (dead,) = driver.dead_letters()
        reason = dict(dead.headers())[HEADER_ERROR].decode()
        assert "signal 'approve'" in reason and "amount" in reason
        assert wf.get("payout", "p1").status == "running"
        wf.signal("payout", "p1", "approve", {"by": "bo", "amount": 1})
        wf.signal("payout", "p1", "count", 0)
        assert wf.get("payout", "p1").result == "bo approved 1"
