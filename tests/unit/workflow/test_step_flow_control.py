"""Step tasks under pressure, through the driver: backpressure per step, entity key locks that
outlive aborts, and revocation that gives up only the revoked partition's attempts.

The driver withholds the records of a partition its task paused (as a paused consumer would),
``wait=False`` leaves attempts running, and ``abort``/``revoke`` end a cycle or a task the way a
worker does: so each test reaches the state a rebalance or a failed commit leaves behind.
"""

from __future__ import annotations

import asyncio
import threading

from streamflow import App
from streamflow.runtime.partitioner import partition_for
from streamflow.runtime.step_executor import Attempt
from streamflow.testing import DriverWorkflowClient, TestDriver

SAFETY = 30.0
"""Seconds a step waits for a gate the test opens: only reached when the code under test is
wrong (then the test fails on what it observed, instead of hanging)."""


def test_a_blocked_step_pauses_only_its_own_topic_and_keeps_its_queue_within_its_limit() -> None:
    # credit and debit share an entity store, so one task reads both step topics.
    app = App("two-lanes")
    gate = threading.Event()
    debits_done: list[int] = []
    opened_by_debits: list[bool] = []

    @app.step(entity="accounts", max_concurrency=1)
    def credit(ctx, account: str, amount: int) -> int:
        opened = gate.wait(SAFETY)
        opened_by_debits.append(opened)
        gate.set()  # wrong code fails once, not once per credit
        ctx.state = (ctx.state or 0) + amount
        return ctx.state

    @app.step(entity="accounts", max_concurrency=1)
    def debit(ctx, account: str, amount: int) -> int:
        ctx.state = (ctx.state or 0) - amount
        debits_done.append(amount)
        if len(debits_done) == 30:
            gate.set()  # every debit ran while credit was blocked
        return ctx.state

    @app.workflow
    async def fan(ctx, kind: str) -> int:
        step = credit if kind == "credit" else debit
        calls = [ctx.step(step, f"{kind}-{i}", 1) for i in range(30)]
        return sum([await c for c in calls])

    with TestDriver(app) as driver:
        longest: dict[str, int] = {}
        executor = driver.step_executor
        submit = executor.submit

        def measured(attempt: Attempt) -> None:
            submit(attempt)
            lane = attempt.lane
            longest[lane.name] = max(longest.get(lane.name, 0), len(lane._waiting))

        executor.submit = measured  # type: ignore[method-assign]
        DriverWorkflowClient(driver, wait=False).start(fan, id="credits", input="credit")
        driver.workflows.start(fan, id="debits", input="debit")
        assert driver.workflows.get(fan, "debits").result == -30
        assert driver.workflows.get(fan, "credits").result == 30
    assert all(opened_by_debits) and len(opened_by_debits) == 30
    # At most max_concurrency commands wait in a lane: the paused topic's records stay on it.
    assert longest["credit"] <= 1 and longest["debit"] <= 1


def test_a_command_read_again_after_an_abort_waits_for_the_old_attempt_on_its_key() -> None:
    app = App("abort-keys")
    gate, first_started = threading.Event(), threading.Event()
    trail: list[str] = []

    @app.step(entity="accounts")
    def add(ctx, account: str, amount: int) -> int:
        n = 1 + sum(1 for e in trail if e.startswith("start"))
        trail.append(f"start {n}")
        if n == 1:
            first_started.set()
            gate.wait(SAFETY)
        ctx.state = (ctx.state or 0) + amount
        trail.append(f"end {n}")
        return ctx.state

    @app.workflow
    async def pay(ctx, account: str) -> int:
        return await ctx.step(add, account, 5)

    with TestDriver(app) as driver:
        executor = driver.step_executor
        DriverWorkflowClient(driver, wait=False).start(pay, id="p", input="acct")
        assert first_started.wait(SAFETY)
        driver.abort()  # the command is read again while its first attempt still runs
        assert executor.submitted == 1, "the command read again started beside the old attempt"
        assert trail == ["start 1"]
        gate.set()
        driver.settle()
        view = driver.workflows.get(pay, "p")
        assert view is not None and view.result == 5
        # The voided attempt's write is dropped; the one read again wrote once.
        assert driver.store("accounts") == {"acct": 5}
    assert trail == ["start 1", "end 1", "start 2", "end 2"]


def test_a_revoked_partition_cancels_its_async_attempts_and_leaves_the_others_running() -> None:
    app = App("revoke")
    started = {"a": threading.Event(), "b": threading.Event()}
    cancelled: list[str] = []
    was_cancelled, release = threading.Event(), threading.Event()

    @app.step
    async def call(ctx, who: str) -> str:
        started[who].set()
        try:
            while not release.is_set():
                await asyncio.sleep(0.005)
        except asyncio.CancelledError:
            cancelled.append(who)
            was_cancelled.set()
            raise
        return who

    @app.workflow
    async def w(ctx, who: str) -> str:
        return await ctx.step(call, who)

    ids = {"a": "a-0", "b": next(f"b-{i}" for i in range(100) if _partition(f"b-{i}") == 1)}
    ids["a"] = next(f"a-{i}" for i in range(100) if _partition(f"a-{i}") == 0)
    with TestDriver(app, partitions=2) as driver:
        client = DriverWorkflowClient(driver, wait=False)
        for who, instance in ids.items():
            client.start(w, id=instance, input=who)
        assert started["a"].wait(SAFETY) and started["b"].wait(SAFETY)
        driver.revoke(0)  # the events and the step command of "a" are on partition 0
        assert was_cancelled.wait(SAFETY), "the revoked partition's attempt kept running"
        release.set()
        driver.settle()
        view = driver.workflows.get(w, ids["b"])
        assert view is not None and view.result == "b"
    assert cancelled == ["a"]


def _partition(instance_id: str) -> int:
    return partition_for(instance_id.encode(), 2)
