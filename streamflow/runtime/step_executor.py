"""Where step attempts run: a worker's threads and its asyncio loop, never its commit cycle.

A step is where a workflow meets the outside world (a payment API, an e-mail, an LLM call), so
an attempt may take 5 ms or 5 hours. The worker thread only *starts* attempts and later
*applies* their completions inside a commit cycle; the attempt itself runs here:

- a plain ``def`` step on a bounded thread pool (default 100 threads, ``App(step_threads=)``),
  at most half of them per step unless ``max_concurrency`` says otherwise
  (``DEFAULT_SYNC_SHARE``);
- an ``async def`` step on one asyncio loop owned by the worker (default at most 1,000 attempts
  at once, ``App(async_step_concurrency=)``).

Finished attempts are queued as completions; the worker applies them on its own thread, so
everything that touches tasks, stores and producers stays single-threaded. Concurrency is
bounded per step by its ``StepLane`` (``@app.step(max_concurrency=N)``): a step task whose lane
has as many attempts waiting as it has slots pauses its partition instead of fetching more
(docs/architecture.md, "Step execution").

A sync attempt that overruns its timeout cannot be interrupted (Python threads cannot be
killed): it is reported timed out at once, its late result and state writes are rejected, and
its thread stays counted until the function returns, which the log says. An attempt that waits
for a slot longer than its timeout is reported timed out the same way and never runs. Attempts
running past their timeout, or longer than ``LONG_RUNNING``, are listed by ``long_running`` for
``/status`` and ``/metrics``: a hung step is seen, not guessed.

Who runs an attempt is decided once: a slot and the timeout check (or a task giving the attempt
up, or its workflow cancelling it) all ``claim`` it, and only the first one acts. An async
attempt given up or cancelled while it runs is cancelled on the loop at its current ``await``
(the slot takes the cancellation back and goes on); a sync one is told through its owner's
``ctx`` (``ctx.cancelled``), since a thread cannot be stopped.

Size: a lane and the executor are two halves of one lock-free protocol: which deque of a lane
(``_waiting``, ``_released``) the worker thread, a step thread and the loop may each touch, and
when; ``claim`` decides who acts on an attempt. The executor calls the lane's private methods
from the right thread and the lane trusts it to; apart, each half would be unsafe to read or
change alone. The thread pool has a lock of its own and is apart (``runtime/step_threads.py``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

from streamflow.operate.metrics import Metrics
from streamflow.runtime.step_threads import StepThreads

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_STEP_THREADS = 100
DEFAULT_ASYNC_STEP_CONCURRENCY = 1000
DEFAULT_SYNC_SHARE = 2
"""A ``def`` step without ``max_concurrency`` holds at most ``step_threads // 2`` threads. A
thread held by a hung call (a service that never answers, a lock never released) is lost until
the call returns, and Python cannot take it back; without a share, one hung step would hold all
the threads and starve every other step of the worker. Half leaves the other half to the rest
while one step hangs, and keeps the throughput of steps that block on I/O: measured with
3-step workflows whose steps wait 50 ms (2,000 at once, one worker), a quarter (25 threads a
step) ran 430 workflows/s where the shared 100 threads ran 575–615; half runs them as before.
A step that needs more says so with ``max_concurrency``. Async steps need no share: a hung
coroutine holds no thread."""
LONG_RUNNING = 60.0
"""Seconds after which a running attempt is listed in ``/status`` even without a timeout."""
TIMEOUT_CHECK_INTERVAL = 0.05
"""Seconds between scans for sync attempts past their timeout."""
INITIAL_SYNC_SLOTS = 1
BLOCKING_ATTEMPT = 0.001
"""A sync lane whose attempts take this long on average (they wait on I/O) opens more slots
while attempts wait: doubling, up to its limit. Attempts that only compute stay on a few
threads, which costs the worker thread far less in GIL hand-offs (measured on CPU-only 3-step
workflows: 8 busy threads ran 2,000/s where 100 ran 1,700/s)."""
STALLED_AFTER = 0.02
"""Attempts wait and no slot finished one for this long: open more slots whatever the average
(the first attempts of a lane, or every slot stuck in a slow call)."""


class AttemptOwner(Protocol):
    """Who submitted an attempt (a step task): told on the worker thread how it ended."""

    def attempt_done(self, attempt: Attempt) -> None: ...

    def attempt_timed_out(self, attempt: Attempt) -> None: ...

    def describe(self, attempt: Attempt) -> str: ...

    def identify(self, attempt: Attempt) -> AttemptId: ...


@dataclass(frozen=True, slots=True)
class AttemptId:
    """Which command an attempt runs, as an operator names it."""

    step: str
    instance_id: str
    seq: int
    attempt: int
    void: bool
    """Its task closed or its cycle aborted since it started: its result will be dropped."""


@dataclass(frozen=True, slots=True)
class LongAttempt:
    """An attempt running past its timeout or longer than ``LONG_RUNNING`` (``/status``)."""

    id: AttemptId
    age_seconds: float
    timeout_seconds: float | None
    past_timeout: bool


@dataclass(eq=False, slots=True)
class Attempt:
    """One attempt of one step, as the executor runs it: ``fn(ctx, *args)`` (a coroutine
    function for async steps). Its return value or exception goes to ``owner.attempt_done``
    on the worker thread; ``owner.attempt_timed_out`` is called instead, at once, when a sync
    attempt passes ``timeout`` seconds (running, or waiting for a slot: then it never runs).
    An attempt marked ``cancelled`` before it starts is never run (its task closed or its cycle
    aborted); nor is an ``interrupted`` one (its workflow cancelled it: ``interrupt``), and if it
    runs, its asyncio task is cancelled. ``token`` is the owner's to read back.
    """

    lane: StepLane
    owner: AttemptOwner
    fn: Callable[..., Any]
    ctx: Any
    args: list[Any]
    timeout: float | None
    token: Any = None
    result: Any = None
    error: BaseException | None = None
    submitted_at: float = 0.0
    started_at: float | None = None
    finished: bool = False
    timed_out: bool = False
    cancelled: bool = False
    interrupted: bool = False
    running_on: asyncio.Task[None] | None = None
    """The loop's task serving this async attempt while it runs (to cancel it)."""
    _claim: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """True once, for whoever asks first: the slot that runs the attempt, or the worker
        thread that gives it up before it ran. Never blocks (``acquire(False)``), so neither
        side can stall the other."""
        return self._claim.acquire(False)


class StepLane:
    """One step's attempts on this worker: at most ``limit`` run at once, the rest wait in
    order. A thread (or coroutine) that finishes an attempt takes the next waiting one itself,
    so a slot never waits for the worker thread to notice a completion.

    No lock: a lock held by a step thread that the GIL preempts stalls the worker thread
    (measured: 22 µs per admission). Only the worker thread counts slots; a slot that finds
    nothing to do says so through ``_released`` (deque operations are atomic), and the worker
    thread reconciles on its next admission or tick — starting a slot for any attempt left
    waiting in the instant a slot was leaving.
    """

    def __init__(self, name: str, limit: int, is_async: bool) -> None:
        self.name = name
        self.limit = limit
        self.is_async = is_async
        self.slots = limit if is_async else min(limit, INITIAL_SYNC_SLOTS)
        """Slots open now (elastic for sync lanes: see BLOCKING_ATTEMPT)."""
        self.last_progress = time.monotonic()
        self.mean_seconds = 0.0
        """Moving average of this lane's attempt durations (wall time), written by slots."""
        self.running = 0
        """Slots serving attempts, as the worker thread last reconciled them."""
        self._waiting: deque[Attempt] = deque()
        self._released: deque[int] = deque()
        self._paused: list[Callable[[], None]] = []

    @property
    def saturated(self) -> bool:
        """As many attempts wait as the lane has slots: time to stop fetching commands."""
        return len(self._waiting) >= self.limit

    def when_room(self, resume: Callable[[], None]) -> None:
        """Call ``resume`` (worker thread) once the waiting line is short again."""
        if resume not in self._paused:
            self._paused.append(resume)

    # -- worker thread ---------------------------------------------------------------------------

    def _reconcile(self) -> None:
        released = self._released
        while released:
            released.popleft()
            self.running -= 1
            if not self.is_async and self.slots > INITIAL_SYNC_SLOTS:
                self.slots -= 1  # demand fell: close the slot

    def _admit(self, attempt: Attempt) -> bool:
        """True: the caller starts a slot with ``attempt`` now; False: it waits its turn."""
        if self._released:
            self._reconcile()
        if self.running < self.slots and not self._waiting:
            self.running += 1
            return True
        self._waiting.append(attempt)
        return False

    def _slots_to_start(self, now: float) -> int:
        """Slots to start now: for attempts left waiting while a slot was free, and more slots
        (doubling, up to the limit) when the lane's attempts block."""
        if not self._waiting:
            return 0
        self._reconcile()
        free = max(0, self.slots - self.running)
        if (
            free == 0
            and self.slots < self.limit
            and (self.mean_seconds >= BLOCKING_ATTEMPT or now - self.last_progress >= STALLED_AFTER)
        ):
            more = min(self.slots, self.limit - self.slots)
            self.slots += more
            free = more
            self.last_progress = now
        start = min(free, len(self._waiting))
        self.running += start
        return start

    # -- slots -----------------------------------------------------------------------------------

    def _next(self) -> Attempt | None:
        """The slot's next attempt, or None (the slot ends)."""
        self.last_progress = time.monotonic()
        try:
            return self._waiting.popleft()
        except IndexError:
            self._released.append(1)
            return None

    def _withdraw(self, attempt: Attempt) -> None:
        """``attempt`` was claimed away from the slots (timed out or given up while waiting):
        take it out of the line, so it no longer counts towards ``saturated``. A slot may have
        popped it this instant; it then skips it (the claim is taken)."""
        try:
            self._waiting.remove(attempt)  # identity compare in C: atomic under the GIL
        except ValueError:
            pass

    def _room(self) -> None:
        if self._paused and len(self._waiting) <= self.limit // 2:
            paused, self._paused = self._paused, []
            for resume in paused:
                resume()


def _given_up(attempt: Attempt) -> bool:
    """``attempt.cancelled`` or ``interrupted`` read now: the worker thread sets them while the
    attempt runs (a plain attribute read would be narrowed away by the check made before it
    started)."""
    return attempt.cancelled or attempt.interrupted


class StepExecutor:
    """The per-worker executor of step attempts (see the module docstring)."""

    def __init__(
        self,
        threads: int = DEFAULT_STEP_THREADS,
        async_concurrency: int = DEFAULT_ASYNC_STEP_CONCURRENCY,
    ) -> None:
        self.threads = threads
        self.async_concurrency = async_concurrency
        self._pool: StepThreads | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._done: deque[Attempt] = deque()
        self._timeouts: deque[Attempt] = deque()
        self._ready = threading.Event()
        self._async_queue: deque[tuple[StepLane, Attempt | None]] = deque()
        self._async_wakeup = False
        self._lanes: dict[str, StepLane] = {}
        self._attempts: set[Attempt] = set()
        """Submitted and not completed (what ``long_running`` looks through)."""
        self._timed: set[Attempt] = set()
        """Attempts with a timeout not reported yet: waiting ones (either kind), running sync
        ones (async ones time themselves out with ``asyncio.timeout``)."""
        self._shared: dict[str, Any] = {}
        self._stopping = False
        """``forget_waiting`` was called: attempts submitted from now on never run (a key handed
        on to a waiting command while the worker drains must not start new work)."""
        self._next_timeout_check = 0.0
        self.in_flight = 0
        """Attempts submitted and not yet completed (overrunning sync attempts included)."""
        self.overrunning = 0
        """Sync attempts reported timed out whose threads have not returned yet."""
        self.submitted = 0
        """Attempts ever submitted (the worker tells which ones its cycle started)."""
        self.metrics: Metrics | None = None
        """Where attempts' outcomes and durations are counted (the worker's), if anywhere."""

    # -- lanes -----------------------------------------------------------------------------------

    def lane(self, step: str, max_concurrency: int | None, is_async: bool) -> StepLane:
        """The lane of ``step``, shared by all its tasks on this worker. A ``def`` step gets
        ``step_threads // DEFAULT_SYNC_SHARE`` slots unless it names its own limit."""
        lane = self._lanes.get(step)
        if lane is None:
            if is_async:
                capacity = default = self.async_concurrency
            else:
                capacity, default = self.threads, max(1, self.threads // DEFAULT_SYNC_SHARE)
            lane = StepLane(step, min(max_concurrency or default, capacity), is_async)
            self._lanes[step] = lane
        return lane

    def shared(self, name: str, make: Callable[[], T]) -> T:
        """One object per ``name`` for the life of this executor (the worker), whichever task
        asks: what must outlive a task because the attempts it started do. Entity key locks
        live here: a key stays held until its attempt has ended, even when the task that
        launched it was revoked or aborted and a new one reads the same commands again."""
        value = self._shared.get(name)
        if value is None:
            value = self._shared[name] = make()
        return cast(T, value)

    # -- running attempts ------------------------------------------------------------------------

    def submit(self, attempt: Attempt) -> None:
        """Run ``attempt`` when its lane has a free slot (worker thread)."""
        self.in_flight += 1
        self.submitted += 1
        lane = attempt.lane
        attempt.submitted_at = time.monotonic()
        self._attempts.add(attempt)
        if self._stopping and attempt.claim():
            attempt.cancelled = True
            self._finish(attempt)  # never runs; its command runs on the next owner
            return
        if attempt.timeout is not None:
            self._timed.add(attempt)
        if not lane._admit(attempt):
            self._start_slots(lane, time.monotonic())
            return
        if lane.is_async:
            self._async_queue.append((lane, attempt))
            self._wake_loop()
        else:
            self._thread_pool().submit(lambda: self._serve_sync(lane, attempt))

    def _start_slots(self, lane: StepLane, now: float) -> None:
        for _ in range(lane._slots_to_start(now)):
            if lane.is_async:
                self._async_queue.append((lane, None))
                self._wake_loop()
            else:
                self._thread_pool().submit(lambda: self._serve_sync(lane, lane._next()))

    def tick(self) -> None:
        """Worker thread, every loop turn while attempts run: start slots for attempts that
        wait (blocked lanes grow), report sync attempts past their timeout."""
        now = time.monotonic()
        for lane in self._lanes.values():
            if lane._waiting:
                self._start_slots(lane, now)
        self.check_timeouts(now)

    def _serve_sync(self, lane: StepLane, attempt: Attempt | None) -> None:
        """A step thread holding one slot of ``lane``: run attempts until none waits."""
        while attempt is not None:
            if not attempt.claim():  # given up while it waited (reported there): never run
                attempt = lane._next()
                continue
            if attempt.cancelled or attempt.interrupted:  # forgotten or cancelled as it was taken
                self._finish(attempt)
                attempt = lane._next()
                continue
            attempt.started_at = time.monotonic()
            try:
                attempt.result = attempt.fn(attempt.ctx, *attempt.args)
            except BaseException as exc:  # noqa: BLE001 - reported as the attempt's failure
                attempt.error = exc
            finally:
                lane.mean_seconds += 0.1 * (
                    time.monotonic() - attempt.started_at - lane.mean_seconds
                )
                self._finish(attempt)
            attempt = lane._next()
            if attempt is not None and self._pool is not None and self._pool.has_waiting_jobs():
                # Other steps' slots wait for a thread: go to the back of the line instead of
                # keeping this thread for as long as this step has work.
                pool, taken = self._pool, attempt
                pool.submit(lambda: self._serve_sync(lane, taken))  # noqa: B023 - returns next
                return

    def _wake_loop(self) -> None:
        """Async slots are handed over in bursts: one loop wake-up for all a batch started,
        not a cross-thread call each (see _start_async for why the flag is race-free)."""
        if not self._async_wakeup:
            self._async_wakeup = True
            self._event_loop().call_soon_threadsafe(self._start_async)

    def _start_async(self) -> None:
        """On the loop thread: start every queued async attempt. The flag is cleared before
        draining, so an attempt queued meanwhile is either drained now or gets a new wake-up."""
        self._async_wakeup = False
        pending, loop = self._async_queue, self._loop
        assert loop is not None
        while pending:
            lane, attempt = pending.popleft()
            loop.create_task(
                self._serve_async(lane, attempt if attempt is not None else lane._next())
            )

    async def _serve_async(self, lane: StepLane, attempt: Attempt | None) -> None:
        """One slot of an async ``lane``: run attempts until none waits."""
        while attempt is not None:
            if not attempt.claim():
                attempt = lane._next()
                continue
            if attempt.cancelled or attempt.interrupted:
                self._finish(attempt)
                attempt = lane._next()
                continue
            attempt.started_at = time.monotonic()
            attempt.running_on = asyncio.current_task()
            deadline: asyncio.Timeout | None = None
            try:
                coroutine = attempt.fn(attempt.ctx, *attempt.args)
                if attempt.timeout is None:
                    attempt.result = await coroutine
                else:
                    async with asyncio.timeout(attempt.timeout) as deadline:
                        attempt.result = await coroutine
            except BaseException as exc:  # noqa: BLE001 - cancellation included
                error: BaseException = exc
                if deadline is not None and deadline.expired():  # ours, not the step's own
                    error = TimeoutError(
                        f"{attempt.owner.describe(attempt)} took longer than "
                        f"{attempt.timeout:g} s and was cancelled"
                    )
                attempt.error = error
            finally:
                attempt.running_on = None
                this = asyncio.current_task()
                if this is not None and this.cancelling() and _given_up(attempt):
                    # Cancelled by ``forget`` (its task gave it up), whether the step let the
                    # CancelledError out or swallowed it: the request was for this attempt, not
                    # for the slot, which goes on serving its lane with no cancellation pending.
                    this.uncancel()
                self._finish(attempt)
            attempt = lane._next()

    def _cancel_running(self, attempt: Attempt) -> None:
        """On the loop: cancel ``attempt`` if it still runs (it may have finished since)."""
        running_on = attempt.running_on
        if running_on is not None and not attempt.finished:
            running_on.cancel()

    def _finish(self, attempt: Attempt) -> None:
        attempt.finished = True
        self._done.append(attempt)
        if not self._ready.is_set():  # Event.set takes a lock: only when someone may wait
            self._ready.set()

    def run_completions(self) -> int:
        """Apply finished attempts (worker thread, inside the open cycle); returns how many."""
        done, timeouts = self._done, self._timeouts
        if not done and not timeouts:
            return 0
        self._ready.clear()
        count = 0
        lanes: set[StepLane] = set()
        while timeouts:
            count += 1
            attempt = timeouts.popleft()
            if attempt.started_at is None:  # timed out waiting for a slot: it never runs
                self.in_flight -= 1
                self._attempts.discard(attempt)
                lanes.add(attempt.lane)
            attempt.owner.attempt_timed_out(attempt)
        while done:
            attempt = done.popleft()
            count += 1
            self.in_flight -= 1
            self._timed.discard(attempt)
            self._attempts.discard(attempt)
            if attempt.timed_out:
                self.overrunning -= 1
                log.info(
                    "%s returned %.1f s after its timeout; its result was discarded",
                    attempt.owner.describe(attempt),
                    time.monotonic() - (attempt.started_at or 0) - (attempt.timeout or 0),
                )
            attempt.owner.attempt_done(attempt)
            lanes.add(attempt.lane)
        for lane in lanes:
            lane._room()
        return count

    def forget(self, attempt: Attempt) -> None:
        """The owner will not use ``attempt``'s result (its task was revoked or its cycle
        aborted). One that has not started never will, and its completion comes at once (so
        what it holds, an entity key, is freed now); a running async one is cancelled; a
        running sync one cannot be stopped and completes when its function returns."""
        attempt.cancelled = True
        if attempt.claim():
            attempt.lane._withdraw(attempt)
            self._finish(attempt)
        elif attempt.lane.is_async and not attempt.finished and self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel_running, attempt)

    def interrupt(self, attempt: Attempt) -> bool:
        """Stop ``attempt`` (worker thread): its workflow cancelled it.

        True: it had not started and never will: it left its lane's waiting line and is no
        longer in flight, so no completion comes; the owner answers it now. False: a slot has
        it: an async attempt's task is cancelled at its current ``await``, a sync attempt sees
        what its owner set on its ``ctx``, and a slot that took it but had not started it ends
        it unrun (``started_at`` None). Its completion comes as usual.
        """
        attempt.interrupted = True
        if attempt.claim():  # no slot has it, and none ever will
            attempt.lane._withdraw(attempt)
            self.in_flight -= 1
            self._timed.discard(attempt)
            self._attempts.discard(attempt)
            attempt.lane._room()
            return True
        if attempt.lane.is_async and not attempt.finished and self._loop is not None:
            self._loop.call_soon_threadsafe(self._cancel_running, attempt)
        return False

    def has_completions(self) -> bool:
        return bool(self._done) or bool(self._timeouts)

    def forget_waiting(self) -> int:
        """Stopping: attempts that have not started never will (their commands run again on
        the next owner); returns how many."""
        self._stopping = True
        forgotten = 0
        for lane in self._lanes.values():
            for attempt in list(lane._waiting):
                if attempt.claim():
                    attempt.cancelled = True
                    lane._withdraw(attempt)
                    self._finish(attempt)
                    forgotten += 1
        return forgotten

    def wait(self, timeout: float) -> bool:
        """Block until a completion is ready or ``timeout`` passed (the driver, shutdown)."""
        if self._done or self._timeouts:
            return True
        return self._ready.wait(timeout)

    def check_timeouts(self, now: float | None = None) -> None:
        """Report sync attempts past their timeout (called by the worker thread)."""
        now = time.monotonic() if now is None else now
        if now < self._next_timeout_check or not self._timed:
            return
        self._next_timeout_check = now + TIMEOUT_CHECK_INTERVAL
        for attempt in [
            a
            for a in self._timed
            if not a.finished and now - (a.started_at or a.submitted_at) > (a.timeout or 0)
        ]:
            if attempt.started_at is None:
                if attempt.claim():  # still waiting for a slot: it never runs now
                    self._timed.discard(attempt)
                    attempt.timed_out = attempt.cancelled = True
                    attempt.lane._withdraw(attempt)
                    log.warning(
                        "%s waited %.1f s for a slot of its step, past its timeout of %g s: "
                        "reported as timed out without running",
                        attempt.owner.describe(attempt),
                        now - attempt.submitted_at,
                        attempt.timeout,
                    )
                    self._timeouts.append(attempt)
                    self._ready.set()
                continue  # else a slot took it this instant: timed from its start from now
            self._timed.discard(attempt)
            if attempt.lane.is_async:
                continue  # running: asyncio.timeout times it from its start
            attempt.timed_out = True
            self.overrunning += 1
            log.warning(
                "%s passed its timeout of %g s: reported as timed out, its late result "
                "and state writes will be rejected; it still holds a step thread "
                "(%d of %d held by overrunning attempts)",
                attempt.owner.describe(attempt),
                attempt.timeout,
                self.overrunning,
                self.threads,
            )
            # Its reply goes out with the completions, inside the cycle that applies them.
            self._timeouts.append(attempt)
            self._ready.set()

    def long_running(self, now: float | None = None) -> list[LongAttempt]:
        """Attempts running past their timeout or longer than ``LONG_RUNNING``, longest first
        (worker thread, about once a second for ``/status``; one pass over the attempts in
        flight)."""
        now = time.monotonic() if now is None else now
        found = []
        for attempt in self._attempts:
            started = attempt.started_at
            if started is None or attempt.finished:
                continue
            age = now - started
            past = attempt.timed_out or (attempt.timeout is not None and age > attempt.timeout)
            if past or age > LONG_RUNNING:
                found.append(
                    LongAttempt(
                        attempt.owner.identify(attempt), round(age, 3), attempt.timeout, past
                    )
                )
        found.sort(key=lambda a: -a.age_seconds)
        return found

    # -- the pools -------------------------------------------------------------------------------

    def _thread_pool(self) -> StepThreads:
        if self._pool is None:
            self._pool = StepThreads(self.threads)
        return self._pool

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            self._loop_thread = threading.Thread(
                target=run, name="streamflow-async-steps", daemon=True
            )
            self._loop_thread.start()
            started.wait()
            self._loop = loop
        return self._loop

    def close(self) -> None:
        """Stop taking attempts. Running sync attempts are abandoned (threads cannot be
        stopped; they are daemons, so they do not keep the process alive); async ones are
        cancelled with the loop."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._loop is not None:
            loop = self._loop

            def cancel_all() -> None:
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                loop.call_soon(loop.stop)

            loop.call_soon_threadsafe(cancel_all)
            if self._loop_thread is not None:
                self._loop_thread.join(5)
            self._loop = None
