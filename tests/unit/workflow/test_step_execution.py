"""Step attempts outside the commit cycle, through the driver (real threads, a real asyncio loop).

The driver returns from ``pipe`` once every attempt the record caused has finished, so these
tests check what ran at once, what each attempt saw, and what was committed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta

from streamflow import App
from streamflow.operate.dead_letter_format import HEADER_ERROR
from streamflow.testing import TestDriver
from streamflow.workflow.api import NonRetryable, Retry, StepFailed


class _Peak:
    """Counts attempts running at once (overall and per key)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.per_key: dict[str, int] = {}
        self.peak_per_key = 0

    def __enter__(self) -> _Peak:
        return self

    def enter(self, key: str = "") -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.per_key[key] = self.per_key.get(key, 0) + 1
            self.peak_per_key = max(self.peak_per_key, self.per_key[key])

    def leave(self, key: str = "") -> None:
        with self.lock:
            self.now -= 1
            self.per_key[key] -= 1

    def hold_until(self, running: int, limit: float = 10.0) -> None:
        """Block this attempt until ``running`` attempts have been in flight at once (or ``limit``
        passes).

        A fixed sleep made the peak depend on how fast the machine submitted the attempts; this
        makes it depend only on whether they can run at once.
        """
        deadline = time.monotonic() + limit
        while self.peak < running and time.monotonic() < deadline:
            time.sleep(0.002)

    async def hold_until_async(self, running: int, limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        while self.peak < running and time.monotonic() < deadline:
            await asyncio.sleep(0.002)


def test_sync_steps_run_concurrently_up_to_max_concurrency() -> None:
    app = App("conc")
    peak = _Peak()

    @app.step(max_concurrency=10)
    def slow(ctx, n: int) -> int:
        peak.enter()
        peak.hold_until(10)
        peak.leave()
        return n

    @app.workflow
    async def fan(ctx, n: int) -> list:
        calls = [ctx.step(slow, i) for i in range(n)]  # started before the first await
        return [await c for c in calls]

    with TestDriver(app) as driver:
        driver.workflows.start(fan, id="f", input=40)
        view = driver.workflows.get(fan, "f")
    assert view.status == "completed" and view.result == list(range(40))
    assert peak.peak == 10  # slots open while attempts block, up to the step's limit


def test_async_steps_run_on_the_workers_loop_concurrently() -> None:
    app = App("async-conc")
    peak = _Peak()
    loops: set[int] = set()

    @app.step
    async def fetch(ctx, n: int) -> int:
        loops.add(id(asyncio.get_running_loop()))
        peak.enter()
        await peak.hold_until_async(50)
        peak.leave()
        return n * 2

    @app.workflow
    async def fan(ctx, n: int) -> int:
        calls = [ctx.step(fetch, i) for i in range(n)]
        return sum([await c for c in calls])

    with TestDriver(app) as driver:
        driver.workflows.start(fan, id="a", input=50)
        assert driver.workflows.get(fan, "a").result == sum(2 * i for i in range(50))
    assert peak.peak == 50 and len(loops) == 1


def test_entity_steps_keep_one_attempt_per_key_and_run_keys_in_parallel() -> None:
    app = App("entities")
    peak = _Peak()

    @app.step(entity="counters")
    def add(ctx, key: str, by: int) -> int:
        peak.enter(key)
        peak.hold_until(2, limit=0.5)
        ctx.state = (ctx.state or 0) + by
        peak.leave(key)
        return ctx.state

    @app.workflow
    async def bump_all(ctx, rounds: int) -> str:
        calls = [ctx.step(add, key, 1) for _ in range(rounds) for key in ("a", "b", "c", "d")]
        for c in calls:
            await c
        return "ok"

    with TestDriver(app) as driver:
        driver.workflows.start(bump_all, id="w", input=10)
        assert driver.workflows.get(bump_all, "w").status == "completed"
        assert driver.store("counters") == {"a": 10, "b": 10, "c": 10, "d": 10}
    assert peak.peak_per_key == 1
    assert peak.peak > 1


def test_a_failed_attempt_that_mutated_its_state_in_place_leaves_nothing_behind() -> None:
    app = App("copy")

    @app.step(entity="carts")
    def add_item(ctx, cart: str, item: str) -> list:
        items = ctx.state if ctx.state is not None else []
        items.append(item)  # in place, on what ctx.state returned
        if item == "poison":
            raise NonRetryable("refused")
        ctx.state = items
        return items

    @app.workflow
    async def shop(ctx, items: list) -> str:
        for item in items:
            try:
                await ctx.step(add_item, "c1", item)
            except StepFailed:
                pass
        return "done"

    with TestDriver(app) as driver:
        driver.workflows.start(shop, id="s", input=["apple", "poison", "pear"])
        assert driver.store("carts") == {"c1": ["apple", "pear"]}


def test_in_place_mutation_of_state_is_kept_when_the_attempt_succeeds() -> None:
    app = App("mutate")

    @app.step(entity="carts")
    def add_item(ctx, cart: str, item: str) -> None:
        if ctx.state is None:
            ctx.state = []
        ctx.state.append(item)

    @app.workflow
    async def shop(ctx, items: list) -> str:
        for item in items:
            await ctx.step(add_item, "c1", item)
        return "done"

    with TestDriver(app) as driver:
        driver.workflows.start(shop, id="s", input=["apple", "pear"])
        assert driver.store("carts") == {"c1": ["apple", "pear"]}


def test_async_step_past_its_timeout_is_cancelled_and_retried() -> None:
    app = App("async-timeout")
    cancelled: list[int] = []

    @app.step(timeout=timedelta(milliseconds=50), retry=Retry(attempts=2))
    async def hang(ctx, n: int) -> int:
        try:
            if ctx.attempt == 1:
                await asyncio.sleep(30)
            return n
        except asyncio.CancelledError:
            cancelled.append(ctx.attempt)
            raise

    @app.workflow
    async def w(ctx, n: int) -> int:
        return await ctx.step(hang, n)

    with TestDriver(app) as driver:
        driver.workflows.start(w, id="t", input=5)
        entry = driver.workflows.get(w, "t").entries[0]
        assert entry["status"] == "pending" and entry["attempt"] == 2
        assert "took longer than 0.05 s" in entry["last_error"]["message"]
        driver.advance_time(10_000)  # the retry timer
        assert driver.workflows.get(w, "t").result == 5
    assert cancelled == [1]


def test_sync_step_past_its_timeout_is_failed_and_its_late_write_rejected() -> None:
    app = App("sync-timeout")
    release = threading.Event()
    late: list[str] = []

    @app.step(entity="accounts", timeout=timedelta(milliseconds=50), retry=Retry(attempts=1))
    def stuck(ctx, account: str) -> int:
        release.wait(10)
        try:
            ctx.state = 999
        except TimeoutError as exc:
            late.append(str(exc))
            raise
        return 1

    @app.workflow
    async def w(ctx, account: str) -> str:
        try:
            await ctx.step(stuck, account)
        except TimeoutError as exc:  # the step's own error class, raised in the workflow
            return f"timed out: {exc}"
        return "finished"

    with TestDriver(app) as driver:
        driver.workflows.start(w, id="t", input="acct")
        view = driver.workflows.get(w, "t")
        assert view.status == "completed" and view.result.startswith("timed out")
        release.set()
        deadline = time.monotonic() + 10
        while not late and time.monotonic() < deadline:
            time.sleep(0.01)
        driver.advance_time(1)  # would commit a late write, if one got through
        assert driver.store("accounts") == {}
    assert late and "rejected" in late[0]


class OutOfStock(NonRetryable):
    pass


def test_the_steps_own_exception_is_raised_in_the_workflow() -> None:
    app = App("errors")

    class LocalError(Exception):
        pass

    @app.step(retry=Retry(attempts=1))
    def reserve(ctx, what: str) -> str:
        if what == "stock":
            raise OutOfStock(f"no {what} left")
        raise LocalError("local")

    @app.workflow
    async def w(ctx, what: str) -> str:
        try:
            await ctx.step(reserve, what)
        except OutOfStock as exc:
            assert isinstance(exc, StepFailed) and exc.attempts == 1
            return f"out of stock: {exc.message}"
        except LocalError as exc:
            return f"local: {exc.error_type}"
        return "unreachable"

    with TestDriver(app) as driver:
        driver.workflows.start(w, id="a", input="stock")
        driver.workflows.start(w, id="b", input="local")
        assert driver.workflows.get(w, "a").result == "out of stock: no stock left"
        assert driver.workflows.get(w, "b").result == "local: LocalError"


def test_an_error_class_that_cannot_be_found_arrives_as_step_failed() -> None:
    from streamflow.workflow.failures import step_exception
    from streamflow.workflow.messages import StepError

    exc = step_exception("s", StepError("Gone", "it moved", "no.such.module", "Gone"), 3)
    assert type(exc) is StepFailed and exc.error_type == "Gone" and exc.attempts == 3


def test_ctx_emit_takes_what_app_topic_returns() -> None:
    app = App("emit")
    audit = app.topic("audit")

    @app.workflow
    async def w(ctx, n: int) -> int:
        ctx.emit(audit, "k", {"n": n})
        return n

    with TestDriver(app) as driver:
        driver.workflows.start(w, id="e", input=3)
        assert driver.workflows.get(w, "e").status == "completed"
        assert driver.read("audit") == [("k", {"n": 3})]


def test_a_wrong_argument_to_a_ctx_call_names_the_call_and_the_argument() -> None:
    app = App("wrong")

    @app.step
    def store_it(ctx, value: object) -> None:
        return None

    @app.workflow
    async def sleeps_wrong(ctx, _: None) -> None:
        await ctx.sleep("5s")

    @app.workflow
    async def sends_a_set(ctx, _: None) -> None:
        await ctx.step(store_it, {1, 2})

    @app.workflow
    async def emits_wrong(ctx, _: None) -> None:
        ctx.emit(42, "k", "v")

    with TestDriver(app) as driver:
        for wf, name in ((sleeps_wrong, "a"), (sends_a_set, "b"), (emits_wrong, "c")):
            driver.workflows.start(wf, id=name)
        errors = {
            n: driver.workflows.get(wf, n).header["error"]["message"]
            for wf, n in ((sleeps_wrong, "a"), (sends_a_set, "b"), (emits_wrong, "c"))
        }
    assert "ctx.sleep(duration)" in errors["a"] and "'5s'" in errors["a"]
    assert "ctx.step(store_it, ...): argument 0 (set)" in errors["b"]
    assert "ctx.emit(topic, key, value)" in errors["c"] and "42" in errors["c"]


def test_a_malformed_step_command_goes_to_the_dead_letter_topic_with_the_reason() -> None:
    app = App("poison")

    @app.step
    def noop(ctx) -> None:
        return None

    with TestDriver(app) as driver:
        driver.pipe_raw("poison.step.noop", b"k", b'{"id": "x"}')
        driver.pipe_raw(
            "poison.step.noop",
            b"k",
            b'{"id": "x", "seq": 0, "attempt": 1, "reply": "poison.w.events", "rp": "0"}',
        )
        reasons = [dict(d.headers())[HEADER_ERROR].decode() for d in driver.dead_letters()]
    assert all("step command is malformed" in r for r in reasons) and len(reasons) == 2
    assert "KeyError" in reasons[0] and "rp is '0', not a partition number" in reasons[1]


def test_an_async_step_raising_its_own_timeout_error_fails_like_any_error() -> None:
    app = App("own-timeout")

    @app.step(retry=Retry(attempts=1))
    async def call(ctx) -> None:
        raise TimeoutError("the service timed out")

    @app.workflow
    async def w(ctx, _: None) -> str:
        try:
            await ctx.step(call)
        except TimeoutError as exc:
            return str(exc.message)
        return "unreachable"

    with TestDriver(app) as driver:
        driver.workflows.start(w, id="t")
        assert driver.workflows.get(w, "t").result == "the service timed out"
        assert driver.step_executor.in_flight == 0


def test_a_value_the_step_cannot_serialize_fails_the_attempt_for_good() -> None:
    app = App("unserializable")
    attempts: list[int] = []

    @app.step(retry=Retry(attempts=5))
    def returns_a_set(ctx) -> object:
        attempts.append(ctx.attempt)
        return {1, 2}

    @app.workflow
    async def w(ctx, _: None) -> str:
        try:
            await ctx.step(returns_a_set)
        except StepFailed as exc:
            return exc.message
        return "unreachable"

    with TestDriver(app) as driver:
        driver.workflows.start(w, id="u")
        result = driver.workflows.get(w, "u").result
    assert attempts == [1]
    assert "step 'returns_a_set' returned a value that cannot be serialized" in result


def test_two_entity_steps_of_one_store_never_run_at_once_for_the_same_key() -> None:
    app = App("ledger")
    peak = _Peak()

    @app.step(entity="accounts")
    def credit(ctx, account: str, amount: int) -> int:
        peak.enter(account)
        balance = ctx.state or 0
        time.sleep(0.002)  # read-modify-write across a thread switch
        ctx.state = balance + amount
        peak.leave(account)
        return ctx.state

    @app.step(entity="accounts")
    def debit(ctx, account: str, amount: int) -> int:
        peak.enter(account)
        balance = ctx.state or 0
        time.sleep(0.002)
        ctx.state = balance - amount
        peak.leave(account)
        return ctx.state

    @app.workflow
    async def churn(ctx, n: int) -> str:
        calls = [ctx.step(credit if i % 2 else debit, "a" if i % 3 else "b", i) for i in range(n)]
        for c in calls:
            await c
        return "ok"

    with TestDriver(app, partitions=2) as driver:
        driver.workflows.start(churn, id="c", input=60)
        assert driver.workflows.get(churn, "c").status == "completed"
        balances = driver.store("accounts")
    expected = {"a": 0, "b": 0}
    for i in range(60):
        expected["a" if i % 3 else "b"] += i if i % 2 else -i
    assert balances == expected
    assert peak.peak_per_key == 1


def test_a_step_with_no_free_slot_pauses_its_partition_and_resumes_when_drained() -> None:
    app = App("backpressure")
    flow: list[str] = []

    @app.step(max_concurrency=2)
    def slow(ctx, n: int) -> int:
        time.sleep(0.01)
        return n

    @app.workflow
    async def fan(ctx, n: int) -> int:
        calls = [ctx.step(slow, i) for i in range(n)]
        return sum([await c for c in calls])

    with TestDriver(app) as driver:
        step_task = next(t for t in driver._all_tasks if "backpressure.step.slow" in t.sources)
        pause, resume = step_task.pause_input, step_task.resume_input

        def paused(topic: str) -> None:
            flow.append(f"pause {topic}")
            pause(topic)

        def resumed(topic: str) -> None:
            flow.append(f"resume {topic}")
            resume(topic)

        step_task.pause_input, step_task.resume_input = paused, resumed
        driver.workflows.start(fan, id="f", input=10)
        assert driver.workflows.get(fan, "f").result == sum(range(10))
    # Each pause is followed by its resume (the driver withholds the paused partition's
    # commands meanwhile, so the step pauses again as they arrive), and it ends resumed.
    assert flow and len(flow) % 2 == 0
    assert set(flow[0::2]) == {"pause backpressure.step.slow"}
    assert set(flow[1::2]) == {"resume backpressure.step.slow"}
