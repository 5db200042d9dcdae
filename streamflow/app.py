"""App: the one object a user creates. It names the consumer group, declares topics and stores,
and hands the resulting topology to a worker (``streamflow run``) or the test driver.
"""

from __future__ import annotations

import functools
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from streamflow.errors import ConfigError
from streamflow.kafka.record_size import DEFAULT_MAX_PAYLOAD_BYTES
from streamflow.kafka.settings import resolve as resolve_kafka
from streamflow.runtime.config import AppConfig, GroupProtocol, Guarantee
from streamflow.runtime.step_executor import DEFAULT_ASYNC_STEP_CONCURRENCY, DEFAULT_STEP_THREADS
from streamflow.serde.base import JSON, STR, Serde, resolve_serde
from streamflow.topology.describe import describe
from streamflow.topology.graph import Topology
from streamflow.topology.nodes import SourceNode, TableSourceNode
from streamflow.topology.options import Clock
from streamflow.topology.punctuation import PunctuationContext, PunctuationNode
from streamflow.topology.specs import StoreSpec, TopicSpec
from streamflow.topology.stream import Stream, Table
from streamflow.workflow.api import DEFAULT_RETENTION, Retry
from streamflow.workflow.client import WorkflowClient
from streamflow.workflow.compiler import WorkflowRegistry

if TYPE_CHECKING:
    from streamflow.runtime.worker import Worker
    from streamflow.workflow.async_client import AsyncWorkflowClient


@functools.cache
def _local_bootstrap() -> str:
    """The dev cluster of this checkout when one runs (it listens on a free port), else the
    usual local broker. Looked up once per process."""
    from streamflow.dev.kafka import running_dev_bootstrap

    return running_dev_bootstrap() or "127.0.0.1:9092"


F = TypeVar("F", bound=Callable[..., Any])
"""A step or workflow function: the decorators give it back with its own type."""


class App:
    """A streamflow application: ``App("orders")``; its name is the consumer group id."""

    def __init__(
        self,
        name: str,
        *,
        bootstrap: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        guarantee: Guarantee = "exactly_once",
        commit_interval: float | timedelta = 0.1,
        commit_every: int = 20_000,
        partitions: int = 6,
        step_threads: int = DEFAULT_STEP_THREADS,
        async_step_concurrency: int = DEFAULT_ASYNC_STEP_CONCURRENCY,
        kafka: Mapping[str, object] | None = None,
        num_standbys: int = 0,
        group_protocol: GroupProtocol = "auto",
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        # `streamflow run FILE --app-name NEW` (and STREAMFLOW_APP_NAME for every command): the
        # same code under another group and other internal topics, as a replay wants.
        name = os.environ.get("STREAMFLOW_APP_NAME") or name
        if not name or any(c in name for c in " /\\"):
            raise ConfigError(
                f"app name {name!r} must be non-empty without spaces or slashes: "
                "it becomes the consumer group id and a topic prefix"
            )
        if guarantee not in ("exactly_once", "at_least_once"):
            raise ConfigError(
                f"app {name!r}: guarantee must be 'exactly_once' or "
                f"'at_least_once', not {guarantee!r}"
            )
        for what, value in (
            ("step_threads", step_threads),
            ("async_step_concurrency", async_step_concurrency),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"app {name!r}: {what} must be a positive int, not {value!r}")
        interval = (
            commit_interval.total_seconds()
            if isinstance(commit_interval, timedelta)
            else float(commit_interval)
        )
        if group_protocol not in ("auto", "classic", "consumer"):
            raise ConfigError(
                f"app {name!r}: group_protocol must be 'auto', 'classic' or 'consumer', not "
                f"{group_protocol!r}"
            )
        if not isinstance(num_standbys, int) or num_standbys < 0:
            raise ConfigError(
                f"app {name!r}: num_standbys must be an int >= 0, not {num_standbys!r}"
            )
        if not isinstance(max_payload_bytes, int) or max_payload_bytes < 1024:
            raise ConfigError(
                f"app {name!r}: max_payload_bytes must be an int >= 1024, not {max_payload_bytes!r}"
            )
        self.name = name
        settings = resolve_kafka(app=kafka)
        self.config = AppConfig(
            name=name,
            bootstrap=bootstrap
            or settings.values.get("bootstrap.servers")
            or os.environ.get("STREAMFLOW_BOOTSTRAP")
            or _local_bootstrap(),
            state_dir=Path(state_dir or os.environ.get("STREAMFLOW_STATE_DIR", ".state")),
            guarantee=guarantee,
            commit_interval=interval,
            commit_every=commit_every,
            step_threads=step_threads,
            async_step_concurrency=async_step_concurrency,
            # Settings every client gets; `streamflow run --config/--kafka` resolves again.
            kafka=settings,
            kafka_from_app=tuple((str(k), str(v)) for k, v in (kafka or {}).items()),
            num_standbys=num_standbys,
            group_protocol=group_protocol,
            max_payload_bytes=max_payload_bytes,
        )
        self.topology = Topology(name)
        self.workflows = WorkflowRegistry(self.topology, partitions)
        self.topology.workflows = self.workflows  # streams start workflows by function
        """Internal workflow and step topics are created with ``partitions`` partitions."""

    # -- workflows -------------------------------------------------------------------------------

    @overload
    def step(self, fn: F, /) -> F: ...

    @overload
    def step(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: timedelta | None = None,
        entity: str | None = None,
        args: Sequence[str | Serde | None] = (),
        result: str | Serde | None = None,
        max_concurrency: int | None = None,
        schedule_to_close: timedelta | None = None,
    ) -> Callable[[F], F]: ...

    def step(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: timedelta | None = None,
        entity: str | None = None,
        args: Sequence[str | Serde | None] = (),
        result: str | Serde | None = None,
        max_concurrency: int | None = None,
        schedule_to_close: timedelta | None = None,
    ) -> Any:
        """Declare a step: ``fn(ctx, *args)``, run at least once per attempt, retried on failure.

        ``entity="accounts"`` makes it an entity step: commands are keyed by the first argument,
        and ``ctx.state`` reads/writes that entity's value in store ``accounts`` exactly once
        with the command's consumption.

        ``args=(None, avro("acme.Order"))`` and ``result=avro(...)`` send and journal those
        payloads as Avro (by argument position), readable after their schemas evolve.

        ``def`` steps run on the worker's step threads, ``async def`` steps on its asyncio
        loop, never inside a commit cycle; ``max_concurrency`` caps this step's attempts at
        once per worker, and ``timeout`` cancels (async) or rejects (sync) a slow attempt.

        The default ``retry`` tries again after 1 s, doubling to 100 s, with jitter, until the
        step succeeds or raises ``NonRetryable``; ``schedule_to_close`` bounds the whole call
        (every attempt and backoff) and fails it for good when it passes.
        """

        def register(f: Any) -> Any:
            for what, value in (("timeout", timeout), ("schedule_to_close", schedule_to_close)):
                if value is not None and (
                    not isinstance(value, timedelta) or value.total_seconds() <= 0
                ):
                    raise ConfigError(
                        f"step {name or f.__name__!r}: {what} must be a positive "
                        f"timedelta, not {value!r}"
                    )
            self.workflows.add_step(
                f,
                name,
                retry or Retry(),
                timeout,
                entity,
                args,
                result,
                max_concurrency,
                schedule_to_close,
            )
            return f

        return register(fn) if fn is not None else register

    @overload
    def workflow(self, fn: F, /) -> F: ...

    @overload
    def workflow(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        version: int = 1,
        input: str | Serde | None = None,
        result: str | Serde | None = None,
        signals: Mapping[str, Any] | None = None,
        timeout: timedelta | None = None,
        retention: timedelta | None = DEFAULT_RETENTION,
    ) -> Callable[[F], F]: ...

    def workflow(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        version: int = 1,
        input: str | Serde | None = None,
        result: str | Serde | None = None,
        signals: Mapping[str, Any] | None = None,
        timeout: timedelta | None = None,
        retention: timedelta | None = DEFAULT_RETENTION,
    ) -> Any:
        """Declare a durable workflow ``async def w(ctx, input)``; versions run side by side.

        ``input=avro("acme.Transfer")``, ``result=…`` and ``signals={"approve": avro(…)}``
        journal those payloads as Avro, so a sleeping instance reads them after its schemas
        evolve. ``signals={"approve": Approval}`` (a Python type: a dataclass, ``int``,
        ``list[str]``, a ``Literal``) keeps a JSON payload but checks it: the client refuses a
        payload that does not fit, naming the field, and ``ctx.wait_signal("approve")``
        returns an ``Approval``.
        ``timeout`` bounds an instance from start to end: past it the instance is cancelled
        (its compensations run) and ends with the error ``WorkflowTimedOut``. A finished
        instance is deleted ``retention`` after it ended (default 7 days; None keeps it):
        a start with the same id is ignored only while the instance is kept.
        """

        def register(f: Callable[..., Any]) -> Callable[..., Any]:
            for what, value in (("timeout", timeout), ("retention", retention)):
                if value is not None and (
                    not isinstance(value, timedelta) or value.total_seconds() <= 0
                ):
                    raise ConfigError(
                        f"workflow {name or f.__name__!r}: {what} must be a positive "
                        f"timedelta or None, not {value!r}"
                    )
            wdef = self.workflows.add_workflow(
                f, name, version, input, result, signals, timeout, retention
            )
            f.__streamflow_workflow__ = wdef.name  # type: ignore[attr-defined]
            return f

        return register(fn) if fn is not None else register

    def client(self, bootstrap: str | None = None) -> WorkflowClient:
        """Start, signal, cancel and query workflow instances from any process."""
        return WorkflowClient(self, bootstrap)

    def async_client(self, bootstrap: str | None = None) -> AsyncWorkflowClient:
        """``client()`` for asyncio code: every method is a coroutine."""
        from streamflow.workflow.async_client import AsyncWorkflowClient

        return AsyncWorkflowClient(self, bootstrap)

    # -- declarations ----------------------------------------------------------------------------

    def topic(
        self,
        name: str,
        *,
        key: str | Serde = "str",
        value: str | Serde = "json",
        partitions: int | None = None,
        config: dict[str, str] | None = None,
    ) -> TopicSpec:
        """Declare a topic. With ``partitions`` it is created when missing (checked when not)."""
        spec = TopicSpec(
            name,
            resolve_serde(key),
            resolve_serde(value),
            partitions,
            config=tuple(sorted((config or {}).items())),
        )
        return self.topology.add_topic(spec)

    def store(
        self,
        name: str,
        *,
        key: str | Serde = "str",
        value: str | Serde = "json",
        ttl: timedelta | None = None,
    ) -> StoreSpec:
        """Declare a store for ``process(..., stores=[name])``; with ``ttl`` a key expires that
        long (wall clock) after its last write, deleted through the changelog."""
        return self.topology.add_store(name, resolve_serde(key), resolve_serde(value), ttl)

    def stream(
        self, topic: TopicSpec | str, *, timestamp: str | Callable[[Any], Any] | None = None
    ) -> Stream:
        """Records of ``topic``. ``timestamp`` gives their event time (windows cut by it): a
        field name of the value, or a function of the value returning epoch ms or an aware
        datetime; by default the Kafka record's timestamp."""
        spec = self._topic(topic)
        extract = operator.itemgetter(timestamp) if isinstance(timestamp, str) else timestamp
        node = SourceNode(f"source-{spec.name}", topic=spec, timestamp=extract)
        self.topology.add_source(spec, node)
        return Stream(self.topology, node, spec.key_serde, spec.value_serde)

    def every(
        self,
        interval: timedelta,
        fn: Callable[[PunctuationContext], None],
        *,
        stores: Sequence[str],
        name: str | None = None,
        on: Clock = "wall_clock",
    ) -> None:
        """Run ``fn(ctx)`` every ``interval`` in each task that owns ``stores``:
        ``ctx.store(name)`` reads and writes them, ``ctx.send(topic, key, value)`` writes
        records, all in the same transaction as that task's records. ``on``: the wall clock
        (``"wall_clock"``), or the task's stream time (``"stream_time"``: the largest event
        time it has seen; a replay fires exactly as the live run did)."""
        ms = int(interval.total_seconds() * 1000)
        if ms <= 0:
            raise ConfigError(f"app.every: the interval must be positive, not {interval!r}")
        if on not in ("wall_clock", "stream_time"):
            raise ConfigError(f"app.every on={on!r}: use 'wall_clock' or 'stream_time'")
        if not stores:
            raise ConfigError(
                "app.every needs stores=[...]: it runs in the tasks that own those stores"
            )
        specs = []
        for store in stores:
            spec = self.topology.stores.get(store)
            if spec is None:
                raise ConfigError(f"app.every: store {store!r} is not declared")
            specs.append(spec)
        name = name or self.topology.unique_name("every")
        time_store = None
        if on == "stream_time":
            time_store = self.topology.add_store(f"{name}-stream-time", STR, JSON)
        self.topology.standalone.append(
            PunctuationNode(
                name,
                interval_ms=ms,
                fn=fn,
                store_specs=specs,
                topics=self.topology.topics,
                time_store=time_store,
            )
        )

    def table(self, topic: TopicSpec | str, *, store: str | None = None) -> Table:
        """Materialize ``topic`` (last value per key; a null value deletes) into a store."""
        spec = self._topic(topic)
        store_spec = self.topology.add_store(
            store or f"{spec.name}-table", spec.key_serde, spec.value_serde
        )
        source = SourceNode(f"source-{spec.name}", topic=spec)
        self.topology.add_source(spec, source)
        node = TableSourceNode(f"table-{store_spec.name}", topic=spec, store=store_spec)
        source.children.append(node)
        return Table(self.topology, store_spec, spec.key_serde, node)

    def _topic(self, topic: TopicSpec | str) -> TopicSpec:
        if isinstance(topic, TopicSpec):
            return self.topology.add_topic(topic)
        try:
            return self.topology.topics[topic]
        except KeyError:
            raise ConfigError(
                f"app {self.name!r}: topic {topic!r} is not declared; "
                f"call app.topic({topic!r}, ...) first"
            ) from None

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.name}.dlq"

    # -- running from your own code --------------------------------------------------------------

    def worker(self, **settings: Any) -> Worker:
        """A worker of this app, ``settings`` overriding the app's (``http_port=9400``,
        ``state_dir=...``, any ``AppConfig`` field). ``worker.stop()`` asks it to leave."""
        from dataclasses import replace

        from streamflow.runtime.worker import Worker

        config = replace(self.config, **settings) if settings else self.config
        return Worker(self.topology, config, self.dead_letter_topic)

    def run(self, **settings: Any) -> None:
        """Run one worker of this app in this thread until SIGTERM or Ctrl-C, as
        ``streamflow run`` does (``settings``: see ``worker``). Logging is left to you."""
        self.worker(**settings).run()

    async def run_async(self, **settings: Any) -> None:
        """Run one worker in a thread of its own while your event loop goes on; cancelling
        the awaiting task stops the worker the way SIGTERM does (its cycle commits, it
        leaves the group) and waits until it has."""
        import asyncio

        worker = self.worker(**settings)
        thread = asyncio.to_thread(worker.run, install_signal_handlers=False)
        running = asyncio.ensure_future(thread)
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            worker.stop()
            await running
            raise

    def describe(self) -> str:
        text = describe(self.topology, self.config.guarantee)
        if not self.workflows.workflows:
            return text
        lines = [text, "\nWorkflows"]
        for name, node in sorted(self.workflows.workflows.items()):
            versions = ", ".join(f"v{v}" for v in sorted(node.versions))
            steps = ", ".join(self.workflows.steps_called_by(name)) or "none found"
            lines.append(f"  {name} ({versions})  events {node.events.name}  may call: {steps}")
        return "\n".join(lines)
