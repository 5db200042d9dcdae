"""A worker's way into the cluster: its topics set up first, then its clients.

Topics are created, access checked and schemas bound before any client starts, so a
misconfiguration stops the worker with one clear error rather than a consumer that fails
later. The clients (the consumer, one or two transactional producers, the collector, the
commit cycle, the restorer and the standbys) are made together and thrown away together: a
fatal client error replaces all of them (``Clients.discard``), and new producers fence the old
transactional ids.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, libversion

from streamflow.cluster import access
from streamflow.cluster.access import AdminConnection
from streamflow.cluster.record_chunks import chunked_topics
from streamflow.cluster.topics import TopicPlan, ensure_topics, existing_topics, plan_topics
from streamflow.errors import ConfigError, KafkaUnavailable
from streamflow.kafka.record_size import max_record_bytes
from streamflow.kafka.refusals import denied
from streamflow.operate.metrics import Metrics
from streamflow.runtime import group_protocol
from streamflow.runtime.collector import KafkaCollector
from streamflow.runtime.commit_cycle import CommitCycle
from streamflow.runtime.config import AppConfig, consumer_config, producer_config
from streamflow.runtime.restore import Restorer
from streamflow.runtime.standby import StandbyReplicas
from streamflow.runtime.task import Task
from streamflow.serde.registry.binding import bind_schemas

log = logging.getLogger(__name__)

STARTUP_WAIT = float(os.environ.get("STREAMFLOW_STARTUP_WAIT", "60"))
"""Seconds a starting worker waits for an unreachable cluster before it fails."""


def raise_if_denied(
    exc: KafkaException, operation: str, resource: str, name: str | None, principal: str
) -> None:
    """A missing ACL is not survivable: stop with the error that names it."""
    refusal = denied(exc.args[0], operation, resource, name, principal)
    if refusal is not None:
        raise refusal from None


def setup_topics(
    connection: AdminConnection,
    topology: Any,
    config: AppConfig,
    dead_letter_topic: str,
    principal: str,
    stopping: Callable[[], bool],
) -> tuple[AppConfig, TopicPlan]:
    """Topics created, access checked (``cluster/access``), schemas bound: all before any
    client. Returns the config with its group protocol resolved, and the topic plan.
    ``stopping()`` is asked while the cluster is waited for."""
    admin = connection.admin
    existing = _wait_for_kafka(connection, stopping)
    registry = config.schema_registry
    access.check_app(admin, topology, existing, principal, before_plan=True, registry=registry)
    protocol = group_protocol.resolve(config.group_protocol, admin, config.name)
    config = dataclasses.replace(config, group_protocol=protocol)
    plan = plan_topics(topology, existing, dead_letter_topic)
    ensure_topics(admin, topology, plan, existing, principal=principal)
    access.check_app(admin, topology, plan.partitions, principal, registry=registry)
    # Before any client starts: an incompatible schema change refuses to start here.
    bind_schemas(topology, config)
    return config, plan


def _wait_for_kafka(admin: AdminConnection, stopping: Callable[[], bool]) -> dict[str, int]:
    """A worker restarted while its cluster restarts waits for it (a broker that is down for a
    minute is an outage, not a misconfiguration); after STARTUP_WAIT it gives up with the error
    that says what to check."""
    deadline = time.monotonic() + STARTUP_WAIT
    while True:
        try:
            return existing_topics(admin)
        except KafkaUnavailable as exc:
            if time.monotonic() > deadline or stopping():
                raise
            log.warning("%s; retrying for up to %.0f s more", exc, deadline - time.monotonic())
            time.sleep(2)


@dataclass
class Clients:
    consumer: Consumer
    producers: list[Producer]
    collector: KafkaCollector
    cycle: CommitCycle[Task]
    restorer: Restorer
    standbys: StandbyReplicas | None
    cooperative: bool
    """Incremental rebalances (assign/unassign only what changed) rather than eager ones."""

    def discard(self) -> None:
        """Throw every client away after a fatal error (the tasks are closed already): the
        open transaction is lost with its producer and must never commit."""
        self.cycle.open = False
        try:
            self.consumer.close()
        except Exception as close_exc:  # noqa: BLE001 - it is being replaced either way
            log.info("closing the old consumer: %s", close_exc)
        for producer in self.producers:
            try:
                producer.purge()
            except Exception:  # noqa: BLE001
                pass
        self.restorer.close()
        if self.standbys is not None:
            self.standbys.close()
        self.cycle.close()

    def close_producers(self) -> None:
        for producer in self.producers:
            try:
                producer.flush(10)
            except KafkaException as exc:
                # A producer in a fatal state (fenced, refused its transactional id) has nothing
                # to deliver; the error that stopped the worker is the one to report.
                log.info("producer not flushed: %s", exc.args[0].str())
        self.cycle.close()


def start_clients(
    config: AppConfig,
    topology: Any,
    worker_id: str,
    dead_letter_topic: str,
    metrics: Metrics,
    principal: str,
    client_id: str | None,
) -> Clients:
    """Producers with their transactions initialized (fencing an earlier incarnation), the
    consumer (not subscribed yet), and what uses them. ``client_id``: the consumer's, which
    carries the HTTP endpoint's address for ``streamflow status``."""
    cfg = config
    eos = cfg.exactly_once
    # Waiting on a transaction call longer than the transaction may live is pointless: by then
    # the coordinator has aborted it.
    cycle: CommitCycle[Task] = CommitCycle(
        eos,
        timeout=cfg.transaction_timeout_ms / 1000,
        commit_interval=cfg.commit_interval,
        commit_every=cfg.commit_every,
    )
    cycle.metrics = metrics
    if eos:
        # Two transactional ids, used in turn by consecutive cycles (see commit_cycle).
        ids = [f"{cfg.name}-{worker_id}", f"{cfg.name}-{worker_id}-2"]
        producers = [Producer(producer_config(cfg, tid)) for tid in ids]
        for tid, producer in zip(ids, producers, strict=True):
            try:
                # Fences a previous incarnation with the same transactional id and aborts its
                # open transaction, so its half-done cycle can never commit.
                producer.init_transactions(60)
            except KafkaException as exc:
                raise_if_denied(exc, "WRITE", "transactional id", tid, principal)
                raise KafkaUnavailable(
                    f"cannot initialize transactions on {cfg.bootstrap}: {exc.args[0].str()}; "
                    "a single broker needs transaction.state.log.replication.factor=1 and "
                    "min.isr=1 (streamflow dev kafka start sets them)"
                ) from exc
    else:
        pconf = producer_config(cfg, None)
        pconf["on_delivery"] = cycle.on_delivery
        producers = [Producer(pconf)]
    subs = topology.sub_topologies()
    # Several source topics per sub-topology need partition p of each in the same task: only
    # the range assignor guarantees that (client-side on the classic protocol, the broker's on
    # the new one); otherwise rebalance incrementally. The new protocol (KIP-848) is
    # incremental whatever the assignor.
    multi_source = any(len(sub.sources) > 1 for sub in subs)
    cooperative = not multi_source or cfg.group_protocol == "consumer"
    conf = consumer_config(cfg, "range" if multi_source else "cooperative-sticky")
    if client_id is not None:
        conf["client.id"] = client_id
    consumer = Consumer(conf)
    collector = KafkaCollector(
        producers[0],
        max_record_bytes(producer_config(cfg, None)),
        chunked_topics(topology.topics) | {dead_letter_topic},
    )
    cycle.attach(producers, consumer, collector)
    standbys = None
    if cfg.num_standbys > 0 and any(sub.stores for sub in subs):
        standbys = StandbyReplicas(
            cfg.bootstrap, cfg.name, cfg.kafka.values, cfg.state_dir / cfg.name, subs
        )
    return Clients(
        consumer=consumer,
        producers=producers,
        collector=collector,
        cycle=cycle,
        restorer=Restorer(cfg.bootstrap, cfg.name, cfg.kafka.values),
        standbys=standbys,
        cooperative=cooperative,
    )


def consumer_error(msg: Any, app: str, principal: str) -> None:
    """An error the consumer returned as a message: a refusal names the missing ACL, a fatal
    one ends these clients (the worker recovers with new ones), anything else is logged."""
    err = msg.error()
    topic = msg.topic()
    on_topic = bool(topic) and err.code() != KafkaError.GROUP_AUTHORIZATION_FAILED
    refusal = denied(
        err, "READ", "topic" if on_topic else "group", topic if on_topic else app, principal
    )
    if refusal is not None:
        raise refusal
    if err.fatal():
        raise KafkaUnavailable(f"consumer fatal error: {err.str()}")
    log.warning("consumer error on %s[%s]: %s", msg.topic(), msg.partition(), err.str())


OLDEST_LIBRDKAFKA = (2, 16, 0)
"""From 2.2 until its fix (librdkafka #4844, fixed by #5213 in 2025), librdkafka advanced the
consumer's position by 2 after a partition-EOF in batch consumption; the worker commits positions
and asks for EOFs, so a commit could skip a record. 2.16 is the oldest checked to be right
(tests/integration/test_partition_eof.py)."""


def check_librdkafka() -> None:
    version = libversion()[0]
    parts = tuple(int(p) for p in version.split("-")[0].split(".")[:3])
    if parts < OLDEST_LIBRDKAFKA:
        raise ConfigError(
            f"librdkafka {version} is older than 2.16: versions since 2.2 that lack the fix "
            "for librdkafka #4844 misplace the consumer's position after a partition end, which "
            "could skip records; install confluent-kafka>=2.16 (it bundles librdkafka 2.16)"
        )
