"""Run a topology in-process, with no broker: for users' unit tests and ours.

The driver uses the real task, processor and RocksDB store code; only Kafka is replaced, by
per-topic in-memory logs. Every ``pipe`` is one committed cycle: the record and everything it
causes downstream (repartition hops included) is processed, the step attempts it started are
waited for (unless ``settle=False``), then stores commit. Keys are placed on partitions with
Kafka's murmur2 partitioner, exactly where a real producer would put them. Records are held to
the size a worker's producer accepts (``max_record_bytes``).

    driver = TestDriver(app, partitions=2)
    driver.pipe("orders", "alice", {"amount": 10})
    assert driver.read("totals") == [("alice", 10)]
"""

from __future__ import annotations

import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamflow.app import App
from streamflow.errors import ConfigError
from streamflow.runtime.collector import (
    DeliveryCallback,
    Headers,
    max_record_bytes,
    record_too_large,
)
from streamflow.runtime.config import producer_config
from streamflow.runtime.partitioner import partition_for
from streamflow.runtime.step_executor import StepExecutor
from streamflow.runtime.task import Task
from streamflow.serde.registry.base import InMemorySchemaRegistry, SchemaRegistry
from streamflow.serde.registry.binding import bind_schemas
from streamflow.state.store import KeyValueStore
from streamflow.workflow.client import InstanceView, WorkflowCommands
from streamflow.workflow.journal import Journal
from streamflow.workflow.messages import Event


@dataclass
class DriverMessage:
    """Quacks like confluent_kafka.Message for the task code."""

    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _timestamp: int
    _headers: Headers = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)

    def headers(self) -> Headers:
        return self._headers

    def error(self) -> None:
        return None


@dataclass
class _Log:
    partitions: int
    records: list[DriverMessage] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def append(
        self, partition: int, key: bytes | None, value: bytes | None, ts: int, headers: Headers
    ) -> DriverMessage:
        while len(self.offsets) < self.partitions:
            self.offsets.append(0)
        msg = DriverMessage("", partition, self.offsets[partition], key, value, ts, headers)
        self.offsets[partition] += 1
        self.records.append(msg)
        return msg


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
        self._logs: dict[str, _Log] = {}
        self._pending: deque[DriverMessage] = deque()
        topology = app.topology
        # No broker, so no Kafka registry: Avro serdes get ids from an in-memory one (pass one
        # to share it between drivers, e.g. to read state written under an older schema).
        self.schema_registry = bind_schemas(
            topology, app.config, schema_registry or InMemorySchemaRegistry()
        )
        self._subs = topology.sub_topologies()
        self.max_record_bytes = max_record_bytes(producer_config(app.config, None))
        """What a worker's producer would accept (``App(kafka={"message.max.bytes": ...})``):
        ``send`` refuses larger records as the worker does, so tests fail where it would."""
        # Real step threads and a real asyncio loop, as in a worker; ``pipe`` and
        # ``advance_time`` return once every attempt they caused has finished.
        self.step_executor = StepExecutor(
            app.config.step_threads, app.config.async_step_concurrency
        )
        self._tasks: dict[tuple[str, int], Task] = {}
        self._all_tasks: list[Task] = []
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
                )
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
        settle: bool = True,
    ) -> None:
        """Produce one record to ``topic`` (encoded with its serdes), process all it causes.

        ``settle=False``: return without waiting for the step attempts it started (what
        finished already is applied); they keep running, and the next ``pipe`` or ``settle()``
        waits for them. How a test acts on an attempt while it runs (cancels it, say)."""
        spec = self.app.topology.topics.get(topic)
        if spec is None:
            raise ConfigError(f"topic {topic!r} is not declared in app {self.app.name!r}")
        kb = None if key is None else spec.key_serde.serialize(key)
        vb = None if value is None else spec.value_serde.serialize(value)
        self.pipe_raw(topic, kb, vb, timestamp=timestamp, headers=headers, settle=settle)

    def pipe_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        timestamp: int | None = None,
        headers: Headers = None,
        settle: bool = True,
    ) -> None:
        """Produce bytes as they are: how tests feed poison records. Not held to
        ``max_record_bytes``: another producer, with other settings, may have written them.
        ``settle``: as for ``pipe``."""
        self._append(topic, key, value, None, timestamp, headers)
        self._drain(settle)

    def settle(self, timeout: float | None = None) -> None:
        """Wait for every step attempt in flight, process what their replies cause, commit.

        ``timeout``: seconds to wait at most; ``TimeoutError`` when attempts still run then
        (a test that expects them to end stays a failing test, not a hanging one)."""
        self._drain(True, None if timeout is None else time.monotonic() + timeout)

    def advance_time(self, ms: int | float) -> None:
        """Move the driver's wall clock and fire what came due (durable timers, retries).

        Record timestamps default to this clock, and so does a workflow's ``ctx.now()``.
        """
        self.now_ms += int(ms)
        for _ in range(10_000):  # timers may schedule timers that are already due
            due = [t for t in self._all_tasks if t.punctuators and t.due(self.now_ms)]
            if not due:
                break
            for task in due:
                task.punctuate(self.now_ms)
            self._drain()

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
        size = (0 if value is None else len(value)) + (0 if key is None else len(key))
        if size > self.max_record_bytes:
            raise record_too_large(topic, size, self.max_record_bytes)
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
            log = self._logs[topic] = _Log(self.partitions)
        if partition is None:
            partition = partition_for(key, log.partitions)
        msg = log.append(partition, key, value, timestamp or self.now_ms, headers)
        msg._topic = topic
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

    def _drain(self, settle: bool = True, deadline: float | None = None) -> None:
        """Process what is pending and what it causes, then commit one cycle. ``settle``:
        also wait for the step attempts in flight (until ``deadline``, if given)."""
        executor = self.step_executor
        while True:
            while self._pending:
                msg = self._pending.popleft()
                self._tasks[(msg.topic(), msg.partition())].process(msg)
            if not settle:
                executor.tick()
                if executor.run_completions() or self._pending:
                    continue
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
        for task in self._all_tasks:
            for source in task.sub.sources:  # step tasks: the offset logic of a worker's commit
                log = self._logs.get(source.name)
                if log is not None and task.partition < len(log.offsets):
                    task.offsets.committable(source.name, log.offsets[task.partition])
        for task in self._all_tasks:
            task.prepare_commit()
        for task in self._all_tasks:
            task.committed()

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


class DriverWorkflowClient(WorkflowCommands):
    """``app.client()``'s API against the driver: events are piped, journals read from stores."""

    def __init__(self, driver: TestDriver) -> None:
        super().__init__(driver.app)
        self._driver = driver

    def _send(self, workflow: Any, instance_id: str, event: Event) -> None:
        self._driver.pipe(self._registry.events_topic(workflow), instance_id, event.to_json())

    def get(self, workflow: Any, id: str) -> InstanceView | None:
        node = self._registry.node_of(workflow)
        partition = partition_for(id.encode(), self._driver.partitions)
        journal = Journal.load(self._driver.store_of(node.instances.name, partition), id)
        if journal is None:
            return None
        view = InstanceView(
            id, journal.header, [journal.entries[s] for s in sorted(journal.entries)]
        )
        return self._viewed(workflow, view)
