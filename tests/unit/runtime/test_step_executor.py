"""The step executor under stress, through the driver (real step threads, a real loop): a hung
step keeps to its share of threads, an attempt that waits for a slot past its timeout is timed
out without running, and attempts past their timeout are listed for ``/status``."""

from __future__ import annotations

import threading
from datetime import timedelta

from streamflow import App
from streamflow.runtime.step_executor import DEFAULT_SYNC_SHARE, Attempt, AttemptId, StepExecutor
from streamflow.testing import DriverWorkflowClient, TestDriver
from streamflow.workflow.api import Retry

SAFETY = 30.0
"""Seconds a step waits for a gate the test opens: reached only when the code is wrong."""


def test_a_hung_sync_step_holds_only_its_share_of_threads_and_the_others_still_run() -> None:
    app = App("starve", step_threads=8)
    release = threading.Event()
    lock = threading.Lock()
    hung = {"now": 0, "peak": 0}
    released_by_quick: list[bool] = []

    @app.step  # no max_concurrency: the default share applies
    def hang(ctx, n: int) -> int:
        with lock:
            hung["now"] += 1
            hung["peak"] = max(hung["peak"], hung["now"])
        released_by_quick.append(release.wait(SAFETY))
        release.set()  # wrong code fails once, not once per attempt
        with lock:
            hung["now"] -= 1
        return n

    @app.step
    def quick(ctx, n: int) -> int:
        release.set()  # runs only if a thread is left for it
        return n

    @app.workflow
    async def hangs(ctx, n: int) -> int:
        return sum([await c for c in [ctx.step(hang, i) for i in range(n)]])

    @app.workflow
    async def ping(ctx, n: int) -> int:
        return await ctx.step(quick, n)

    with TestDriver(app) as driver:
        executor = driver.step_executor
        DriverWorkflowClient(driver, wait=False).start(hangs, id="hangs", input=20)
        lane = executor.lane("hang", None, is_async=False)
        while hung["now"] < lane.limit:  # every slot the hung step may have is taken
            executor.wait(0.01)
            executor.tick()
        driver.workflows.start(ping, id="ping", input=1)  # needs a thread of its own
        driver.settle()
        assert driver.workflows.get(hangs, "hangs").result == sum(range(20))
    assert all(released_by_quick) and len(released_by_quick) == 20
    assert hung["peak"] == 8 // DEFAULT_SYNC_SHARE


def test_an_attempt_waiting_for_a_slot_past_its_timeout_is_timed_out_without_running() -> None:
    app = App("queued-timeout")
    release = threading.Event()
    ran: list[int] = []

    @app.step(max_concurrency=1, timeout=timedelta(milliseconds=50), retry=Retry(attempts=1))
    def slow(ctx, n: int) -> int:
        ran.append(n)
        release.wait(SAFETY)  # holds the only slot past its own timeout
        return n

    @app.workflow
    async def w(ctx, n: int) -> list:
        calls = [ctx.step(slow, i) for i in range(n)]
        outcomes = []
        for c in calls:
            try:
                outcomes.append(await c)
            except TimeoutError as exc:
                outcomes.append(str(exc))
        return outcomes

    with TestDriver(app) as driver:
        driver.workflows.start(w, id="t", input=2)  # returns once both are answered
        result = driver.workflows.get(w, "t").result
        release.set()
        driver.advance_time(1)  # the slot frees: the timed-out attempt must still not run
    assert result[0].endswith("StepTimedOut: step 'slow' took longer than 0.05 s")
    assert result[1].endswith(
        "StepTimedOut: step 'slow' took longer than 0.05 s waiting for a slot"
    )
    assert ran == [0]


def test_an_attempt_past_its_timeout_is_listed_with_its_instance_seq_attempt_and_age() -> None:
    app = App("hung-list")
    release = threading.Event()

    @app.step(timeout=timedelta(milliseconds=20), retry=Retry(attempts=1))
    def stuck(ctx, n: int) -> int:
        release.wait(SAFETY)
        return n

    @app.step
    def fine(ctx, n: int) -> int:
        return n

    @app.workflow
    async def w(ctx, n: int) -> int:
        await ctx.step(fine, n)
        try:
            return await ctx.step(stuck, n)
        except TimeoutError:
            return -1

    with TestDriver(app) as driver:
        driver.workflows.start(w, id="h", input=1)  # answered timed out; the thread still runs
        assert driver.workflows.get(w, "h").result == -1
        listed = driver.step_executor.long_running()
        release.set()
    assert [(a.id.step, a.id.instance_id, a.id.attempt, a.past_timeout) for a in listed] == [
        ("stuck", "h", 1, True)
    ]
    assert listed[0].id.seq == 1  # the instance's second call (seq counts from 0)
    assert listed[0].timeout_seconds == 0.02 and listed[0].age_seconds > 0.02
    assert not listed[0].id.void


class _Owner:
    """Records how its attempts ended (the worker-thread side of a step task)."""

    def __init__(self) -> None:
        self.done: list[Attempt] = []

    def attempt_done(self, attempt: Attempt) -> None:
        self.done.append(attempt)

    def attempt_timed_out(self, attempt: Attempt) -> None:
        raise AssertionError("no timeout here")

    def describe(self, attempt: Attempt) -> str:
        return "test attempt"

    def identify(self, attempt: Attempt) -> AttemptId:
        return AttemptId("s", "i", 0, 1, False)


def test_a_draining_executor_never_starts_what_is_submitted_after_it_began_to_drain() -> None:
    executor = StepExecutor(threads=2)
    owner, ran = _Owner(), []
    lane = executor.lane("s", None, is_async=False)
    try:
        assert executor.forget_waiting() == 0  # the worker is stopping
        # A key handed on to a waiting command submits it now: it must not run.
        executor.submit(Attempt(lane, owner, lambda ctx: ran.append(1), None, [], None))
        assert executor.wait(SAFETY)
        executor.run_completions()
    finally:
        executor.close()
    assert ran == [] and len(owner.done) == 1
    assert owner.done[0].cancelled and owner.done[0].started_at is None
    assert executor.in_flight == 0
