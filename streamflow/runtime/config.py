"""Worker settings and the Kafka client configurations derived from them.

The client settings are where the exactly-once promise (docs/architecture.md, "Commit protocol")
is made concrete, so they live in one place with the reason for each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from streamflow.kafka.record_size import DEFAULT_MAX_PAYLOAD_BYTES
from streamflow.kafka.settings import KafkaSettings
from streamflow.serde.registry.settings import RegistrySettings

Guarantee = Literal["exactly_once", "at_least_once"]
GroupProtocol = Literal["auto", "classic", "consumer"]


@dataclass(frozen=True)
class AppConfig:
    """Runtime settings of an App; ``streamflow run`` options override them."""

    name: str
    bootstrap: str
    state_dir: Path
    guarantee: Guarantee = "exactly_once"
    commit_interval: float = 0.1
    """Seconds a transaction may stay open under load (it commits earlier when input drains)."""
    commit_every: int = 20_000
    """Records after which a cycle commits even if the interval has not passed."""
    batch_size: int = 5_000
    """Records taken from the consumer per poll."""
    step_threads: int = 100
    """Threads running ``def`` step attempts on one worker."""
    async_step_concurrency: int = 1000
    """``async def`` step attempts running at once on one worker's asyncio loop."""
    shutdown_grace: float = 10.0
    """Seconds a stopping worker waits for running step attempts before leaving the group
    (unfinished ones run again on the next owner)."""
    group_protocol: GroupProtocol = "auto"
    """``consumer``: Kafka 4's rebalance protocol (KIP-848), assignment on the broker;
    ``classic``: the client-side assignors every Kafka since 0.9 speaks; ``auto``: consumer
    where the brokers offer it, else classic (``runtime/group_protocol``)."""
    num_standbys: int = 0
    """Workers besides the owner that keep a warm copy of each task's stores (``standby``)."""
    http_port: int | None = 0
    """Serve ``/metrics``, ``/status`` and queries on this port (0, the default: any free
    one); None: no endpoint. Clients find a worker's endpoint through the group, so
    ``client.get``/``wait`` ask the owning worker instead of reading a changelog."""
    http_host: str = "127.0.0.1"
    session_timeout_ms: int = 10_000
    transaction_timeout_ms: int = 10_000
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    """The largest input, step argument or result, signal payload or store value (encoded):
    what is bigger than one record travels as chunks; past this, a ``PayloadTooLarge``."""
    consumer: tuple[tuple[str, str], ...] = ()
    producer: tuple[tuple[str, str], ...] = ()
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    """Settings every client gets (security, timeouts...): see ``kafka_settings``."""
    kafka_from_app: tuple[tuple[str, str], ...] = ()
    schema_registry: RegistrySettings | None = None
    """The external Schema Registry's client settings, as ``streamflow run --config`` resolved
    them; None: resolved from the environment when a schema is bound (``serde/registry``)."""
    """What ``App(kafka=...)`` said, kept so ``streamflow run`` can resolve again with its
    ``--config`` and ``--kafka`` options on top."""

    @property
    def exactly_once(self) -> bool:
        return self.guarantee == "exactly_once"


def consumer_config(config: AppConfig, assignment_strategy: str) -> dict[str, Any]:
    """``assignment_strategy``: ``range`` when tasks read several co-partitioned topics (the
    same partition of each must go to one member), else ``cooperative-sticky``."""
    conf: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap,
        "group.id": config.name,
        # Offsets are committed only by the commit cycle: inside the transaction (EOS) or
        # after outputs are flushed (at-least-once). Never behind our back.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Never see records of aborted (or still open) transactions, ours or upstream's. This
        # also makes OffsetFetch wait for a zombie's pending offset commit (KIP-447).
        "isolation.level": "read_committed",
        "partition.assignment.strategy": assignment_strategy,
        "session.timeout.ms": config.session_timeout_ms,
        "heartbeat.interval.ms": max(1000, config.session_timeout_ms // 4),
        "max.poll.interval.ms": max_poll_interval_ms(config),
        # A task reading several topics waits for a lagging one until it is known to be at
        # its end (runtime/aligned_input.py): partition-EOF is how it knows.
        "enable.partition.eof": True,
        "fetch.wait.max.ms": 100,
        # Larger fetches keep the local queue full (keyed-count bench: 139k → ~200k records/s),
        # but a full queue must not park the fetcher for librdkafka's default 1 s backoff:
        # that showed as 1.4 s p99 workflow latency.
        "max.partition.fetch.bytes": 4 * 1024 * 1024,
        "fetch.max.bytes": 32 * 1024 * 1024,
        "queued.max.messages.kbytes": 128 * 1024,
        "fetch.queue.backoff.ms": 10,
    }
    if config.group_protocol == "consumer":
        # KIP-848: the broker assigns and times sessions out; the client may not set these.
        for key in ("partition.assignment.strategy", "session.timeout.ms", "heartbeat.interval.ms"):
            del conf[key]
        conf["group.protocol"] = "consumer"
        # The broker's range assignor gives a member the same partitions of topics with equal
        # partition counts: co-partitioned tasks stay whole. Uniform spreads the rest evenly.
        conf["group.remote.assignor"] = "range" if assignment_strategy == "range" else "uniform"
    conf.update(config.kafka.client(config.bootstrap))  # never a protected key (refused)
    conf.update(dict(config.consumer))
    return conf


def producer_config(config: AppConfig, transactional_id: str | None) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap,
        # Java's partitioner, so keys land where Kafka Streams and Java producers put them.
        "partitioner": "murmur2_random",
        # Records produced while a cycle processes should leave before the commit flushes: at
        # 5 ms they waited for the flush, which then sent a few partitions per millisecond.
        # Measured at 1000 workflows/s, 2 partitions: commit 5.2–5.9 ms instead of 5.9–7.9,
        # p50 68–77 ms instead of 79–106; all-at-once throughput ~5 % lower.
        "linger.ms": 1,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "enable.idempotence": True,
        "acks": "all",
        # Back-to-back transactions meet CONCURRENT_TRANSACTIONS while the coordinator is still
        # writing the previous commit's markers; the default 100 ms retry backoff would then
        # add ~100 ms to a workflow hop. Retry quickly instead.
        "retry.backoff.ms": 5,
        "retry.backoff.max.ms": 200,
    }
    if transactional_id is not None:
        conf["transactional.id"] = transactional_id
        conf["transaction.timeout.ms"] = config.transaction_timeout_ms
    conf.update(config.kafka.client(config.bootstrap))
    conf.update(dict(config.producer))
    return conf


def admin_config(config: AppConfig) -> dict[str, Any]:
    """The admin client's settings: the cluster's address and the shared client settings."""
    return dict(config.kafka.client(config.bootstrap))


def max_poll_interval_ms(config: AppConfig) -> int:
    """How long the group waits for this worker, first of all to give up partitions.

    With the consumer protocol (KIP-848) this is also the *rebalance timeout*: how long the
    coordinator lets a member keep partitions it has been asked to revoke before fencing it.
    The fault suite saw a member miss its new assignment after its coordinator broker was
    killed (librdkafka kept the old one, and kept polling): the partitions it should have handed
    over stayed unprocessed until this timeout fenced it, five minutes with the client's
    default. So it is as short as the worker allows: its loop never blocks longer than a
    shutdown grace plus two bounded transaction calls (``bounded_calls``), with room to spare.
    """
    blocked_ms = int(config.shutdown_grace * 1000) + 2 * config.transaction_timeout_ms
    return max(45_000, blocked_ms + 10_000, config.session_timeout_ms)
