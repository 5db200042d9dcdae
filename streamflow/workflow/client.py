"""Start, signal, cancel and query workflow instances from any process.

Commands are records on the workflow's events topic, keyed by instance id; queries read the
instance's journal from the ``<workflow>-instances`` changelog (the partition of the id), so a
client needs nothing but Kafka.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streamflow.errors import ConfigError, KafkaUnavailable
from streamflow.runtime.kafka_settings import KafkaSettings
from streamflow.runtime.partitioner import partition_for
from streamflow.serde.avro.serde import AvroSerde
from streamflow.serde.registry.binding import bind_schemas
from streamflow.serde.registry.settings import RegistrySettings
from streamflow.workflow.journal import ENTRY, HEADER, TERMINAL
from streamflow.workflow.messages import (
    Cancel,
    Event,
    Purge,
    Resume,
    Signal,
    Start,
    Terminate,
    dumps,
)
from streamflow.workflow.payloads import pack, unpack


@dataclass(frozen=True)
class InstanceView:
    """A workflow instance as its journal tells it."""

    id: str
    header: dict[str, Any]
    entries: list[dict[str, Any]]
    result_serde: AvroSerde | None = None
    """The result's Avro type, when the workflow declares one: ``result`` is read with it."""

    @property
    def status(self) -> str:
        status: str = self.header["status"]
        return status

    @property
    def result(self) -> Any:
        if self.result_serde is None:
            return self.header.get("result")
        return unpack(self.result_serde, self.header.get("result"), f"the result of {self.id!r}")

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


class WorkflowCommands:
    """Start, signal and cancel as events on a workflow's events topic; how they travel and how
    journals are read is the subclass's: Kafka (``WorkflowClient``) or the test driver."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._registry = app.workflows

    def _send(self, workflow: Any, instance_id: str, event: Event) -> None:
        raise NotImplementedError

    def _bind(self, serde: AvroSerde | None) -> None:
        """Make sure ``serde`` knows its schema id (the test driver binds at start)."""

    def _pack(self, serde: AvroSerde | None, value: Any) -> Any:
        """Avro payloads are sent in the wire format, with this code's schema id: a worker on
        an older or newer schema version resolves them."""
        self._bind(serde)
        return pack(serde, value)

    def start(
        self,
        workflow: Any,
        *,
        id: str,
        input: Any = None,
        version: int | None = None,
    ) -> str:
        """Start an instance; a second start with the same id leaves the first one running."""
        wdef = self._version(workflow, version)
        if not isinstance(id, str) or not id:
            raise TypeError(
                f"start({workflow!r}, id=...): the instance id must be a non-empty str, not {id!r}"
            )
        self._send(workflow, id, Start(id, self._pack(wdef.input, input), version))
        return id

    def signal(self, workflow: Any, id: str, name: str, payload: Any = None) -> None:
        # The instance may be pinned to another version: the newest one's declaration is a
        # compatible version of its schema, so the orchestrator reads it either way.
        serde = self._version(workflow, None).signal_serde(name)
        self._send(workflow, id, Signal(id, name, self._pack(serde, payload)))

    def cancel(self, workflow: Any, id: str) -> None:
        """Stop the instance: ``Cancelled`` is raised at its current await, its timers are
        deleted, its running attempts cancelled, and its compensations run before it reports
        ``cancelled``."""
        self._send(workflow, id, Cancel(id))

    def purge(self, workflow: Any, id: str) -> None:
        """Delete a finished instance now instead of after its retention (one that has not
        ended is left alone)."""
        self._send(workflow, id, Purge(id))

    def resume(self, workflow: Any, id: str) -> None:
        """Run a ``suspended`` instance's code again (after a fix, or a passing cause)."""
        self._send(workflow, id, Resume(id))

    def fail(self, workflow: Any, id: str, reason: str = "") -> None:
        """End an instance for good as ``failed`` (no compensation): for a suspended
        instance nobody will fix, or one that must stop without its undo steps."""
        self._send(workflow, id, Terminate(id, reason))

    def _version(self, workflow: Any, version: int | None) -> Any:
        versions = self._registry.node_of(workflow).versions
        return versions.get(version or max(versions)) or versions[max(versions)]

    def _viewed(self, workflow: Any, view: InstanceView) -> InstanceView:
        wdef = self._registry.node_of(workflow).versions.get(view.header.get("version"))
        if wdef is None or wdef.result is None:
            return view
        self._bind(wdef.result)
        return dataclasses.replace(view, result_serde=wdef.result)


class WorkflowClient(WorkflowCommands):
    """``app.client()``: talks to a running app through its topics."""

    def __init__(self, app: Any, bootstrap: str | None = None) -> None:
        super().__init__(app)
        self._bootstrap = bootstrap or app.config.bootstrap
        self._settings: dict[str, str] = dict(app.config.kafka.values)
        self._producer = Producer(
            {
                "bootstrap.servers": self._bootstrap,
                "linger.ms": 1,
                "enable.idempotence": True,
                "partitioner": "murmur2_random",
                **self._settings,
            }
        )

    def _send(self, workflow: Any, instance_id: str, event: Event) -> None:
        topic = self._registry.events_topic(workflow)
        try:
            self._producer.produce(topic, dumps(event.to_json()), instance_id.encode())
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError._UNKNOWN_TOPIC:
                raise ConfigError(
                    f"topic {topic!r} does not exist on {self._bootstrap}: start a worker of app "
                    f"{self._app.name!r} once (`streamflow run`), it creates its topics"
                ) from exc
            raise
        if self._producer.flush(30):
            raise KafkaUnavailable(
                f"could not deliver {type(event).__name__} for {instance_id!r} to "
                f"{topic!r} within 30 s; is {self._bootstrap} reachable?"
            )

    def _bind(self, serde: AvroSerde | None) -> None:
        if serde is not None and serde.schema_id is None:
            bind_schemas(
                self._app.topology,
                _ClientSettings(
                    self._app.name,
                    self._bootstrap,
                    self._app.config.kafka,
                    self._app.config.schema_registry,
                ),
            )

    def get(self, workflow: Any, id: str) -> InstanceView | None:
        node = self._registry.node_of(workflow)
        changelog = node.instances.changelog
        partitions = self._partitions(changelog)
        found = self._scan(changelog, [partition_for(id.encode(), partitions)], id).get(id)
        return None if found is None else self._viewed(workflow, found)

    def list(self, workflow: Any) -> list[InstanceView]:
        changelog = self._registry.node_of(workflow).instances.changelog
        return sorted(
            (
                self._viewed(workflow, v)
                for v in self._scan(changelog, range(self._partitions(changelog)), None).values()
            ),
            key=lambda v: v.header.get("started_ms", 0),
        )

    def wait(self, workflow: Any, id: str, timeout: float = 30.0) -> InstanceView:
        deadline = time.monotonic() + timeout
        while True:
            view = self.get(workflow, id)
            if view is not None and view.done:
                return view
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"instance {id!r} not finished after {timeout}s "
                    f"(status: {view.status if view else 'not started'})"
                )
            time.sleep(0.2)

    def _partitions(self, topic: str) -> int:
        metadata = self._producer.list_topics(topic, timeout=10)
        return len(metadata.topics[topic].partitions)

    def _scan(self, topic: str, partitions: Any, only: str | None) -> dict[str, InstanceView]:
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                **self._settings,
                # Never joins (partitions are assigned); under the app's prefix for its ACLs.
                "group.id": f"{self._app.name}-query-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
        parts = list(partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        latest: dict[str, Any] = {}
        eof: set[int] = set()
        try:
            while len(eof) < len(parts):
                for msg in consumer.consume(10_000, 1.0):
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            eof.add(msg.partition() or 0)
                        continue
                    raw_key, value = msg.key(), msg.value()
                    if raw_key is None:
                        continue  # not an instance record: instances are keyed by workflow id
                    key = raw_key.decode()
                    if only is not None and not key.startswith(only):
                        continue
                    latest[key] = None if value is None else orjson.loads(value)
        finally:
            consumer.close()
        views: dict[str, InstanceView] = {}
        for key, value in latest.items():
            if value is not None and key.endswith(HEADER):
                instance_id = key[:-1]
                if only is None or instance_id == only:
                    views[instance_id] = InstanceView(instance_id, value, [])
        for key, value in sorted(latest.items()):
            if value is None or ENTRY not in key:
                continue
            instance_id = key.split(ENTRY)[0]
            if instance_id in views:
                views[instance_id].entries.append(value)
        return views


@dataclass(frozen=True)
class _ClientSettings:
    """What ``bind_schemas`` needs to find the registry from a client."""

    name: str
    bootstrap: str
    kafka: KafkaSettings
    schema_registry: RegistrySettings | None = None
