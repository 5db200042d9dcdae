"""Cancellation stops work, and every instance reaches an end: through the in-process driver.

The saga here is the README's transfer (a fee debit, the principal debit, credits; each
compensation registered after its step returns), with failures injected per call so a test
decides which attempt fails. Money is checked against a plain recomputation: the total across
accounts never changes, and nothing changes after an instance reports a final status.
"""

from __future__ import annotations

from datetime import timedelta

from streamflow import App
from streamflow.testing import TestDriver
from streamflow.workflow.api import Cancelled, Exponential, NonRetryable, Retry, StepFailed
from streamflow.workflow.messages import is_cancel
from streamflow.workflow.orchestrator import PARKED_COUNT

FAIL: dict[tuple[str, str, int], int] = {}
"""(step, idempotency key, attempt) → fail that attempt with a transient error."""
CALLS: list[tuple[str, str, int]] = []


class Broke(NonRetryable):
    pass


def _saga(name: str = "bank") -> App:
    app = App(name)
    retry = Retry(backoff=Exponential(1.0, 30.0, jitter=0))

    def flaky(ctx, step: str) -> None:
        CALLS.append((step, ctx.idempotency_key, ctx.attempt))
        if (step, ctx.idempotency_key, ctx.attempt) in FAIL:
            raise ConnectionError(f"{step} unavailable")

    @app.step(entity="accounts", retry=retry)
    def debit(ctx, account: str, amount: int) -> int:
        flaky(ctx, "debit")
        balance = ctx.state or 0
        if balance < amount:
            raise Broke(f"{account} has {balance}")
        ctx.state = balance - amount
        return ctx.state

    @app.step(entity="accounts", retry=retry)
    def credit(ctx, account: str, amount: int) -> int:
        flaky(ctx, "credit")
        ctx.state = (ctx.state or 0) + amount
        return ctx.state

    @app.workflow
    async def transfer(ctx, t: dict) -> str:
        fee = 10
        await ctx.step(debit, t["source"], fee)
        ctx.compensate(credit, t["source"], fee)
        await ctx.step(debit, t["source"], t["amount"])
        ctx.compensate(credit, t["source"], t["amount"])
        if t.get("approval"):
            await ctx.wait_signal("approved")
        await ctx.step(credit, t["target"], t["amount"])
        ctx.compensate(debit, t["target"], t["amount"])
        await ctx.step(credit, "fees", fee)
        return "done"

    @app.workflow
    async def open_account(ctx, o: dict) -> int:
        return await ctx.step(credit, o["account"], o["deposit"])

    app.transfer = transfer  # type: ignore[attr-defined]
    app.open_account = open_account  # type: ignore[attr-defined]
    return app


def _timers(driver: TestDriver, workflow: str) -> dict:
    """The workflow's pending timers, but the retention timers of finished instances."""
    return {
        k: v for k, v in driver.store(f"{workflow}-timers").items() if v["timer"] != "retention"
    }


def _driver(app: App, **kw) -> TestDriver:
    FAIL.clear()
    CALLS.clear()
    driver = TestDriver(app, partitions=2, **kw)
    wf = driver.workflows
    for account in ("alice", "bob"):
        wf.start(
            app.open_account, id=f"open-{account}", input={"account": account, "deposit": 1000}
        )
    return driver


def test_cancel_during_a_retry_backoff_deletes_the_retry_and_refunds_everything() -> None:
    app = _saga()
    with _driver(app) as driver:
        wf = driver.workflows
        FAIL[("debit", "t1:2", 1)] = 1  # the principal debit fails once, transiently
        wf.start(app.transfer, id="t1", input={"source": "alice", "target": "bob", "amount": 500})
        entry = wf.get(app.transfer, "t1").entries[2]
        assert entry["status"] == "pending" and entry["timer_due"]  # waiting for its retry
        wf.cancel(app.transfer, "t1")
        view = wf.get(app.transfer, "t1")
        assert view.status == "cancelled"
        driver.advance_time(3_600_000)  # the retry would have been due long ago
        assert [c for c in CALLS if c[1] == "t1:2"] == [("debit", "t1:2", 1)]
        assert driver.store("accounts") == {"alice": 1000, "bob": 1000}
        assert _timers(driver, "transfer") == {}
        assert wf.get(app.transfer, "t1").status == "cancelled"


def test_cancel_raises_cancelled_at_the_await_and_new_calls_send_nothing() -> None:
    app = App("cleanup")
    audit = app.topic("audit")

    @app.step
    def work(ctx, n: int) -> int:
        CALLS.append(("work", ctx.idempotency_key, ctx.attempt))
        return n

    @app.workflow
    async def flow(ctx, _: None) -> str:
        try:
            await ctx.sleep(timedelta(days=1))
        except Cancelled:
            ctx.emit(audit, "flow", "cleaned up")
            try:
                await ctx.step(work, 1)  # no new work after a cancel
            except Cancelled:
                ctx.emit(audit, "flow", "second cancel seen")
            raise
        return "slept"

    CALLS.clear()
    with TestDriver(app) as driver:
        driver.workflows.start(flow, id="f")
        driver.workflows.cancel(flow, "f")
        view = driver.workflows.get(flow, "f")
        assert view.status == "cancelled"
        assert [v for _, v in driver.read("audit")] == ["cleaned up", "second cancel seen"]
        assert CALLS == [] and driver.messages("cleanup.step.work") == []
        assert _timers(driver, "flow") == {}
        # A second cancel, and a signal, to the ended instance change nothing.
        driver.workflows.cancel(flow, "f")
        driver.workflows.signal(flow, "f", "late")
        assert driver.workflows.get(flow, "f").header == view.header | {
            "updated_ms": view.header["updated_ms"]
        }
        assert driver.dead_letters() == []


def test_a_step_answer_that_arrives_after_the_cancel_is_recorded_and_compensated() -> None:
    """The instance waits for the attempt in flight: its success is journaled, the
    compensation the workflow registers after it runs, and only then is it cancelled."""
    app = _saga("late")
    with _driver(app) as driver:
        wf = driver.workflows
        wf.start(
            app.transfer,
            id="t2",
            input={"source": "alice", "target": "bob", "amount": 300, "approval": True},
        )
        assert wf.get(app.transfer, "t2").status == "running"  # waits for its approval
        # Both debits landed before the cancel; the cancel ends the signal wait at once.
        wf.cancel(app.transfer, "t2")
        view = wf.get(app.transfer, "t2")
        assert view.status == "cancelled"
        assert driver.store("accounts") == {"alice": 1000, "bob": 1000}
        assert [e["status"] for e in view.entries if e["kind"] == "signal"] == ["cancelled"]


def test_the_orchestrator_sends_a_step_cancel_for_an_attempt_in_flight() -> None:
    """Driven at the transition: an attempt in flight gets a StepCancel keyed like its command,
    and the instance stays ``cancelling`` until the attempt answers."""
    from streamflow.workflow.journal import Journal
    from streamflow.workflow.messages import Cancel, Start, StepResult
    from streamflow.workflow.transition import WorkflowMachine

    app = _saga("machine")
    node = app.workflows.node_of("transfer")
    machine = WorkflowMachine("transfer", node.versions, node.steps, node.topics, "events", 0)
    started = machine.apply(
        None, Start("t", {"source": "alice", "target": "bob", "amount": 5}), 1_000
    )
    journal: Journal = started.journal  # type: ignore[assignment]
    assert [cmd.seq for _, cmd in started.commands] == [0]
    cancelled = machine.apply(journal, Cancel("t"), 2_000)
    assert journal.status == "cancelling" and cancelled.commands == []
    [(sdef, cancel, key)] = cancelled.step_cancels
    assert (sdef.name, cancel.seq, cancel.attempt, key) == ("debit", 0, 1, "alice")
    assert is_cancel(cancel.to_json())
    # The debit succeeded anyway: recorded, its compensation registered and run.
    answered = machine.apply(journal, StepResult("t", 0, 1, 990, 1), 3_000)
    assert journal.status == "compensating"
    assert [(s.name, c.args) for s, c in answered.commands] == [("credit", ["alice", 10])]
    comp = answered.commands[0][1]
    machine.apply(journal, StepResult("t", comp.seq, 1, 1000, 1), 4_000)
    assert journal.status == "cancelled"


def test_workflow_timeout_cancels_and_fails_with_workflow_timed_out() -> None:
    app = App("timeouts")

    @app.step
    def book(ctx, n: int) -> int:
        return n

    @app.step
    def unbook(ctx, n: int) -> None:
        CALLS.append(("unbook", ctx.idempotency_key, n))

    @app.workflow(timeout=timedelta(hours=1))
    async def trip(ctx, _: None) -> str:
        await ctx.step(book, 1)
        ctx.compensate(unbook, 1)
        await ctx.wait_signal("paid")
        return "booked"

    CALLS.clear()
    with TestDriver(app) as driver:
        driver.workflows.start(trip, id="t")
        driver.advance_time(3_599_999)
        assert driver.workflows.get(trip, "t").status == "running"
        driver.advance_time(1)
        view = driver.workflows.get(trip, "t")
        assert view.status == "compensated"
        assert view.header["error"]["type"] == "WorkflowTimedOut"
        assert [c[0] for c in CALLS] == ["unbook"]
        assert _timers(driver, "trip") == {}
        # A workflow that ends in time leaves no timeout timer behind.
        driver.workflows.start(trip, id="u")
        driver.workflows.signal(trip, "u", "paid")
        assert driver.workflows.get(trip, "u").status == "completed"
        assert _timers(driver, "trip") == {}


def test_schedule_to_close_ends_endless_retries() -> None:
    app = App("s2c")

    @app.step(schedule_to_close=timedelta(seconds=30))
    def always_down(ctx) -> None:
        CALLS.append(("down", ctx.idempotency_key, ctx.attempt))
        raise ConnectionError("still down")

    @app.workflow
    async def flow(ctx, _: None) -> str:
        try:
            await ctx.step(always_down)
        except StepFailed as exc:
            return f"gave up: {exc.error_type}"
        return "ok"

    CALLS.clear()
    with TestDriver(app) as driver:
        driver.workflows.start(flow, id="f")
        for _ in range(40):
            driver.advance_time(1_000)
        view = driver.workflows.get(flow, "f")
        assert view.status == "completed" and view.result == "gave up: ScheduleToCloseTimeout"
        # Attempts at 0, 1, 3, 7 and 15 s (backoffs ± 20 %) all start within the 30 s; the
        # sixth, at 31 s ± 6 s, may; a seventh (63 s) cannot.
        assert 5 <= len(CALLS) <= 6
        assert _timers(driver, "flow") == {}


def test_default_retry_rides_out_an_outage_with_jittered_backoff() -> None:
    app = App("outage")
    down_until = 60_000

    @app.step
    def call(ctx) -> str:
        CALLS.append(("call", ctx.idempotency_key, ctx.attempt))
        if driver.now_ms - start < down_until:
            raise ConnectionError("dependency down")
        return "up"

    @app.workflow
    async def flow(ctx, _: None) -> str:
        return await ctx.step(call)

    CALLS.clear()
    driver = TestDriver(app)
    with driver:
        start = driver.now_ms
        driver.workflows.start(flow, id="a")
        for _ in range(200):
            driver.advance_time(1_000)
        view = driver.workflows.get(flow, "a")
        assert view.status == "completed" and view.result == "up"
        [entry] = view.entries
        gaps = [t["retry_at"] - t["finished_ms"] for t in entry["attempts"] if "retry_at" in t]
        for attempt, gap in enumerate(gaps, start=1):
            base = min(100_000, 1_000 * 2 ** (attempt - 1))
            assert 0.8 * base <= gap <= 1.2 * base
        assert len(gaps) >= 5


def test_signals_to_an_ended_instance_are_dropped_and_the_inbox_is_bounded(monkeypatch) -> None:
    from streamflow.workflow import transition

    monkeypatch.setattr(transition, "INBOX_LIMIT", 3)
    app = App("inbox")

    @app.workflow
    async def flow(ctx, _: None) -> str:
        await ctx.wait_signal("go")
        return "went"

    with TestDriver(app) as driver:
        driver.workflows.start(flow, id="f")
        for n in range(3):
            driver.workflows.signal(flow, "f", "other", n)
        assert driver.dead_letters() == []
        driver.workflows.signal(flow, "f", "other", 4)  # a fourth unread one is refused
        [dead] = driver.dead_letters()
        assert b"unread signals" in dict(dead.headers())["streamflow.error"]
        driver.workflows.signal(flow, "f", "go")
        assert driver.workflows.get(flow, "f").status == "completed"
        before = driver.workflows.get(flow, "f").header
        driver.workflows.signal(flow, "f", "go")
        assert driver.workflows.get(flow, "f").header == before
        assert len(driver.dead_letters()) == 1


def test_a_bug_in_workflow_code_suspends_and_new_code_runs_it_again(tmp_path) -> None:
    def build(fixed: bool) -> App:
        app = App("bug")

        @app.step
        def fetch(ctx) -> dict:
            return {"total": 7}

        if fixed:

            @app.workflow
            async def flow(ctx, _: None) -> int:
                got = await ctx.step(fetch)
                return got.get("count", got["total"])

        else:

            @app.workflow
            async def flow(ctx, _: None) -> int:
                got = await ctx.step(fetch)
                return got["count"]  # the bug: a KeyError

        app.flow = flow  # type: ignore[attr-defined]
        return app

    broken = build(False)
    with TestDriver(broken, state_dir=tmp_path) as driver:
        driver.workflows.start(broken.flow, id="i")
        view = driver.workflows.get(broken.flow, "i")
        assert view.status == "suspended" and view.header["error"]["type"] == "KeyError"
        assert driver.store("flow-counts") == {"running": 0, "suspended": 1}
        driver.advance_time(10)
        assert driver.workflows.get(broken.flow, "i").status == "suspended"
    fixed = build(True)
    with TestDriver(fixed, state_dir=tmp_path) as driver:
        driver.advance_time(0)  # the task's first punctuation: new code, run it again
        view = driver.workflows.get(fixed.flow, "i")
        assert view.status == "completed" and view.result == 7
        assert driver.store("flow-parked") == {}
        assert driver.store("flow-counts") == {"suspended": 0, "running": 0, "completed": 1}


def test_workflows_fail_ends_a_suspended_instance_for_good() -> None:
    app = App("giveup")

    @app.workflow
    async def flow(ctx, _: None) -> None:
        raise RuntimeError("bug")

    with TestDriver(app) as driver:
        driver.workflows.start(flow, id="x")
        assert driver.workflows.get(flow, "x").status == "suspended"
        driver.workflows.fail(flow, "x", "nobody will fix this")
        view = driver.workflows.get(flow, "x")
        assert view.status == "failed" and view.header["error"]["type"] == "Terminated"
        driver.workflows.resume(flow, "x")  # too late: nothing happens
        assert driver.workflows.get(flow, "x").status == "failed"


def test_events_for_a_version_this_worker_lacks_are_parked_until_one_has_it(tmp_path) -> None:
    def build(versions: tuple[int, ...]) -> App:
        app = App("upgrade")

        @app.step
        def echo(ctx, s: str) -> str:
            return s

        if 1 in versions:

            @app.workflow(name="greet", version=1)
            async def greet_v1(ctx, name: str) -> str:
                await ctx.wait_signal("go")
                return f"v1 {name}"

        if 2 in versions:

            @app.workflow(name="greet", version=2)
            async def greet_v2(ctx, name: str) -> str:
                payload = await ctx.wait_signal("go")
                return await ctx.step(echo, f"v2 {name} {payload}")

        return app

    new = build((1, 2))
    with TestDriver(new, state_dir=tmp_path) as driver:
        driver.workflows.start("greet", id="g", input="ann")  # pinned to v2
    old = build((1,))  # a v1 worker takes the partition during the rollout
    with TestDriver(old, state_dir=tmp_path) as driver:
        driver.workflows.signal("greet", "g", "go", "hi")
        driver.workflows.signal("greet", "g", "other", "later")
        assert driver.workflows.get("greet", "g").status == "running"
        assert driver.store("greet-counts")[PARKED_COUNT] == 2
        assert driver.dead_letters() == []
    with TestDriver(new, state_dir=tmp_path) as driver:
        driver.advance_time(0)
        view = driver.workflows.get("greet", "g")
        assert view.status == "completed" and view.result == "v2 ann hi"
        assert view.header["signals"] == {"other": ["later"]}
        assert driver.store("greet-counts")[PARKED_COUNT] == 0
        assert driver.store("greet-parked") == {}


def test_an_outcome_that_cannot_be_written_leaves_no_cached_journal_ahead(monkeypatch) -> None:
    from streamflow.workflow import orchestrator

    app = App("ahead")

    @app.workflow
    async def flow(ctx, _: None) -> int:
        first = await ctx.wait_signal("a")
        second = await ctx.wait_signal("b")
        return first + second

    real = orchestrator.Orchestrator._apply
    calls = {"n": 0}

    def failing_once(self, outcome):
        calls["n"] += 1
        if calls["n"] == 2:  # writing the first signal's outcome fails
            raise ValueError("the outcome cannot be written")
        return real(self, outcome)

    monkeypatch.setattr(orchestrator.Orchestrator, "_apply", failing_once)
    with TestDriver(app) as driver:
        driver.workflows.start(flow, id="f")
        driver.workflows.signal(flow, "f", "a", 1)  # dead-lettered, nothing of it kept
        assert len(driver.dead_letters()) == 1
        driver.workflows.signal(flow, "f", "a", 2)
        driver.workflows.signal(flow, "f", "b", 3)
        view = driver.workflows.get(flow, "f")
        assert view.status == "completed" and view.result == 5


def test_compensations_of_a_cancelled_instance_still_retry_until_they_succeed() -> None:
    app = _saga("comp-retry")
    with _driver(app) as driver:
        wf = driver.workflows
        wf.start(
            app.transfer,
            id="t3",
            input={"source": "alice", "target": "bob", "amount": 200, "approval": True},
        )
        # The refund of the principal (the first compensation to run) fails twice.
        base = 1_000_000_000
        FAIL[("credit", f"t3:{base}", 1)] = 1
        FAIL[("credit", f"t3:{base}", 2)] = 1
        wf.cancel(app.transfer, "t3")
        assert wf.get(app.transfer, "t3").status == "compensating"
        driver.advance_time(1_000)
        driver.advance_time(2_000)
        view = wf.get(app.transfer, "t3")
        assert view.status == "cancelled"
        assert driver.store("accounts") == {"alice": 1000, "bob": 1000}
        assert [c[2] for c in CALLS if c[1] == f"t3:{base}"] == [1, 2, 3]


def test_oversize_step_arguments_or_result_suspend_the_instance_instead_of_stranding_it() -> None:
    app = App("big", max_payload_bytes=2_000_000)

    @app.step
    def store_doc(ctx, doc: str) -> int:
        return len(doc)

    @app.workflow
    async def sends_big(ctx, _: None) -> int:
        return await ctx.step(store_doc, "x" * 3_000_000)

    @app.workflow
    async def returns_big(ctx, _: None) -> str:
        return "y" * 3_000_000

    with TestDriver(app) as driver:
        driver.workflows.start(sends_big, id="a")
        driver.workflows.start(returns_big, id="b")
        for workflow, ident, what in ((sends_big, "a", "arguments"), (returns_big, "b", "result")):
            view = driver.workflows.get(workflow, ident)
            assert view.status == "suspended", (ident, view.header)
            error = view.header["error"]
            assert error["type"] == "PayloadTooLarge" and what in error["message"]
            assert "over the limit of" in error["message"]
            assert "App(max_payload_bytes=...)" in error["message"]
        assert driver.dead_letters() == []
        assert driver.messages("big.step.store_doc") == []


def test_finished_instances_are_deleted_after_their_retention_and_the_id_is_free_again() -> None:
    app = App("retention")

    @app.workflow(retention=timedelta(days=1))
    async def short(ctx, n: int) -> int:
        await ctx.sleep(timedelta(hours=1))
        return n

    @app.workflow(retention=None)
    async def forever(ctx, n: int) -> int:
        return n

    day = 86_400_000
    with TestDriver(app) as driver:
        wf = driver.workflows
        wf.start(short, id="s", input=1)
        wf.start(forever, id="f", input=2)
        driver.advance_time(3_600_000)
        assert wf.get(short, "s").result == 1
        wf.start(short, id="s", input=9)  # within the retention: an idempotent start
        driver.advance_time(day - 1)
        assert wf.get(short, "s").result == 1
        driver.advance_time(1)
        assert wf.get(short, "s") is None
        assert driver.store("short-instances") == {} and _timers(driver, "short") == {}
        assert driver.store("short-counts") == {"running": 0, "completed": 0}
        driver.advance_time(365 * day)
        assert wf.get(forever, "f").result == 2
        wf.purge(forever, "f")
        assert wf.get(forever, "f") is None
        # The id is free again: a new instance.
        wf.start(short, id="s", input=3)
        driver.advance_time(3_600_000)
        assert wf.get(short, "s").result == 3
        wf.purge(short, "s")  # before its retention: its retention timer goes with it
        assert wf.get(short, "s") is None and driver.store("short-timers") == {}
        driver.advance_time(2 * day)
        assert driver.dead_letters() == []


def test_purge_leaves_a_running_instance_alone() -> None:
    app = App("purge")

    @app.workflow
    async def waits(ctx, _: None) -> str:
        return await ctx.wait_signal("go")

    with TestDriver(app) as driver:
        driver.workflows.start(waits, id="w")
        driver.workflows.purge(waits, "w")
        assert driver.workflows.get(waits, "w").status == "running"
        driver.workflows.signal(waits, "w", "go", "ok")
        assert driver.workflows.get(waits, "w").result == "ok"
