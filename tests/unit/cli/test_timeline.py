"""``workflows show``'s timeline says what happened: failed attempts, cancelled waits,
compensations named and numbered as they ran."""

from __future__ import annotations

from datetime import timedelta

from streamflow import App
from streamflow.cli.workflows import timeline
from streamflow.testing import TestDriver
from streamflow.workflow.api import Exponential, Retry

TRIES: dict[str, int] = {}


def test_the_timeline_shows_attempts_cancelled_waits_and_compensations() -> None:
    app = App("tl")

    @app.step(retry=Retry(attempts=5, backoff=Exponential(1, 5, jitter=0)))
    def reserve(ctx, item: str) -> str:
        TRIES[item] = TRIES.get(item, 0) + 1
        if TRIES[item] < 3:
            raise ConnectionError(f"stock service down ({TRIES[item]})")
        return f"r-{item}"

    @app.step
    def release(ctx, reservation: str) -> None:
        pass

    @app.workflow
    async def order(ctx, item: str) -> str:
        reservation = await ctx.step(reserve, item)
        ctx.compensate(release, reservation)
        await ctx.wait_signal("paid", timeout=timedelta(hours=1))
        return "done"

    TRIES.clear()
    with TestDriver(app) as driver:
        driver.workflows.start(order, id="o", input="lamp")
        driver.advance_time(10_000)  # the retries
        driver.workflows.cancel(order, "o")
        view = driver.workflows.get(order, "o")
        assert view.status == "cancelled"
        text = "\n".join(timeline("order", view))
    assert "attempt 1 failed: ConnectionError: stock service down (1)" in text
    assert "attempt 2 failed: ConnectionError: stock service down (2)" in text
    assert "wait for signal 'paid' cancelled" in text
    assert "#C1" in text and "compensation: step release" in text
    assert "waiting for signal" not in text
