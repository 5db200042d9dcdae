"""Cancelling step attempts (``StepCancel`` on the step topic), through the driver: real step
threads, a real asyncio loop, real RocksDB stores.

The orchestrator writes a cancel keyed like the command it cancels; these tests write it
themselves, read from the command they find on the step topic. ``pipe(..., settle=False)``
starts an attempt without waiting for it, so a cancel can meet it while it runs.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any

import orjson
import pytest

from streamflow import App
from streamflow.testing import TestDriver
from streamflow.workflow.api import Cancelled, Retry, StepFailed
from streamflow.workflow.messages import Start, StepCancel, StepCommand, dumps


def _start(driver: TestDriver, workflow: str, instance: str, value: Any = None) -> None:
    """Start an instance without waiting for the step attempts it starts."""
    topic = f"{driver.app.name}.{workflow}.events"
    driver.pipe(topic, instance, Start(instance, value).to_json(), settle=False)


def _commands(driver: TestDriver, step: str) -> list[tuple[bytes, StepCommand]]:
    topic = f"{driver.app.name}.step.{step}"
    return [
        (m.key() or b"", StepCommand.from_json(orjson.loads(m.value() or b"")))
        for m in driver.messages(topic)
        if b'"cancel"' not in (m.value() or b"")
    ]


def _cancel(driver: TestDriver, step: str, instance: str, *, settle: bool = True) -> None:
    """Write the cancel the orchestrator would: the command's key, the command's identity."""
    key, command = next((k, c) for k, c in _commands(driver, step) if c.id == instance)
    cancel = StepCancel(command.workflow, command.id, command.seq, command.attempt, command.run)
    driver.pipe_raw(f"{driver.app.name}.step.{step}", key, dumps(cancel.to_json()), settle=settle)


def _failures(driver: TestDriver, workflow: str) -> dict[str, dict[str, Any]]:
    replies = [
        orjson.loads(m.value() or b"{}")
        for m in driver.messages(f"{driver.app.name}.{workflow}.events")
    ]
    return {r["id"]: r for r in replies if r.get("type") == "step_failed"}


def _wait_for(condition: Any, what: str, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def test_a_running_async_attempt_is_cancelled_and_its_slot_keeps_serving_the_lane() -> None:
    app = App("async-cancel")
    started: list[str] = []

    # A timeout too: the slot's own asyncio.timeout must tell its expiry from the cancel.
    @app.step(max_concurrency=1, retry=Retry(attempts=3), timeout=timedelta(hours=2))
    async def wait(ctx, seconds: float) -> str:
        started.append(ctx.workflow_id)
        await asyncio.sleep(seconds)
        return "woke"

    @app.workflow
    async def w(ctx, seconds: float) -> str:
        try:
            return await ctx.step(wait, seconds)
        except Cancelled as exc:
            assert isinstance(exc, StepFailed)
            return f"cancelled: {exc.message}"

    with TestDriver(app) as driver:
        _start(driver, "w", "long", 3600)
        _wait_for(lambda: started == ["long"], "the attempt to start")
        began = time.monotonic()
        _cancel(driver, "wait", "long", settle=False)
        driver.settle(timeout=5)  # the attempt ends at its await, not in an hour
        took = time.monotonic() - began
        view = driver.workflows.get(w, "long")
        failure = _failures(driver, "w")["long"]
        # The lane has one slot: the next attempt runs only if the cancelled slot survived.
        _start(driver, "w", "short", 0.001)
        driver.settle(timeout=5)
        assert driver.workflows.get(w, "short").result == "woke"
    assert took < 2.0
    assert view.status == "completed" and view.result.startswith("cancelled: ")
    assert "cancelled while it ran" in view.result
    assert failure["retryable"] is False and failure["error"]["type"] == "Cancelled"


@pytest.mark.parametrize("ends", ["check", "return"])
def test_a_running_sync_attempt_sees_ctx_cancelled(ends: str) -> None:
    app = App(f"sync-cancel-{ends}")
    running = threading.Event()

    @app.step
    def poll(ctx) -> str:
        running.set()
        deadline = time.monotonic() + 10
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.002)
        if ends == "check":
            ctx.check_cancelled()
        return "stopped early, effect kept"

    @app.workflow
    async def w(ctx, _: None) -> str:
        try:
            return await ctx.step(poll)
        except Cancelled:
            return "cancelled"

    with TestDriver(app) as driver:
        _start(driver, "w", "i")
        assert running.wait(5)
        began = time.monotonic()
        _cancel(driver, "poll", "i", settle=False)
        driver.settle(timeout=5)
        took = time.monotonic() - began
        result = driver.workflows.get(w, "i").result
    assert took < 2.0
    # Stopped by the cancel: Cancelled. Returned despite it: the result stands.
    assert result == ("cancelled" if ends == "check" else "stopped early, effect kept")


def test_an_attempt_waiting_for_its_entity_key_is_answered_without_running() -> None:
    app = App("key-cancel")
    release = threading.Event()
    ran: list[str] = []

    @app.step(entity="accounts")
    def post(ctx, account: str, amount: int) -> int:
        ran.append(ctx.workflow_id)
        release.wait(10)
        ctx.state = (ctx.state or 0) + amount
        return ctx.state

    @app.workflow
    async def w(ctx, amount: int) -> str:
        try:
            return str(await ctx.step(post, "acc", amount))
        except Cancelled:
            return "cancelled"

    with TestDriver(app) as driver:
        _start(driver, "w", "first", 5)
        _start(driver, "w", "second", 7)  # waits: "first" holds the key
        _wait_for(lambda: ran == ["first"], "the first attempt to start")
        _cancel(driver, "post", "second", settle=False)
        # Answered at once, while "first" still holds the key.
        assert driver.workflows.get(w, "second").result == "cancelled"
        assert _failures(driver, "w")["second"]["retryable"] is False
        _start(driver, "w", "third", 11)  # the key is handed on past the cancelled command
        release.set()
        driver.settle(timeout=5)
        assert driver.workflows.get(w, "first").result == "5"
        assert driver.workflows.get(w, "third").result == "16"
        assert driver.store("accounts") == {"acc": 16}
    assert ran == ["first", "third"]


def test_an_attempt_waiting_in_its_lane_is_answered_without_running() -> None:
    app = App("lane-cancel")
    release = threading.Event()
    ran: list[str] = []

    @app.step(max_concurrency=2)
    def slow(ctx) -> str:
        ran.append(ctx.workflow_id)
        release.wait(10)
        return "done"

    @app.workflow
    async def w(ctx, _: None) -> str:
        try:
            return await ctx.step(slow)
        except Cancelled:
            return "cancelled"

    with TestDriver(app) as driver:
        _start(driver, "w", "a")
        _wait_for(lambda: ran == ["a"], "the first attempt to start")
        _start(driver, "w", "c")
        _wait_for(lambda: sorted(ran) == ["a", "c"], "the second attempt to start")
        # Both slots are taken: "b" waits in the lane (one waiting of a limit of two, so the
        # partition is not paused and the cancel behind it is read).
        _start(driver, "w", "b")
        _cancel(driver, "slow", "b", settle=False)
        assert driver.workflows.get(w, "b").result == "cancelled"
        release.set()
        driver.settle(timeout=5)
        assert driver.workflows.get(w, "a").result == "done"
        assert driver.step_executor.in_flight == 0
    assert sorted(ran) == ["a", "c"]


def test_a_cancel_that_finds_no_attempt_changes_nothing() -> None:
    app = App("late-cancel")

    @app.step
    def quick(ctx) -> int:
        return 1

    @app.workflow
    async def w(ctx, _: None) -> int:
        return await ctx.step(quick)

    with TestDriver(app) as driver:
        driver.workflows.start(w, id="q")
        replies = len(driver.messages("late-cancel.w.events"))
        _cancel(driver, "quick", "q")  # answered already
        _cancel(driver, "quick", "q")  # and a duplicate
        assert len(driver.messages("late-cancel.w.events")) == replies
        assert driver.dead_letters() == []
        assert driver.workflows.get(w, "q").result == 1
        step_task = next(t for t in driver._all_tasks if "late-cancel.step.quick" in t.sources)
        runner_offsets = step_task.offsets
        # The cancels are passed like finished commands: nothing holds the partition back.
        log_end = len(driver.messages("late-cancel.step.quick"))
        assert runner_offsets.committable("late-cancel.step.quick", log_end) == log_end
