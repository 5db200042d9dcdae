"""Edge cases of cancellation, termination, parking and sizes (found in review): each failed
on the first version of those features."""

from __future__ import annotations

from datetime import timedelta

from streamflow import App
from streamflow.testing import TestDriver
from streamflow.workflow import transition
from streamflow.workflow.api import Exponential, NonRetryable, Retry
from streamflow.workflow.messages import (
    Cancel,
    Start,
    StepError,
    StepFailure,
    StepResult,
    Terminate,
    TimerFired,
)
from streamflow.workflow.transition import WorkflowMachine


# 2. a parked Start (explicit version this worker lacks) is unparked by the next event of
#    that id and fails with UnknownVersion on the worker that lacks the version.
def test_signal_after_parked_start_does_not_fail_it(tmp_path) -> None:
    def build(versions):
        app = App("upg")
        if 1 in versions:

            @app.workflow(name="greet", version=1)
            async def g1(ctx, name: str) -> str:
                return "v1"

        if 2 in versions:

            @app.workflow(name="greet", version=2)
            async def g2(ctx, name: str) -> str:
                return await ctx.wait_signal("go")

        return app

    old = build((1,))
    new = build((1, 2))
    with TestDriver(old, state_dir=tmp_path) as driver:
        driver.pipe("upg.greet.events", "g", Start("g", "ann", 2).to_json())
        assert driver.workflows.get("greet", "g") is None  # parked
        driver.workflows.signal("greet", "g", "go", "hi")
        view = driver.workflows.get("greet", "g")
        assert view is None or view.status != "failed", view.header
    with TestDriver(new, state_dir=tmp_path) as driver:
        driver.advance_time(0)
        view = driver.workflows.get("greet", "g")
        assert view.status == "completed" and view.result == "hi"


# 3. continue_as_new: the workflow timeout timer carries run 1 and is dropped in run 2.
def test_workflow_timeout_survives_continue_as_new() -> None:
    app = App("can")

    @app.workflow(timeout=timedelta(hours=1))
    async def loop(ctx, n: int) -> int:
        if n == 0:
            ctx.continue_as_new(1)
        await ctx.wait_signal("never")
        return n

    with TestDriver(app) as driver:
        driver.workflows.start(loop, id="l", input=0)
        assert driver.workflows.get(loop, "l").header["run"] == 2
        driver.advance_time(2 * 3_600_000)
        view = driver.workflows.get(loop, "l")
        assert view.status != "running", "the workflow timeout never fired in run 2"


def _machine(app, name):
    node = app.workflows.node_of(name)
    return WorkflowMachine(name, node.versions, node.steps, node.topics, "events", 0)


# 4. a workflow that fails (not cancelled) while a parallel own step is in flight: that step's
#    retryable failure is retried during compensating -> a new command after the function ended.
def test_no_new_own_attempt_after_the_workflow_failed() -> None:
    app = App("par")
    retry = Retry(backoff=Exponential(1.0, 30.0, jitter=0))

    @app.step(retry=retry)
    def book(ctx) -> int:
        return 1

    @app.step(retry=retry)
    def unbook(ctx) -> None:
        return None

    @app.step(retry=retry)
    def slow(ctx) -> int:
        return 1

    @app.step(retry=retry)
    def bad(ctx) -> int:
        raise NonRetryable("no")

    @app.workflow
    async def flow(ctx, _: None) -> None:
        await ctx.step(book)
        ctx.compensate(unbook)
        s = ctx.step(slow)
        b = ctx.step(bad)
        await b
        await s

    m = _machine(app, "flow")
    o = m.apply(None, Start("i"), 1_000)
    j = o.journal
    o = m.apply(j, StepResult("i", 0, 1, 1, 1), 2_000)
    assert sorted(c.seq for _, c in o.commands) == [2, 3]
    o = m.apply(j, StepFailure("i", 3, 1, StepError("NonRetryable", "no"), False, 1), 3_000)
    assert j.status == "compensating"
    assert [c.seq for _, c, _k in o.step_cancels] == [2]
    # the slow attempt failed transiently before its cancel reached it
    o = m.apply(j, StepFailure("i", 2, 1, StepError("ConnectionError", "x"), True, 1), 3_100)
    o2 = m.apply(j, TimerFired("i", 2, "retry", 1), 10_000) if o.timers else None
    sent = [(s.name, c.attempt) for s, c in o2.commands] if o2 else []
    assert not o.timers and not sent


# 5. Terminate (workflows fail) while a compensation is in flight: its retryable failure is
#    retried, the instance reports failed, and the retry sends a command after the final status.
def test_terminate_during_compensation_sends_nothing_after_final() -> None:
    app = App("term")
    retry = Retry(backoff=Exponential(1.0, 30.0, jitter=0))

    @app.step(retry=retry)
    def book(ctx) -> int:
        return 1

    @app.step(retry=retry)
    def unbook(ctx) -> None:
        return None

    @app.workflow
    async def flow(ctx, _: None) -> None:
        await ctx.step(book)
        ctx.compensate(unbook)
        await ctx.wait_signal("go")

    m = _machine(app, "flow")
    j = m.apply(None, Start("i"), 1_000).journal
    m.apply(j, StepResult("i", 0, 1, 1, 1), 2_000)
    o = m.apply(j, Cancel("i"), 3_000)
    assert j.status == "compensating"
    [(_, comp)] = o.commands
    m.apply(j, Terminate("i", "stop"), 4_000)
    o = m.apply(j, StepFailure("i", comp.seq, 1, StepError("ConnectionError", "x"), True, 1), 5_000)
    o = m.apply(j, TimerFired("i", comp.seq, "retry", 1), 9_000)
    sent = [(s.name, c.attempt) for s, c in o.commands]
    assert not (j.status == "failed" and sent)


# 6. schedule_to_close passing while an attempt runs: the workflow sees "Cancelled", not
#    ScheduleToCloseTimeout.
def test_deadline_during_running_attempt_reports_schedule_to_close() -> None:
    app = App("s2c")

    @app.step(schedule_to_close=timedelta(seconds=30))
    def long(ctx) -> int:
        return 1

    @app.workflow
    async def flow(ctx, _: None) -> str:
        try:
            await ctx.step(long)
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}:{exc.error_type}"
        return "ok"

    m = _machine(app, "flow")
    j = m.apply(None, Start("i"), 1_000).journal
    o = m.apply(j, TimerFired("i", 0, "step_deadline", 1), 31_000)
    assert o.step_cancels
    m.apply(
        j,
        StepFailure(
            "i",
            0,
            1,
            StepError(
                "Cancelled", "cancelled while it ran", "streamflow.workflow.api", "Cancelled"
            ),
            False,
            1,
        ),
        31_100,
    )
    assert j.header.get("result") == "StepFailed:ScheduleToCloseTimeout", j.header.get("result")


# 7. an event that is dead-lettered after it unparked older events: the record's rollback
#    restores the parked events in the store, but parked_ids forgot them -> stranded, and
#    newer events overtake them (the start-up recheck skips them too).
def test_parked_events_survive_a_dead_lettered_event(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(transition, "INBOX_LIMIT", 1)

    def build(versions):
        app = App("park")
        if 1 in versions:

            @app.workflow(name="w", version=1)
            async def w1(ctx, _: None) -> list:
                return []

        if 2 in versions:

            @app.workflow(name="w", version=2)
            async def w2(ctx, _: None) -> list:
                await ctx.sleep(timedelta(hours=1))
                return [await ctx.wait_signal("a"), await ctx.wait_signal("a")]

        return app

    new, old = build((1, 2)), build((1,))
    with TestDriver(new, state_dir=tmp_path) as d:
        d.workflows.start("w", id="g")  # v2
    with TestDriver(old, state_dir=tmp_path) as d:
        d.workflows.signal("w", "g", "a", 1)  # parked
        assert len(d.store("w-parked")) == 1
    with TestDriver(new, state_dir=tmp_path) as d:
        d.workflows.signal("w", "g", "a", 2)  # unparks a=1, then a=2 overflows the inbox
        assert len(d.dead_letters()) == 1
        d.advance_time(3_600_000)  # start-up recheck + the sleep ends
        d.workflows.signal("w", "g", "a", 3)
        view = d.workflows.get("w", "g")
        assert d.store("w-parked") == {}, "a=1 is stranded in the parked store"
        assert view.status == "completed" and view.result == [1, 3]


def _machine(app, name):
    node = app.workflows.node_of(name)
    return WorkflowMachine(name, node.versions, node.steps, node.topics, "events", 0)


# 5b. workflows fail (Terminate) during a compensation that keeps failing transiently: the
#     compensation retries forever; the operator's fail never takes effect.
def test_terminate_stops_compensation_retries() -> None:
    app = App("term")
    retry = Retry(backoff=Exponential(1.0, 30.0, jitter=0))

    @app.step(retry=retry)
    def book(ctx) -> int:
        return 1

    @app.step(retry=retry)
    def unbook(ctx) -> None:
        return None

    @app.workflow
    async def flow(ctx, _: None) -> None:
        await ctx.step(book)
        ctx.compensate(unbook)
        await ctx.wait_signal("go")

    m = _machine(app, "flow")
    j = m.apply(None, Start("i"), 1_000).journal
    m.apply(j, StepResult("i", 0, 1, 1, 1), 2_000)
    o = m.apply(j, Cancel("i"), 3_000)
    [(_, comp)] = o.commands
    m.apply(j, Terminate("i", "stop"), 4_000)
    now, attempt, sent = 5_000, 1, []
    for _ in range(5):
        o = m.apply(
            j, StepFailure("i", comp.seq, attempt, StepError("ConnectionError", "x"), True, 1), now
        )
        if not o.timers:
            break
        now = o.timers[0].due_ms
        o = m.apply(j, TimerFired("i", comp.seq, "retry", 1), now)
        sent += [(s.name, c.attempt) for s, c in o.commands]
        attempt += 1
    assert sent == [] and j.status == "failed", (j.status, sent)


def test_args_just_under_the_limit_do_not_strand_the_instance() -> None:
    app = App("edge")

    @app.step
    def store_doc(ctx, doc: str) -> int:
        return len(doc)

    @app.workflow
    async def flow(ctx, _: None) -> int:
        n = await ctx.wait_signal("go")
        return await ctx.step(store_doc, "x" * n)

    with TestDriver(app) as driver:
        limit = driver.max_record_bytes
        driver.workflows.start(flow, id="a")
        driver.workflows.signal(flow, "a", "go", limit - 10)  # check_size passes: len+4 <= limit
        view = driver.workflows.get(flow, "a")
        assert driver.dead_letters() == [], (
            "the signal was dead-lettered; the instance waits forever"
        )
        assert view.status in ("suspended", "completed")
