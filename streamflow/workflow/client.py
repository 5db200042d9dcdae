"""Start, signal, cancel and query workflow instances from any process.

Commands are records on the workflow's events topic, keyed by instance id. Queries ask the
worker that owns the instance (``workflow/lookup.py``); when no worker serves an endpoint they
read the instance's journal from the ``<workflow>-instances`` changelog (the partition of the
id), so a client needs nothing but Kafka either way.

What this module adds to ``WorkflowCommands`` (``workflow/commands.py``: the checked events and
the views every client shares) is the Kafka side: the producer and its acknowledgements, the
lookups, and the fallback read of the changelog (``workflow/changelog_journals.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from streamflow.cluster.client_errors import ErrorWatch
from streamflow.errors import ConfigError, KafkaUnavailable
from streamflow.kafka.client_log import LIBRDKAFKA_LOGGER
from streamflow.kafka.record_size import max_record_bytes
from streamflow.kafka.settings import KafkaSettings
from streamflow.operate.state_query import SETTLE_S, StateQuery, StateQueryError
from streamflow.runtime.partitioner import partition_for
from streamflow.serde.avro.serde import AvroSerde
from streamflow.serde.registry.binding import bind_schemas
from streamflow.serde.registry.settings import RegistrySettings
from streamflow.workflow.changelog_journals import read_journals
from streamflow.workflow.commands import (
    InstanceView,
    WorkflowCommands,
    check_instance_id,
    not_ended,
)
from streamflow.workflow.deliveries import (
    DELIVERY_TIMEOUT_S,
    Deliveries,
    check_payload_size,
    event_payload,
    event_payload_name,
)
from streamflow.workflow.instance_filter import InstanceFilter
from streamflow.workflow.journal import InstanceStatus
from streamflow.workflow.lookup import Owners, asking, run_blocking
from streamflow.workflow.messages import Event, Start, dumps
from streamflow.workflow.payloads import check_fits, pack, parameter_types


class WorkflowClient(WorkflowCommands):
    """``app.client()``: talks to a running app through its topics and its workers.

    Commands are produced without a flush per call: a command returns once the broker has
    acknowledged its record, and commands made meanwhile (other threads, ``start_many``) share
    the batches. Lookups ask the worker that owns the instance (``workflow/lookup.py``).
    """

    def __init__(self, app: Any, bootstrap: str | None = None) -> None:
        super().__init__(app)
        self._bootstrap = bootstrap or app.config.bootstrap
        self._settings: dict[str, str] = dict(app.config.kafka.values)
        self._errors = ErrorWatch(app.config.kafka, self._bootstrap)
        producer_conf = {
            "bootstrap.servers": self._bootstrap,
            "linger.ms": 2,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            **self._settings,
            **self._errors.client_config(),
        }
        self._producer = Producer(producer_conf)
        self._max_record_bytes = max_record_bytes(producer_conf)
        self._max_payload_bytes = app.config.max_payload_bytes
        self._deliveries = Deliveries(self._producer, self._max_record_bytes)
        self._owners = Owners(app, self._quiet_conf())
        self._partition_counts: dict[str, int] = {}
        self._query: StateQuery | None = None

    def _quiet_conf(self) -> dict[str, Any]:
        """Settings for this client's other clients (admin, readers): librdkafka's log lines
        at DEBUG, like the producer's."""
        return {"bootstrap.servers": self._bootstrap, **self._settings, "logger": LIBRDKAFKA_LOGGER}

    def close(self, timeout: float = DELIVERY_TIMEOUT_S) -> None:
        """Deliver what is in flight (for up to ``timeout`` s) and stop the delivery thread."""
        self._deliveries.close(timeout)

    def __enter__(self) -> WorkflowClient:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    # -- commands ---------------------------------------------------------------------------------

    def _send(self, workflow: Any, instance_id: str, event: Event) -> None:
        delivered = self._produce(workflow, instance_id, event)
        self._acknowledged(
            delivered,
            f"{type(event).__name__} for {instance_id!r} to "
            f"{self._registry.events_topic(workflow)!r}",
        )

    def _acknowledged(self, delivered: Future[Any], what: str) -> Any:
        """The future's result, waited for in slices: between them, what librdkafka reported
        (a refused password or certificate, nothing listening) is raised as one clear line
        within seconds, not as a timeout naming nothing."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while True:
            try:
                result = delivered.result(min(0.5, max(0.0, deadline - time.monotonic())))
            except FutureTimeout:
                self._errors.raise_if_refused()
                if time.monotonic() >= deadline:
                    raise KafkaUnavailable(
                        f"could not deliver the {what} within {DELIVERY_TIMEOUT_S:.0f} s; is "
                        f"{self._bootstrap} reachable?"
                    ) from None
                continue
            self._errors.reached()
            return result

    def _produce(self, workflow: Any, instance_id: str, event: Event) -> Future[None]:
        """Queue ``event``'s record; the future is done when the broker acknowledged it."""
        topic = self._registry.events_topic(workflow)
        value = dumps(event.to_json())
        key = instance_id.encode()
        if len(key) + len(value) > self._max_record_bytes:  # sent as chunks, if it may be
            check_payload_size(
                f"{event_payload_name(event)} of {self._registry.node_of(workflow).workflow} "
                f"instance {instance_id!r}",
                event_payload(event),
                self._max_payload_bytes,
            )
        try:
            return self._deliveries.produce(topic, key, value)
        except KafkaException as exc:
            raise self._unknown_topic(topic, exc) from exc

    def _unknown_topic(self, topic: str, exc: KafkaException) -> Exception:
        if exc.args[0].code() == KafkaError._UNKNOWN_TOPIC:
            return ConfigError(
                f"topic {topic!r} does not exist on {self._bootstrap}: start a worker of app "
                f"{self._app.name!r} once (`streamflow run`), it creates its topics"
            )
        return exc

    def start_many(
        self, workflow: Any, starts: Iterable[tuple[str, Any]], version: int | None = None
    ) -> list[str]:
        """Start many instances at once (``(id, input)`` pairs): every record is queued, then
        all are waited for together. Returns the ids; raises after the whole batch if any
        start was not delivered (a start is idempotent: sending the batch again is safe)."""
        ids, delivered = self._produce_starts(workflow, starts, version)
        refused = self._acknowledged(
            delivered, f"starts of {len(ids)} instances (send them again: starts are idempotent)"
        )
        raise_undelivered(refused, len(ids))
        return ids

    def _produce_starts(
        self, workflow: Any, starts: Iterable[tuple[str, Any]], version: int | None
    ) -> tuple[list[str], Future[list[tuple[bytes, KafkaError]]]]:
        """Encode and check every start first (a bad one sends none), then queue them all."""
        wdef = self._version(workflow, version)
        serde = wdef.input
        self._bind(serde)
        name = self._registry.node_of(workflow).workflow
        limit = self._max_record_bytes
        payload_limit = self._max_payload_bytes
        types_ = parameter_types(wdef.fn)
        check = types_[0] if types_ and serde is None else None
        ids: list[str] = []
        records: list[tuple[bytes, bytes]] = []
        for instance_id, value in starts:
            check_instance_id(workflow, instance_id)
            key = instance_id.encode()
            packed = pack(serde, value)
            if check is not None:
                check_fits(check, packed, f"the input of {name} instance {instance_id!r}")
            encoded = dumps(Start(instance_id, packed, version).to_json())
            if len(key) + len(encoded) > limit:  # sent as chunks, if it may be
                check_payload_size(
                    f"input of {name} instance {instance_id!r}", packed, payload_limit
                )
            ids.append(instance_id)
            records.append((key, encoded))
        topic = self._registry.events_topic(workflow)
        try:
            return ids, self._deliveries.produce_many(topic, records)
        except KafkaException as exc:
            raise self._unknown_topic(topic, exc) from exc

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

    # -- lookups ----------------------------------------------------------------------------------

    def _asking(self, workflow: Any, id: str, wait: float) -> Any:
        node = self._registry.node_of(workflow)
        store = node.instances
        task = self._owners.task_of(store, self._partitions(store.changelog), id)
        return asking(self._owners, store.name, task, id, wait)

    def get(self, workflow: Any, id: str) -> InstanceView | None:
        """The instance as the worker that owns it last committed it (None: no such id).
        Read from the changelog only when no worker serves an endpoint."""
        answer = run_blocking(self._asking(workflow, id, 0.0))
        if answer is None:
            return self._get_from_changelog(workflow, id)
        return self._answered(workflow, id, answer)

    def wait(self, workflow: Any, id: str, timeout: float = 30.0) -> InstanceView:
        """Until the instance has ended: the owning worker answers when its last commit lands
        (a long poll), so this reacts within a commit, without polling."""
        deadline = time.monotonic() + timeout
        view: InstanceView | None = None
        while True:
            remaining = deadline - time.monotonic()
            answer = run_blocking(self._asking(workflow, id, max(0.0, remaining)))
            if answer is None:  # no worker answers: the changelog, every so often
                view = self._get_from_changelog(workflow, id)
                if view is None or not view.done:
                    time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            else:
                view = self._answered(workflow, id, answer)
            if view is not None and view.done:
                return view
            if time.monotonic() >= deadline:
                raise not_ended(id, timeout, view)

    def _answered(self, workflow: Any, id: str, answer: dict[str, Any]) -> InstanceView | None:
        if not answer.get("found"):
            return None
        return self._viewed(workflow, InstanceView(id, answer["header"], answer["entries"]))

    def _get_from_changelog(self, workflow: Any, id: str) -> InstanceView | None:
        changelog = self._registry.node_of(workflow).instances.changelog
        partitions = self._partitions(changelog)
        found = self._read(changelog, [partition_for(id.encode(), partitions)], id).get(id)
        return None if found is None else self._viewed(workflow, found)

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
        """Instances of ``workflow`` in id order, fetched a page at a time from the workers
        (which apply the filters as they page: a million instances are never loaded at once).
        Each view is a summary (status, version, start and finish times, search attributes)
        unless ``full``: then whole, with input, result and journal entries, as ``get`` reads
        one. ``attributes`` match by equality what the workflow set with
        ``ctx.set_attributes``."""
        wanted = InstanceFilter.of(status, version, started_after, started_before, attributes)
        if not self._owners.endpoints():
            yield from self._list_from_changelog(workflow, wanted)
            return
        after: str | None = None
        listed = 0
        while True:
            page = self._page(workflow, after, page_size, wanted, full)
            if page is None:  # the workers do not answer: the changelog, if nothing was listed
                if listed:
                    raise StateQueryError(
                        f"listing {self._registry.node_of(workflow).workflow} stopped after "
                        f"{listed} instances: the workers stopped answering (a rebalance?)"
                    )
                yield from self._list_from_changelog(workflow, wanted)
                return
            for row in page["instances"]:
                listed += 1
                header = {k: v for k, v in row.items() if k not in ("id", "entries")}
                entries = row.get("entries") or []
                yield self._viewed(workflow, InstanceView(row["id"], header, entries))
            after = page["next"]
            if after is None:
                return

    def _page(
        self, workflow: Any, after: str | None, limit: int, wanted: InstanceFilter, full: bool
    ) -> dict[str, Any] | None:
        """One page from the workers; None when they do not all answer within ``SETTLE_S``
        (a worker killed a moment ago is still in the group's description until its session
        times out, and its tasks restore elsewhere)."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            try:
                return self._state_query().instances(
                    workflow, after=after, limit=limit, filters=wanted, full=full
                )
            except StateQueryError:
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.5)

    def _list_from_changelog(self, workflow: Any, wanted: InstanceFilter) -> Iterator[InstanceView]:
        """No worker serves an endpoint: every partition of the changelog, read whole."""
        changelog = self._registry.node_of(workflow).instances.changelog
        found = self._read(changelog, range(self._partitions(changelog)), None)
        for instance_id in sorted(found):
            view = found[instance_id]
            if wanted.matches(view.header):
                yield self._viewed(workflow, view)

    def _state_query(self) -> StateQuery:
        if self._query is None:
            self._query = StateQuery(self._app, self._quiet_conf())
        return self._query

    def _partitions(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            try:
                metadata = self._producer.list_topics(topic, timeout=10)
            except KafkaException as exc:
                self._errors.raise_if_refused()  # the clear line, when librdkafka said why
                raise KafkaUnavailable(
                    f"cannot read the metadata of {topic!r} from {self._bootstrap}: "
                    f"{exc.args[0].str()}"
                ) from None
            count = len(metadata.topics[topic].partitions)
            if count:  # a topic not created yet has none: ask again next time
                self._partition_counts[topic] = count
        return count

    def _read(
        self, changelog: str, partitions: Iterable[int], only: str | None
    ) -> dict[str, InstanceView]:
        """Journals from the changelog itself (``workflow/changelog_journals.py``)."""
        return read_journals(self._quiet_conf(), self._app.name, changelog, partitions, only)


def raise_undelivered(refused: list[tuple[bytes, KafkaError]], total: int) -> None:
    """Raise, naming up to five, when some starts of a batch were refused (the sync and async
    clients' ``start_many``)."""
    refused = list(dict(refused).items())  # one per start, though a big one has many chunks
    if refused:
        shown = "; ".join(f"{key.decode()}: {err.str()}" for key, err in refused[:5])
        raise KafkaUnavailable(
            f"{len(refused)} of {total} starts were not delivered (send them again: starts "
            f"are idempotent): {shown}"
        )


@dataclass(frozen=True)
class _ClientSettings:
    """What ``bind_schemas`` needs to find the registry from a client."""

    name: str
    bootstrap: str
    kafka: KafkaSettings
    schema_registry: RegistrySettings | None = None
