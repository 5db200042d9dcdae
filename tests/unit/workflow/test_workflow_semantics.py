"""Workflow semantics through the driver: retries on timers, signals, determinism, versions."""

from __future__ import annotations

from datetime import timedelta

import pytest

from streamflow import App
from streamflow.testing import TestDriver
from streamflow.workflow.api import Exponential, NonRetryable, Retry, StepFailed

CALLS: list[tuple[str, int, str]] = []


def _app() -> App:
    CALLS.clear()
    app = App("wf")
    app.topic("audit")

    @app.step(retry=Retry(attempts=4, backoff=Exponential(1.0, 10.0, jitter=0)))
    def flaky(ctx, n: int) -> int:
        CALLS.append(("flaky", ctx.attempt, ctx.idempotency_key))
        if ctx.attempt < 3:
            raise ConnectionError("service unavailable")
        return n * 10

    @app.step
    def refuse(ctx, n: int) -> int:
        CALLS.append(("refuse", ctx.attempt, ctx.idempotency_key))
        raise NonRetryable("never")

    @app.workflow
    async def retrying(ctx, n: int) -> int:
        return await ctx.step(flaky, n)

    @app.workflow
    async def catching(ctx, n: int) -> str:
        try:
            await ctx.step(refuse, n)
        except StepFailed as exc:
            return f"caught {exc.error_type}"
        return "unreachable"

    @app.workflow
    async def sleeper(ctx, _: None) -> str:
        started = ctx.now()
        await ctx.sleep(timedelta(hours=1))
        ctx.emit("audit", "sleeper", {"slept_from": started.isoformat()})
        return "woke"

    @app.workflow
    async def waits_twice(ctx, _: None) -> list:
        first = await ctx.wait_signal("go")
        second = await ctx.wait_signal("go")
        return [first, second]

    @app.workflow
    async def counter(ctx, n: int) -> int:
        if n < 3:
            ctx.continue_as_new(n + 1)
        return n

    app.retrying, app.catching, app.sleeper, app.waits_twice, app.counter = (  # type: ignore[attr-defined]
        retrying,
        catching,
        sleeper,
        waits_twice,
        counter,
    )
    app.flaky = flaky  # type: ignore[attr-defined]
    return app


def test_step_retries_on_durable_timers_with_backoff_and_one_idempotency_key() -> None:
    app = _app()
    with TestDriver(app) as driver:
        driver.workflows.start(app.retrying, id="r1", input=7)
        assert [c[1] for c in CALLS] == [1]
        driver.advance_time(999)
        assert [c[1] for c in CALLS] == [1]  # backoff 1 s not yet over
        driver.advance_time(1)
        assert [c[1] for c in CALLS] == [1, 2]
        driver.advance_time(2000)  # exponential: 2 s for the third attempt
        assert [c[1] for c in CALLS] == [1, 2, 3]
        assert {c[2] for c in CALLS} == {"r1:0"}
        view = driver.workflows.get(app.retrying, "r1")
        assert view.status == "completed" and view.result == 70


def test_non_retryable_failure_raises_in_the_workflow_which_may_catch_it() -> None:
    app = _app()
    with TestDriver(app) as driver:
        driver.workflows.start(app.catching, id="c", input=1)
        assert driver.workflows.get(app.catching, "c").result == "caught NonRetryable"
        assert len(CALLS) == 1


def test_durable_sleep_wakes_once_and_emit_is_transactional_output() -> None:
    app = _app()
    with TestDriver(app) as driver:
        driver.workflows.start(app.sleeper, id="s")
        driver.advance_time(3_599_999)
        assert driver.workflows.get(app.sleeper, "s").status == "running"
        driver.advance_time(1)
        driver.advance_time(10_000_000)
        assert driver.workflows.get(app.sleeper, "s").result == "woke"
        assert len(driver.read("audit")) == 1


def test_signals_sent_before_the_wait_are_kept_in_order() -> None:
    app = _app()
    with TestDriver(app) as driver:
        driver.pipe(
            app.workflows.events_topic(app.waits_twice),
            "w",
            {"type": "start", "id": "w", "input": None},
        )
        driver.workflows.signal(app.waits_twice, "w", "go", 1)
        driver.workflows.signal(app.waits_twice, "w", "go", 2)
        assert driver.workflows.get(app.waits_twice, "w").result == [1, 2]
        driver.workflows.start(app.waits_twice, id="early")
        # signals to an instance that does not exist yet go to the DLQ, not into a void
        driver.workflows.signal(app.waits_twice, "nobody", "go", 3)
        assert len(driver.dead_letters()) == 1


def test_continue_as_new_restarts_with_a_fresh_journal() -> None:
    app = _app()
    with TestDriver(app) as driver:
        driver.workflows.start(app.counter, id="n", input=0)
        view = driver.workflows.get(app.counter, "n")
        assert view.result == 3 and view.header["run"] == 4


def test_changed_code_without_new_version_suspends_the_instance_until_resumed(tmp_path) -> None:
    def build(order: str) -> App:
        app = App("nd")

        @app.step
        def a(ctx, x: int) -> int:
            return x

        @app.step
        def b(ctx, x: int) -> int:
            return x

        first, second = (a, b) if order == "ab" else (b, a)

        @app.workflow
        async def flow(ctx, x: int) -> int:
            await ctx.step(first, x)
            await ctx.wait_signal("next")
            return await ctx.step(second, x)

        app.flow = flow  # type: ignore[attr-defined]
        return app

    old = build("ab")
    with TestDriver(old, state_dir=tmp_path) as driver:
        driver.workflows.start(old.flow, id="i", input=1)
        assert driver.workflows.get(old.flow, "i").status == "running"
    new = build("ba")  # a deploy that swapped the steps but kept version 1
    driver = TestDriver(new, state_dir=tmp_path)
    try:
        driver.workflows.signal(new.flow, "i", "next")
        view = driver.workflows.get(new.flow, "i")
        assert view.status == "suspended"
        assert view.header["error"]["type"] == "NonDeterminism"
        assert "call #0 is now step 'b'" in view.header["error"]["message"]
        assert "NonDeterminism" in view.header["error"]["stack"]
        # The signal was journaled while suspended: nothing it carried is lost.
        assert [e["status"] for e in view.entries] == ["done", "done"]
    finally:
        driver.close()
    fixed = build("ab")  # the fix is deployed; an operator resumes the instance
    with TestDriver(fixed, state_dir=tmp_path) as driver:
        driver.workflows.resume(fixed.flow, "i")
        view = driver.workflows.get(fixed.flow, "i")
        assert view.status == "completed" and view.result == 1
        assert "error" not in view.header


def test_two_versions_run_side_by_side_and_instances_stay_pinned() -> None:
    app = App("versions")

    @app.workflow(name="greet", version=1)
    async def greet_v1(ctx, name: str) -> str:
        await ctx.wait_signal("go")
        return f"hello {name}"

    @app.workflow(name="greet", version=2)
    async def greet_v2(ctx, name: str) -> str:
        await ctx.wait_signal("go")
        return f"HELLO {name.upper()}"

    with TestDriver(app) as driver:
        driver.workflows.start("greet", id="old", input="ada", version=1)
        driver.workflows.start("greet", id="new", input="bob")
        driver.workflows.signal("greet", "old", "go")
        driver.workflows.signal("greet", "new", "go")
        assert driver.workflows.get("greet", "old").result == "hello ada"
        assert driver.workflows.get("greet", "new").result == "HELLO BOB"
        assert driver.workflows.get("greet", "new").header["version"] == 2


def test_workflow_started_from_a_stream_once_per_record() -> None:
    app = App("from-stream")
    orders = app.topic("orders")

    @app.workflow
    async def fulfil(ctx, order: dict) -> str:
        return f"shipped {order['sku']}"

    app.stream(orders).filter(lambda o: o["paid"]).start_workflow(fulfil, id=lambda o: o["id"])
    with TestDriver(app) as driver:
        driver.pipe("orders", "o1", {"id": "o1", "sku": "lamp", "paid": True})
        driver.pipe("orders", "o2", {"id": "o2", "sku": "desk", "paid": False})
        driver.pipe("orders", "o1", {"id": "o1", "sku": "lamp", "paid": True})  # redelivered
        assert driver.workflows.get(fulfil, "o1").result == "shipped lamp"
        assert driver.workflows.get(fulfil, "o2") is None


def test_unregistered_step_is_a_clear_error_in_the_instance() -> None:
    app = App("bad")

    def not_a_step(ctx) -> None: ...

    @app.workflow
    async def broken(ctx, _: None) -> None:
        await ctx.step(not_a_step)

    with TestDriver(app) as driver:
        driver.workflows.start(broken, id="b")
        view = driver.workflows.get(broken, "b")
        assert (
            view.status == "suspended"
            and "not a registered step" in view.header["error"]["message"]
        )


@pytest.mark.parametrize("partitions", [1, 4])
def test_many_instances_interleave_without_blocking_each_other(partitions: int) -> None:
    app = _app()
    with TestDriver(app, partitions=partitions) as driver:
        for i in range(20):
            driver.workflows.start(app.retrying, id=f"r{i}", input=i)
        driver.workflows.start(app.catching, id="c", input=1)
        assert driver.workflows.get(app.catching, "c").status == "completed"  # not blocked
        for _ in range(3):
            driver.advance_time(3_000)  # each retry is scheduled from the time the last failed
        assert all(driver.workflows.get(app.retrying, f"r{i}").result == i * 10 for i in range(20))
