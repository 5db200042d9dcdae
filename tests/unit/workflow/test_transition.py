"""The workflow transition without a task, and the orchestrator bugs it fixed (each test failed
before its fix)."""

from __future__ import annotations

import itertools
from datetime import timedelta

from streamflow import App
from streamflow.operate.dead_letter_format import HEADER_ERROR, HEADER_STAGE
from streamflow.testing import TestDriver
from streamflow.workflow.api import Retry
from streamflow.workflow.journal import RUNNING
from streamflow.workflow.messages import Signal, Start, StepResult, TimerFired, decode_event
from streamflow.workflow.timers import SIGNAL_TIMEOUT
from streamflow.workflow.transition import WorkflowMachine


def _machine(app: App, workflow: str) -> WorkflowMachine:
    node = app.workflows.node_of(workflow)
    return WorkflowMachine(workflow, node.versions, node.steps, node.topics, node.events.name, 0)


def _order_app() -> App:
    app = App("orders")

    @app.step
    def charge(ctx, cents: int) -> str:
        return f"charged {cents}"

    @app.workflow
    async def order(ctx, cents: int) -> str:
        receipt = await ctx.step(charge, cents)
        await ctx.wait_signal("shipped", timeout=timedelta(hours=1))
        return receipt

    return app


def test_the_transition_returns_commands_and_timers_instead_of_sending_them() -> None:
    machine = _machine(_order_app(), "order")
    started = machine.apply(None, Start("o-1", 250), now_ms=1_000)
    journal = started.journal
    assert journal is not None and journal.status == RUNNING
    [(sdef, command)] = started.commands
    assert (sdef.name, command.id, command.seq, command.attempt, command.args, command.run) == (
        "charge",
        "o-1",
        0,
        1,
        [250],
        1,
    )
    assert command.idempotency_key == "o-1:0" and not started.timers

    replied = machine.apply(journal, StepResult("o-1", 0, 1, "charged 250", run=1), now_ms=2_000)
    assert not replied.commands
    [timer] = replied.timers
    assert (timer.due_ms, timer.kind, timer.seq, timer.run) == (
        2_000 + 3_600_000,
        SIGNAL_TIMEOUT,
        1,
        1,
    )

    shipped = machine.apply(journal, Signal("o-1", "shipped"), now_ms=3_000)
    assert shipped.cancelled_timers == [timer.__class__(timer.due_ms, "o-1", 1, SIGNAL_TIMEOUT)]
    assert journal.status == "completed" and journal.header["result"] == "charged 250"


def test_replies_and_timers_of_another_run_are_dropped() -> None:
    machine = _machine(_order_app(), "order")
    journal = machine.apply(None, Start("o-1", 1), now_ms=0).journal
    stale = machine.apply(journal, StepResult("o-1", 0, 1, "from run 0", run=7), now_ms=1)
    assert journal.entries[0]["status"] == "pending" and not stale.commands and not stale.timers


def test_a_replay_from_the_journal_alone_gives_the_same_commands() -> None:
    app = _order_app()
    hot = _machine(app, "order")
    journal = hot.apply(None, Start("o-1", 5), now_ms=0).journal
    hot.apply(journal, StepResult("o-1", 0, 1, "charged 5", run=1), now_ms=1)
    cold = _machine(app, "order")  # no live coroutine: replays from the journal
    out = cold.apply(journal, TimerFired("o-1", 1, SIGNAL_TIMEOUT, run=1), now_ms=2)
    assert journal.status == "failed" and journal.header["error"]["type"] == "SignalTimeout"
    assert not out.commands


def test_events_are_typed_records_with_a_clear_error_for_bad_ones() -> None:
    assert decode_event({"type": "signal", "id": "x", "name": "go"}) == Signal("x", "go")
    for bad, words in (
        ([1], "JSON object"),
        ({"type": "nope", "id": "x"}, "unknown workflow event"),
        ({"type": "step_result", "id": "x"}, "malformed"),
    ):
        try:
            decode_event(bad)
        except Exception as exc:  # noqa: BLE001
            assert words in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")


def test_timers_of_the_previous_run_do_not_fire_into_the_next_one() -> None:
    app = App("runs")
    woke: list[int] = []

    @app.workflow
    async def loop(ctx, n: int) -> int:
        if n == 0:
            ctx.sleep(timedelta(hours=1))  # run 1 arms a timer at seq 0 and moves on
            ctx.continue_as_new(1)
        await ctx.sleep(timedelta(hours=2))  # run 2: seq 0 sleeps two hours
        woke.append(n)
        return n

    with TestDriver(app) as driver:
        driver.workflows.start(loop, id="l", input=0)
        assert driver.workflows.get(loop, "l").header["run"] == 2
        driver.advance_time(3_600_001)  # run 1's timer would be due now
        view = driver.workflows.get(loop, "l")
        assert view.status == "running" and view.entries[0]["status"] == "pending"
        assert not woke
        driver.advance_time(3_600_000)
        assert driver.workflows.get(loop, "l").status == "completed" and woke == [1]


def test_a_signal_deletes_the_timeout_timer_of_its_wait() -> None:
    app = App("timeouts")

    @app.workflow
    async def approve(ctx, _: None) -> str:
        await ctx.wait_signal("approved", timeout=timedelta(days=2))
        await ctx.sleep(timedelta(days=30))
        return "ok"

    with TestDriver(app) as driver:
        driver.workflows.start(approve, id="a")
        assert len(driver.store("approve-timers")) == 1
        driver.workflows.signal(approve, "a", "approved")
        timers = list(driver.store("approve-timers").values())
        assert [t["timer"] for t in timers] == ["sleep"], "only the sleep is left"


def test_a_due_timer_whose_transition_raises_is_dead_lettered_not_swallowed(tmp_path) -> None:
    def app_with(step_name: str) -> App:
        app = App("redeploy")

        def flaky(ctx) -> None:
            raise ConnectionError("down")

        app.step(flaky, name=step_name, retry=Retry(attempts=3))

        @app.workflow
        async def w(ctx, _: None) -> None:
            await ctx.step(flaky)

        return app

    with TestDriver(app_with("flaky"), state_dir=tmp_path) as driver:
        driver.workflows.start("w", id="x")
        assert driver.workflows.get("w", "x").entries[0]["attempt"] == 2  # a retry timer waits
    # Redeployed without the step: the retry timer cannot send its command.
    with TestDriver(app_with("renamed"), state_dir=tmp_path) as driver:
        driver.advance_time(60_000)
        (dead,) = driver.dead_letters()
        headers = dict(dead.headers())
        assert headers[HEADER_STAGE] == b"timer"
        assert b"flaky" in headers[HEADER_ERROR] and b"not registered" in headers[HEADER_ERROR]
        assert decode_event(__import__("orjson").loads(dead.value())) == TimerFired(
            "x", 0, "retry", 1
        )


def test_a_dead_lettered_event_leaves_no_change_for_a_later_transition() -> None:
    app = App("evict")

    @app.step
    def book(ctx) -> str:
        return "booked"

    @app.step
    def unbook(ctx) -> str:
        return "unbooked"

    @app.workflow
    async def trip(ctx, _: None) -> str:
        await ctx.step(book)
        ctx.compensate(unbook)
        await ctx.wait_signal("finish")
        return "finished"

    steps = app.workflows.steps
    with TestDriver(app) as driver:
        driver.workflows.start(trip, id="t")
        # A redeploy lost the compensation step: the cancel cannot run it and is dead-lettered.
        removed = {k: steps.pop(k) for k in [k for k, v in steps.items() if v.name == "unbook"]}
        driver.workflows.cancel(trip, "t")
        assert len(driver.dead_letters()) == 1
        steps.update(removed)
        # The cancel never happened: the instance is still running and finishes normally.
        driver.workflows.signal(trip, "t", "finish")
        view = driver.workflows.get(trip, "t")
    assert view.status == "completed" and view.result == "finished"
    assert "cancel_requested" not in view.header


def test_each_attempt_of_a_step_is_kept_with_its_span_error_and_retry_time(tmp_path) -> None:
    app = App("attempts")
    calls = {"n": 0}

    def flaky(ctx) -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError(f"down #{calls['n']}")
        return "up"

    app.step(flaky, retry=Retry(attempts=5))

    @app.workflow
    async def w(ctx, _: None) -> str:
        return await ctx.step(flaky)

    with TestDriver(app, state_dir=tmp_path) as driver:
        driver.workflows.start("w", id="x")
        driver.advance_time(60_000)
        driver.advance_time(60_000)
        view = driver.workflows.get("w", "x")
    assert view.status == "completed" and view.result == "up"
    tried = view.entries[0]["attempts"]
    assert [(t["attempt"], t["outcome"]) for t in tried] == [
        (1, "failed"),
        (2, "failed"),
        (3, "ok"),
    ]
    assert "down #1" in tried[0]["error"]["message"] and "down #2" in tried[1]["error"]["message"]
    for earlier, later in itertools.pairwise(tried):
        # a retry starts when its timer fires, which is no earlier than the time it was due
        assert earlier["retry_at"] <= later["started_ms"] <= later["finished_ms"]
    assert all(t["started_ms"] <= t["finished_ms"] for t in tried)
