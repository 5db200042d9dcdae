"""No instance waits forever on a step: every command that decodes is answered, through the
driver (real step tasks, real RocksDB stores, the producer's record size limit).

A command or completion that cannot be delivered (arguments that no longer rebuild, a result
over the record limit, a value that cannot be serialized, a reply the producer refuses) is
answered with a non-retryable failure in the transaction that dead-letters the command, and the
attempt's entity write is not applied.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException

from streamflow import App
from streamflow.operate.dead_letter_format import HEADER_ERROR
from streamflow.testing import TestDriver
from streamflow.workflow.api import Retry, StepFailed
from streamflow.workflow.messages import Start, StepCommand, dumps


def _reasons(driver: TestDriver) -> list[str]:
    return [dict(m.headers())[HEADER_ERROR].decode() for m in driver.dead_letters()]


def _failure_of(driver: TestDriver, events: str) -> dict[str, Any]:
    """The one step failure replied on the events topic."""
    replies = [orjson.loads(m.value() or b"{}") for m in driver.messages(events)]
    (failure,) = [r for r in replies if r.get("type") == "step_failed"]
    return failure


@dataclass
class Order:
    amount: int


def test_a_command_whose_arguments_no_longer_rebuild_is_answered_and_dead_lettered() -> None:
    app = App("args")
    ran: list[Order] = []

    @app.step(retry=Retry(attempts=5))
    def charge(ctx, order: Order) -> int:
        ran.append(order)
        return order.amount

    @app.workflow
    async def pay(ctx, order: dict) -> str:
        try:
            return str(await ctx.step(charge, order))  # a dict, as an older deploy wrote it
        except StepFailed as exc:
            return f"{exc.error_type}: {exc.message}"

    with TestDriver(app) as driver:
        driver.workflows.start(pay, id="p1", input={"cents": 5})  # no timer ran: no retry
        view = driver.workflows.get(pay, "p1")
        failure = _failure_of(driver, "args.pay.events")
        (reason,) = _reasons(driver)
    assert ran == []
    assert view.status == "completed" and failure["retryable"] is False
    for text in (view.result, reason):
        assert "step 'charge'" in text and "'p1'" in text and "argument 1" in text
        assert "amount" in text  # the cause: the field the dataclass needs


def test_an_undecodable_envelope_is_dead_lettered_only() -> None:
    app = App("envelope")

    @app.step
    def noop(ctx) -> None:
        return None

    with TestDriver(app) as driver:
        driver.pipe_raw("envelope.step.noop", b"k", b'{"id": "x", "seq": 0}')
        assert len(driver.dead_letters()) == 1
        assert driver.messages("envelope.w.events") == []


def test_a_result_over_the_payload_limit_fails_for_good_and_leaves_the_entity_as_it_was() -> None:
    app = App("huge", max_payload_bytes=2_000_000)
    attempts: list[int] = []

    @app.step(entity="docs", retry=Retry(attempts=5))
    def render(ctx, doc: str, size: int) -> str:
        attempts.append(ctx.attempt)
        ctx.state = {"rendered": size}
        return "x" * size

    @app.workflow
    async def publish(ctx, size: int) -> str:
        try:
            return str(len(await ctx.step(render, "d1", size)))
        except StepFailed as exc:
            return f"{exc.error_type}: {exc.message}"

    with TestDriver(app) as driver:
        driver.workflows.start(publish, id="small", input=10)
        driver.workflows.start(publish, id="big", input=3_000_000)
        small = driver.workflows.get(publish, "small")
        big = driver.workflows.get(publish, "big")
        limit = 2_000_000
        state = driver.store("docs")
        (reason,) = _reasons(driver)
    assert small.result == "10" and attempts == [1, 1]
    assert big.status == "completed" and big.result.startswith("ResultTooLarge: ")
    for text in (big.result, reason):
        assert "step 'render'" in text and "'big'" in text
        assert f"limit of {limit}" in text and "3000" in text  # the reply's size, in bytes
    assert state == {"d1": {"rendered": 10}}  # the big attempt's write was not applied


def test_an_unserializable_state_is_answered_dead_lettered_and_not_applied() -> None:
    app = App("bad-state")

    @app.step(entity="sets", retry=Retry(attempts=5))
    def remember(ctx, key: str, item: int) -> int:
        ctx.state = {item} if item else [item]  # a set cannot be stored as JSON
        return item

    @app.workflow
    async def w(ctx, item: int) -> str:
        try:
            return str(await ctx.step(remember, "k", item))
        except StepFailed as exc:
            return exc.error_type

    with TestDriver(app) as driver:
        driver.workflows.start(w, id="ok", input=0)
        driver.workflows.start(w, id="bad", input=7)
        assert driver.workflows.get(w, "bad").result == "SerializationError"
        assert driver.store("sets") == {"k": [0]}
        (reason,) = _reasons(driver)
    assert "step 'remember'" in reason and "store 'sets'" in reason


def test_a_reply_the_producer_refuses_is_answered_with_a_failure_and_not_applied() -> None:
    app = App("refused")

    @app.step(entity="counters", retry=Retry(attempts=5))
    def bump(ctx, key: str) -> int:
        ctx.state = (ctx.state or 0) + 1
        return ctx.state

    @app.workflow
    async def w(ctx, _: None) -> str:
        try:
            return str(await ctx.step(bump, "c"))
        except StepFailed as exc:
            return exc.message

    with TestDriver(app) as driver:
        step_task = next(t for t in driver._all_tasks if "refused.step.bump" in t.sources)
        send, refused = step_task.send, []

        def refuse_first_reply(topic: str, key: Any, value: Any, *rest: Any) -> None:
            if topic == "refused.w.events" and not refused:
                refused.append(value)
                raise KafkaException(KafkaError(KafkaError.INVALID_RECORD, "record refused"))
            send(topic, key, value, *rest)

        step_task.send = refuse_first_reply  # type: ignore[method-assign]
        driver.workflows.start(w, id="r")
        result = driver.workflows.get(w, "r").result
        assert driver.store("counters") == {}
        (reason,) = _reasons(driver)
    assert refused and "record refused" in result and "'r'" in result
    assert "record refused" in reason


def test_a_broken_producer_during_a_completion_stops_the_cycle_not_the_command() -> None:
    """A fenced producer is the worker's to recover (it aborts and rejoins): the command must
    run again on the partition's next owner, not be dead-lettered."""
    app = App("fenced")

    @app.step
    def noop(ctx) -> int:
        return 1

    @app.workflow
    async def w(ctx, _: None) -> int:
        return await ctx.step(noop)

    with TestDriver(app) as driver:
        step_task = next(t for t in driver._all_tasks if "fenced.step.noop" in t.sources)

        def fenced(topic: str, *rest: Any) -> None:
            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))

        step_task.send = fenced  # type: ignore[method-assign]
        with pytest.raises(KafkaException):
            driver.workflows.start(w, id="f")
        assert driver.dead_letters() == []


def test_an_entity_command_without_its_key_is_answered() -> None:
    app = App("keyless")

    @app.step(entity="things")
    def touch(ctx, key: str) -> None:
        return None

    with TestDriver(app) as driver:
        command = StepCommand("w", "i1", 0, 1, [None], "keyless.w.events", 0)
        driver.pipe_raw("keyless.step.touch", b"x", dumps(command.to_json()))
        failure = _failure_of(driver, "keyless.w.events")
        (reason,) = _reasons(driver)
    assert failure["retryable"] is False and "no entity key" in failure["error"]["message"]
    assert "no entity key" in reason


def test_arguments_and_results_over_one_record_travel_as_chunks_up_to_the_payload_limit() -> None:
    """A 300 kB producer limit: arguments and results of several records go as chunks, and
    the orchestrator journals them side by side; past the payload limit, ResultTooLarge."""
    app = App("echo", kafka={"message.max.bytes": "300000"}, max_payload_bytes=1_000_000)

    @app.step
    def echo(ctx, text: str) -> str:
        return text.upper()

    @app.workflow
    async def w(ctx, n: int) -> str:
        try:
            return str(len(await ctx.step(echo, "a" * n)))
        except StepFailed as exc:
            return exc.error_type

    with TestDriver(app) as driver:
        assert driver.max_record_bytes < 300_000
        driver.workflows.start(w, id="fits", input=900_000)
        driver.workflows.start(w, id="not", input=1_100_000)
        assert driver.workflows.get(w, "fits").result == "900000"
        assert driver.workflows.get(w, "not").status == "suspended"  # its arguments, first
        assert driver.dead_letters() == []
        commands = driver.messages("echo.step.echo")
        assert len(commands) == 4 and all(len(m.value()) < 300_000 for m in commands)


def test_a_rejected_command_read_again_behind_a_running_one_is_not_answered_twice() -> None:
    """A running attempt holds the partition's committed offset back, so a crash or a
    rebalance reads the commands after it again: one that was rejected (answered and
    dead-lettered) is skipped then, like a finished one."""
    app = App("reread")
    release = threading.Event()

    @app.step
    def hold(ctx, order: Order) -> int:
        release.wait(10)
        return order.amount

    @app.workflow
    async def w(ctx, _: None) -> int:
        return await ctx.step(hold, Order(1))

    with TestDriver(app) as driver:
        driver.pipe("reread.w.events", "slow", Start("slow").to_json(), settle=False)
        # The envelope decodes; only the argument does not fit ``Order`` (no instance waits
        # for the answer here, so it goes to a topic of its own).
        bad = StepCommand("w", "bad", 0, 1, [{"cents": 1}], "reread.replies", 0)
        driver.pipe_raw("reread.step.hold", b"bad", dumps(bad.to_json()), settle=False)
        step_task = next(t for t in driver._all_tasks if "reread.step.hold" in t.sources)
        step_task.process(driver.messages("reread.step.hold")[-1])  # read again
        release.set()
        driver.settle(timeout=5)
        assert len(driver.dead_letters()) == 1 and len(driver.messages("reread.replies")) == 1
        assert driver.workflows.get(w, "slow").result == 1


def test_a_step_raising_with_a_huge_message_is_answered_with_the_message_cut() -> None:
    app = App("loud")

    @app.step(retry=Retry(attempts=1))
    def call(ctx) -> None:
        raise ValueError("the service said: " + "x" * 2_000_000)

    @app.workflow
    async def w(ctx, _: None) -> str:
        try:
            await ctx.step(call)
        except StepFailed as exc:
            return exc.message
        return "unreachable"

    with TestDriver(app) as driver:
        driver.workflows.start(w, id="l")
        message = driver.workflows.get(w, "l").result
    assert message.startswith("the service said: xxx") and len(message) < 10_000
    assert message.endswith("(2000018 characters)")


def test_an_answered_command_is_never_replayed_from_the_dead_letter_topic() -> None:
    """Its workflow already holds a non-retryable failure for the call: replaying the dead
    letter would run the step (and change its entity) for a call the workflow gave up on."""
    from streamflow.operate.dead_letter_format import HEADER_ANSWERED
    from streamflow.operate.dead_letters import DeadLetter

    app = App("answered")

    @app.step
    def charge(ctx, order: Order) -> int:
        return order.amount

    @app.workflow
    async def pay(ctx, order: dict) -> str:
        try:
            return str(await ctx.step(charge, order))
        except StepFailed as exc:
            return exc.error_type

    with TestDriver(app) as driver:
        driver.workflows.start(pay, id="p1", input={"cents": 5})  # answered and dead-lettered
        driver.pipe_raw("answered.step.charge", b"k", b'{"id": "x", "seq": 0}')  # not answered
        answered, unanswered = driver.dead_letters()
    letters = [
        DeadLetter(0, i, 0, m.key(), m.value(), list(m.headers() or []))
        for i, m in enumerate((answered, unanswered))
    ]
    assert dict(letters[0].headers)[HEADER_ANSWERED] == b"1"
    assert "start the workflow again" in (letters[0].replayable or "")
    assert HEADER_ANSWERED not in dict(letters[1].headers)
    assert letters[1].replayable is None
