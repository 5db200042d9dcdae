"""The executor's side of cancelling an attempt, without a task around it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from streamflow.runtime.step_executor import Attempt, StepExecutor


class _Owner:
    def __init__(self) -> None:
        self.done: list[Attempt] = []

    def attempt_done(self, attempt: Attempt) -> None:
        self.done.append(attempt)

    def attempt_timed_out(self, attempt: Attempt) -> None:
        raise AssertionError("no timeout expected")

    def describe(self, attempt: Attempt) -> str:
        return "test attempt"


def _run_until(executor: StepExecutor, owner: _Owner, count: int, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while len(owner.done) < count:
        assert time.monotonic() < deadline, f"{len(owner.done)} of {count} attempts ended"
        executor.wait(0.05)
        executor.tick()
        executor.run_completions()


def test_an_interrupted_async_attempt_leaves_its_slot_uncancelled_for_the_next_one() -> None:
    executor = StepExecutor()
    lane = executor.lane("s", 1, is_async=True)
    owner = _Owner()
    seen: list[int] = []

    async def block(ctx: Any) -> str:
        await asyncio.sleep(3600)
        return "woke"

    async def count_cancels(ctx: Any) -> int:
        task = asyncio.current_task()
        assert task is not None
        seen.append(task.cancelling())
        return 1

    try:
        first = Attempt(lane, owner, block, None, [], None)
        second = Attempt(lane, owner, count_cancels, None, [], None)
        executor.submit(first)
        executor.submit(second)  # waits for the lane's one slot, behind the first
        deadline = time.monotonic() + 5
        while first.started_at is None:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        assert executor.interrupt(first) is False  # running: cancelled at its await
        _run_until(executor, owner, 2)
    finally:
        executor.close()
    assert isinstance(first.error, asyncio.CancelledError)
    assert second.error is None and second.result == 1
    assert seen == [0]  # the slot took the cancellation back


def test_an_attempt_interrupted_while_waiting_in_its_lane_never_runs() -> None:
    executor = StepExecutor()
    lane = executor.lane("s", 1, is_async=False)
    owner = _Owner()
    ran: list[str] = []
    release = [False]

    def hold(ctx: Any) -> None:
        ran.append("hold")
        while not release[0]:
            time.sleep(0.002)

    def other(ctx: Any) -> None:
        ran.append("other")

    try:
        first = Attempt(lane, owner, hold, None, [], None)
        waiting = Attempt(lane, owner, other, None, [], None)
        executor.submit(first)
        executor.submit(waiting)
        assert executor.interrupt(waiting) is True  # out of the line: the owner answers it
        assert executor.in_flight == 1
        release[0] = True
        _run_until(executor, owner, 1)
    finally:
        executor.close()
    assert ran == ["hold"] and owner.done == [first] and executor.in_flight == 0
