"""``TestDriver.advance_time``: one call lets time pass in order, as it would for a worker."""

from __future__ import annotations

from datetime import timedelta

from streamflow import App
from streamflow.testing import TestDriver
from streamflow.workflow.api import Exponential, Retry, SignalTimeout

ATTEMPTS: list[int] = []


def test_one_jump_gets_through_retries_and_a_signal_timeout() -> None:
    app = App("jump")

    @app.step(retry=Retry(attempts=4, backoff=Exponential(1, 10, jitter=0)))
    def flaky(ctx) -> str:
        ATTEMPTS.append(ctx.attempt)
        if ctx.attempt < 4:
            raise ConnectionError("down")
        return "up"

    @app.workflow
    async def flow(ctx, _: None) -> str:
        state = await ctx.step(flaky)
        try:
            await ctx.wait_signal("go", timeout=timedelta(seconds=20))
        except SignalTimeout:
            return f"{state}, no signal"
        return f"{state}, signalled"

    ATTEMPTS.clear()
    with TestDriver(app) as driver:
        driver.workflows.start(flow, id="f")
        # Retries at 1, 3 and 7 s, then a 20 s wait: all inside one 30 s jump.
        driver.advance_time(30_000)
        view = driver.workflows.get(flow, "f")
        assert (view.status, view.result) == ("completed", "up, no signal")
        assert ATTEMPTS == [1, 2, 3, 4]


def test_a_late_jump_fires_what_is_due_at_its_end_only() -> None:
    app = App("late")

    @app.workflow
    async def naps(ctx, _: None) -> int:
        for _ in range(3):
            await ctx.sleep(timedelta(seconds=10))
        return 3

    with TestDriver(app) as driver:
        driver.workflows.start(naps, id="n")
        driver.advance_time(35_000, late=True)  # one sleep ends; the next starts from now
        assert driver.workflows.get(naps, "n").status == "running"
        driver.advance_time(25_000)
        assert driver.workflows.get(naps, "n").result == 3
