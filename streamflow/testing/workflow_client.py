"""``driver.workflows``: the workflow client's API against the test driver.

The same ``WorkflowCommands`` as ``app.client()`` (``workflow/commands.py``): inputs and payloads
are checked, and events built, exactly as a service's client does it. Only the two ends differ:
an event is piped into the driver as a record of the events topic (as chunks when the Kafka
client would send chunks), and an instance is read from the driver's instances store instead of
asking a worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

from streamflow.app import App
from streamflow.cluster.record_chunks import split_value
from streamflow.runtime.partitioner import partition_for
from streamflow.state.store import KeyValueStore
from streamflow.workflow.commands import InstanceView, WorkflowCommands
from streamflow.workflow.deliveries import check_payload_size, event_payload, event_payload_name
from streamflow.workflow.instance_filter import InstanceFilter
from streamflow.workflow.instance_queries import header_summary
from streamflow.workflow.journal import HEADER, InstanceStatus, Journal
from streamflow.workflow.messages import Event, dumps


class Driver(Protocol):
    """What the client uses of a ``TestDriver``: stated here so this module needs no import of
    the driver, which imports it (``TestDriver.workflows``)."""

    app: App
    partitions: int
    max_record_bytes: int

    def pipe_raw(
        self, topic: str, key: bytes | None, value: bytes | None, *, wait: bool = True
    ) -> None: ...

    def store_of(self, name: str, partition: int) -> KeyValueStore: ...


class DriverWorkflowClient(WorkflowCommands):
    """``app.client()``'s API against the driver: events are piped, journals read from stores.

    ``wait=False``: each call returns with the step attempts it caused still running (the
    cycle stays open until ``driver.settle()`` or ``driver.abort()``)."""

    def __init__(self, driver: Driver, wait: bool = True) -> None:
        super().__init__(driver.app)
        self._driver = driver
        self._wait = wait

    def _send(self, workflow: Any, instance_id: str, event: Event) -> None:
        """As the Kafka client sends: a payload over the app's limit refused, a record over
        the producer's limit as chunks."""
        driver = self._driver
        topic = self._registry.events_topic(workflow)
        key, value = instance_id.encode(), dumps(event.to_json())
        if len(key) + len(value) <= driver.max_record_bytes:
            driver.pipe_raw(topic, key, value, wait=self._wait)
            return
        check_payload_size(
            f"{event_payload_name(event)} of {self._registry.node_of(workflow).workflow} "
            f"instance {instance_id!r}",
            event_payload(event),
            self._app.config.max_payload_bytes,
        )
        chunks = split_value(key, value, driver.max_record_bytes)
        for chunk in chunks[:-1]:
            driver.pipe_raw(topic, key, chunk, wait=False)
        driver.pipe_raw(topic, key, chunks[-1], wait=self._wait)

    def list(
        self,
        workflow: Any,
        *,
        status: InstanceStatus | None = None,
        version: int | None = None,
        started_after: datetime | None = None,
        started_before: datetime | None = None,
        attributes: dict[str, Any] | None = None,
        page_size: int = 200,
        full: bool = False,
    ) -> Iterator[InstanceView]:
        """``WorkflowClient.list`` against the driver's stores, in id order."""
        wanted = InstanceFilter.of(status, version, started_after, started_before, attributes)
        name = self._registry.node_of(workflow).instances.name
        found = []
        for partition in range(self._driver.partitions):
            for key, header in self._driver.store_of(name, partition).items():
                if key.endswith(HEADER) and wanted.matches(header):
                    ident = key[: -len(HEADER)]
                    whole = self.get(workflow, ident) if full else None
                    found.append(whole or InstanceView(ident, header_summary(header), []))
        found.sort(key=lambda view: view.id)
        return iter([view if full else self._viewed(workflow, view) for view in found])

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
