"""Which rebalance protocol a worker speaks when the app leaves it to the cluster (``auto``).

The consumer protocol (KIP-848) rebalances incrementally whatever the assignor: a member that
joins or leaves moves only the partitions that change owner, so the tasks (and the step attempts
they run) everywhere else go on. The classic protocol with the range assignor, which tasks
reading several co-partitioned topics need, is eager: every membership change revokes every
partition of every member, which closes every task and voids every attempt in flight. So
``auto`` takes the consumer protocol whenever the brokers offer it, and the classic one, with a
log line saying why, when they do not (brokers before Kafka 4, or a cluster that turned it off).

Asked once per worker start, through the admin client the worker already has: a broker lists
the protocols its group coordinator accepts in ``group.coordinator.rebalance.protocols``
(Kafka 3.7+; ``classic,consumer`` by default since 4.0).
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from streamflow.runtime.config import GroupProtocol

log = logging.getLogger(__name__)

PROTOCOLS_CONFIG = "group.coordinator.rebalance.protocols"
ASK_TIMEOUT_S = 10.0


def consumer_protocol_refusal(admin: AdminClient, timeout: float = ASK_TIMEOUT_S) -> str | None:
    """None when the brokers accept consumer-protocol groups, else why not (for the log)."""
    try:
        cluster = admin.describe_cluster(request_timeout=timeout).result(timeout)
        broker = cluster.controller or (cluster.nodes[0] if cluster.nodes else None)
        if broker is None:
            return "the cluster named no broker to ask"
        resource = ConfigResource(ResourceType.BROKER, str(broker.id))
        configs = admin.describe_configs([resource])[resource].result(timeout)
    except (KafkaException, TimeoutError, RuntimeError) as exc:
        err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
        reason = (err.str() or err.name()) if err is not None else str(exc) or type(exc).__name__
        return f"the broker configuration could not be read ({reason})"
    entry = configs.get(PROTOCOLS_CONFIG)
    if entry is None:
        return f"the brokers predate KIP-848 (no {PROTOCOLS_CONFIG})"
    offered = {p.strip() for p in (entry.value or "").split(",")}
    if "consumer" not in offered:
        return f"the brokers' {PROTOCOLS_CONFIG} is {entry.value!r}"
    return None


def resolve(wanted: GroupProtocol, admin: AdminClient, app: str) -> GroupProtocol:
    """The protocol to speak: ``wanted`` unless it is ``auto``, then what the brokers offer."""
    if wanted != "auto":
        return wanted
    refusal = consumer_protocol_refusal(admin)
    if refusal is None:
        log.info("app %s: consumer group protocol (KIP-848, incremental rebalances)", app)
        return "consumer"
    log.warning(
        "app %s: classic group protocol, because %s; rebalances of tasks reading several "
        "topics then stop every task (--group-protocol classic silences this line)",
        app,
        refusal,
    )
    return "classic"
