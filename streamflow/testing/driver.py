"""``TestDriver``: an App's topology run in-process, every task real, Kafka replaced.

The driver uses the real task, processor and RocksDB store code; only Kafka is replaced, by
per-topic in-memory logs (``testing/topic_logs.py``). Every ``pipe`` is one committed cycle: the
record and everything it causes downstream (repartition hops included) is processed, the step
attempts it started are waited for (unless ``settle=False``: the cycle commits with them
running, as a worker's does), then stores commit. Keys are placed on partitions with Kafka's
murmur2 partitioner, exactly where a real producer would put them. Records are held to the size
a worker's producer accepts (``max_record_bytes``). A task that pauses a partition (a step whose
lane is full) gets no records of it until it resumes it, as from a paused consumer.
``pipe(..., wait=False)`` leaves the cycle open with its step attempts running; ``abort()`` and
``settle()`` then end it as a worker would.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from streamflow.app import App
from streamflow.cluster.record_chunks import chunked_topics, send_chunks
from streamflow.errors import ConfigError
from streamflow.kafka.record_size import check_record_size, max_record_bytes
from streamflow.runtime.collector import DeliveryCallback
from streamflow.runtime.config import producer_config
from streamflow.runtime.partitioner import partition_for
from streamflow.runtime.step_executor import StepExecutor
from streamflow.runtime.task import Task
from streamflow.serde.registry.base import InMemorySchemaRegistry, SchemaRegistry
from streamflow.serde.registry.binding import bind_schemas
from streamflow.state.store import KeyValueStore
from streamflow.testing.topic_logs import DriverMessage, TopicLog
from streamflow.testing.workflow_client import DriverWorkflowClient
from streamflow.topology.nodes import Headers

MAX_FIRINGS = 1_000_000
"""Firings one ``advance_time`` may do (each at its own instant) before it calls it a loop."""


class TestDriver:
    """In-process runner of an App's topology."""

    __test__ = False  # not a pytest class, despite the name

    def __init__(
        self,
        app: App,
        *,
        partitions: int = 1,
        state_dir: str | Path | None = None,
        start_time_ms: int = 1_700_000_000_000,
        schema_registry: SchemaRegistry | None = None,
    ) -> None:
        self.app = app
        self.partitions = partitions
        self._tmp = None if state_dir else tempfile.TemporaryDirectory(prefix="streamflow-driver-")
        self.state_dir = Path(state_dir or self._tmp.name)  # type: ignore[union-attr]
        self.now_ms = start_time_ms
        self._logs: dict[str, TopicLog] = {}
        self._pending: deque[DriverMessage] = deque()
        topology = app.topology
        # No broker, so no Kafka registry: Avro serdes get ids from an in-memory one (pass one
        # to share it between drivers, e.g. to read state written under an older schema).
        self.schema_registry = bind_schemas(
            topology, app.config, schema_registry or InMemorySchemaRegistry()
        )
        self._subs = topology.sub_topologies()
        # Real step threads and a real asyncio loop, as in a worker; ``pipe`` and
        # ``advance_time`` return once every attempt they caused has finished.
        self.step_executor = StepExecutor(
            app.config.step_threads, app.config.async_step_concurrency
        )
        self._tasks: dict[tuple[str, int], Task] = {}
        self._all_tasks: list[Task] = []
        self.max_record_bytes = max_record_bytes(producer_config(app.config, None))
        """What a worker's producer would accept (``App(kafka={"message.max.bytes": ...})``):
        ``send`` refuses larger records as the worker does, so tests fail where it would."""
        self._chunked = chunked_topics(topology.topics) | {app.dead_letter_topic}
        self._paused: set[tuple[str, int]] = set()
        """(topic, partition) a task paused: its records wait in ``_pending``."""
        self._cycle_inputs: list[DriverMessage] = []
        self._cycle_outputs: list[DriverMessage] = []
        """What the open cycle consumed and produced (``abort`` undoes it)."""
        for sub in self._subs:
            nodes = {t.name: topology.source_node(t.name) for t in sub.sources}
            for p in range(partitions):
                task = Task(
                    sub,
                    nodes,
                    p,
                    self.state_dir / app.name,
                    self,
                    app.dead_letter_topic,
                    clock=lambda: self.now_ms,
                    step_executor=self.step_executor,
                    max_record_bytes=self.max_record_bytes,
                    max_payload_bytes=app.config.max_payload_bytes,
                )
                task.pause_input = functools.partial(self._pause, p)
                task.resume_input = functools.partial(self._resume, p)
                self._all_tasks.append(task)
                for topic in nodes:
                    self._tasks[(topic, p)] = task

    # -- input -----------------------------------------------------------------------------------

    def pipe(
        self,
        topic: str,
        key: Any,
        value: Any,
        *,
        timestamp: int | None = None,
        headers: Headers = None,
        wait: bool = True,
        settle: bool = True,
    ) -> None:
        """Produce one record to ``topic`` (encoded with its serdes), process all it causes.

        ``settle=False``: commit the cycle without waiting for the step attempts it started
        (what finished already is applied); they keep running, and the next ``pipe`` or
        ``settle()`` waits for them. How a test acts on an attempt while it runs (cancels it).
        ``wait=False``: process the records it causes but leave step attempts running and the
        cycle open (``settle`` or ``abort`` ends it): how tests abort a cycle mid-attempt."""
        spec = self.app.topology.topics.get(topic)
        if spec is None:
            raise ConfigError(f"topic {topic!r} is not declared in app {self.app.name!r}")
        kb = None if key is None else spec.key_serde.serialize(key)
        vb = None if value is None else spec.value_serde.serialize(value)
        self.pipe_raw(topic, kb, vb, timestamp=timestamp, headers=headers, wait=wait, settle=settle)

    def pipe_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        timestamp: int | None = None,
        headers: Headers = None,
        wait: bool = True,
        settle: bool = True,
    ) -> None:
        """Produce bytes as they are: how tests feed poison records. Not held to
        ``max_record_bytes``: another producer, with other settings, may have written them.
        ``wait``, ``settle``: as for ``pipe``."""
        self._append(topic, key, value, None, timestamp, headers)
        self._cycle_outputs.pop()  # produced by the test, not by the cycle: an abort keeps it
        if wait:
            self._drain(settle)
        else:
            self._process_pending()

    def settle(self, timeout: float | None = None) -> None:
        """Process what is queued, wait for every step attempt, process what their replies
        cause and commit the cycle.

        ``timeout``: seconds to wait at most; ``TimeoutError`` when attempts still run then
        (a test that expects them to end stays a failing test, not a hanging one)."""
        self._drain(True, None if timeout is None else time.monotonic() + timeout)

    def abort(self) -> None:
        """Abort the open cycle as a worker does when a commit fails: what it produced is gone
        (its transaction never commits; the offsets those records took stay used, as aborted
        records' do), every task drops its uncommitted writes and forgets the commands it
        admitted (attempts still running are void), and what the cycle consumed is delivered
        again."""
        dropped = {id(m) for m in self._cycle_outputs}
        for log in self._logs.values():
            log.records = [m for m in log.records if id(m) not in dropped]
        again = [m for m in self._cycle_inputs if id(m) not in dropped]
        rest = [m for m in self._pending if id(m) not in dropped]
        self._cycle_inputs, self._cycle_outputs = [], []
        for task in self._all_tasks:
            task.aborted()
        self._pending = deque(again + rest)
        self._process_pending()  # delivered again at once; ``settle`` waits for the attempts

    def advance_time(self, ms: int | float, *, late: bool = False) -> None:
        """Move the driver's wall clock and fire what comes due (durable timers, retries).

        Time passes in order: each timer fires at its own time, and the timers it sets (a
        retry's backoff, the next sleep) fire too if they fall within the jump, so one call
        gets through retries and timeouts. ``late=True`` instead jumps at once and fires what
        is due at the end, as a worker that was stopped or stalled for ``ms`` would.

        Record timestamps default to this clock, and so does a workflow's ``ctx.now()``.
        """
        if late:
            self.now_ms += int(ms)
            ms = 0
        end = self.now_ms + int(ms)
        for _ in range(MAX_FIRINGS):
            at = self._next_due(end)
            if at is None:
                break
            # Time passes in order: a timer fires at its own time, and what it sets (a retry's
            # backoff, the next sleep) counts from there, so it fires within this jump too.
            self.now_ms = max(self.now_ms, at)
            for task in self._all_tasks:
                if task.punctuators and task.due(self.now_ms):
                    task.punctuate(self.now_ms)
            self._drain()
        else:
            raise RuntimeError(
                f"advance_time: more than {MAX_FIRINGS} firings before {end} ms; advance in "
                "smaller steps (a timer that keeps setting itself due at once?)"
            )
        self.now_ms = end

    def _next_due(self, end: int) -> int | None:
        """The earliest time in ``[now, end]`` at which some task has a timer due, or None.
        A punctuator only says whether it is due at a time, and that is monotonic in time: a
        binary search finds the first instant without an API of its own."""

        def any_due(at: int) -> bool:
            return any(t.punctuators and t.due(at) for t in self._all_tasks)

        if not any_due(end):
            return None
        lo, hi = self.now_ms, end
        if any_due(lo):
            return lo
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if any_due(mid):
                hi = mid
            else:
                lo = mid
        return hi

    @property
    def workflows(self) -> DriverWorkflowClient:
        """Start, signal, cancel and inspect workflow instances in the driver."""
        return DriverWorkflowClient(self)

    # -- RecordCollector -------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: int | None,
        headers: Headers,
    ) -> None:
        size = (0 if key is None else len(key)) + (0 if value is None else len(value))
        if size > self.max_record_bytes and topic in self._chunked and value is not None:
            send_chunks(
                self.send, topic, key, value, partition, timestamp, headers, self.max_record_bytes
            )
            return
        check_record_size(topic, key, value, self.max_record_bytes)
        self._append(topic, key, value, partition, timestamp, headers)

    def _append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: int | None,
        headers: Headers,
    ) -> None:
        log = self._logs.get(topic)
        if log is None:
            log = self._logs[topic] = TopicLog(self.partitions)
        if partition is None:
            partition = partition_for(key, log.partitions)
        msg = log.append(partition, key, value, timestamp or self.now_ms, headers)
        msg._topic = topic
        self._cycle_outputs.append(msg)
        if (topic, partition) in self._tasks:
            self._pending.append(msg)

    def send_tracked(
        self,
        topic: str,
        key: bytes,
        value: bytes | None,
        partition: int,
        delivered: DeliveryCallback,
    ) -> None:
        self.send(topic, key, value, partition, None, None)
        delivered(self._logs[topic].offsets[partition] - 1)

    def revoke(self, partition: int) -> None:
        """Take ``partition`` away as a rebalance does: its tasks close (their uncommitted
        writes dropped, their step attempts given up: waiting ones never run, async ones are
        cancelled), and its records are no longer processed here. Other partitions go on."""
        for task in [t for t in self._all_tasks if t.partition == partition]:
            self._all_tasks.remove(task)
            for source in task.sub.sources:
                self._tasks.pop((source.name, partition), None)
            task.close()
        self._pending = deque(m for m in self._pending if (m.topic(), m.partition()) in self._tasks)

    def _pause(self, partition: int, topic: str) -> None:
        self._paused.add((topic, partition))

    def _resume(self, partition: int, topic: str) -> None:
        self._paused.discard((topic, partition))

    def _process_pending(self) -> None:
        """Process the queued records in order; those of a paused partition (and every later
        one of that partition, so its order holds) wait for its resume."""
        held: deque[DriverMessage] = deque()
        blocked: set[tuple[str, int]] = set()
        pending = self._pending
        while pending:
            msg = pending.popleft()
            where = (msg.topic(), msg.partition())
            if where in blocked or where in self._paused:
                blocked.add(where)
                held.append(msg)
                continue
            self._cycle_inputs.append(msg)
            self._tasks[where].process(msg)
        pending.extend(held)

    def _drain(self, settle: bool = True, deadline: float | None = None) -> None:
        """Process what is pending and what it causes, then commit one cycle. ``settle``:
        also wait for the step attempts in flight (until ``deadline``, if given)."""
        executor = self.step_executor
        while True:
            self._process_pending()
            if not settle:
                executor.tick()
                if executor.run_completions():
                    continue  # their replies and what those cause, in this cycle
                break  # attempts still running stay in flight
            if executor.in_flight <= executor.overrunning and not executor.has_completions():
                break  # an overrunning sync attempt was answered already; do not wait for it
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"{executor.in_flight - executor.overrunning} step attempt(s) still run"
                )
            executor.wait(0.05)
            executor.tick()
            executor.run_completions()
        if self._pending and settle:
            raise RuntimeError(
                f"{len(self._pending)} record(s) wait on paused partitions "
                f"{sorted(self._paused)} and no step attempt runs that could resume them"
            )
        for task in self._all_tasks:
            for source in task.sub.sources:  # step tasks: the offset logic of a worker's commit
                log = self._logs.get(source.name)
                if log is not None and task.partition < len(log.offsets):
                    task.offsets.committable(source.name, log.offsets[task.partition])
        for task in self._all_tasks:
            task.prepare_commit()
        for task in self._all_tasks:
            task.committed()
        self._cycle_inputs.clear()
        self._cycle_outputs.clear()

    # -- output ----------------------------------------------------------------------------------

    def read(self, topic: str) -> list[tuple[Any, Any]]:
        """Every (key, value) written to ``topic`` so far, decoded with its serdes, in order."""
        spec = self.app.topology.topics.get(topic)
        if spec is None:
            raise ConfigError(f"topic {topic!r} is not declared in app {self.app.name!r}")
        kd, vd = spec.key_serde.deserialize, spec.value_serde.deserialize
        return [
            (None if k is None else kd(k), None if v is None else vd(v))
            for k, v in ((m.key(), m.value()) for m in self.messages(topic))
        ]

    def messages(self, topic: str) -> list[DriverMessage]:
        log = self._logs.get(topic)
        return list(log.records) if log else []

    def dead_letters(self) -> list[DriverMessage]:
        return self.messages(self.app.dead_letter_topic)

    def store(self, name: str) -> dict[Any, Any]:
        """The committed contents of store ``name`` across all partitions."""
        result: dict[Any, Any] = {}
        for task in self._all_tasks:
            if name in task._store_specs:
                result.update(dict(task.store(name).items()))
        return result

    def store_of(self, name: str, partition: int) -> KeyValueStore:
        for task in self._all_tasks:
            if task.partition == partition and name in task._store_specs:
                return task.store(name)
        raise KeyError(f"no task has store {name!r} on partition {partition}")

    def close(self) -> None:
        for task in self._all_tasks:
            task.close()
        self.step_executor.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> TestDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
