"""Internal and declared topics: resolve partition counts, create what is missing, refuse
mismatches.

Partition counts flow downstream: a sub-topology has as many tasks as its source topics have
partitions (they must agree: co-partitioning), a repartition topic defaults to the partition
count of the sub-topology writing it, and a changelog always has its sub-topology's count —
a changelog with another count would put a task's state on someone else's partition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamflow.cluster.access import AdminConnection
from streamflow.errors import ConfigError, KafkaUnavailable, TopologyError
from streamflow.kafka.refusals import denied

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicPlan:
    partitions: dict[str, int]
    """Every topic the app touches → its partition count."""
    sub_partitions: dict[int, int]
    """Sub-topology id → number of tasks."""


def existing_topics(admin: AdminClient | AdminConnection, timeout: float = 10.0) -> dict[str, int]:
    """Topic → partition count of every topic this client may see; an `AdminConnection`
    raises a credential or certificate problem at once instead of timing out."""
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailable(
            f"cannot reach Kafka to list topics: {exc}; is the broker running "
            "(streamflow dev kafka status) and the bootstrap address right?"
        ) from exc
    return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}


def plan_topics(topology: Any, existing: dict[str, int], dead_letter_topic: str) -> TopicPlan:
    subs = topology.sub_topologies()
    partitions: dict[str, int] = {}
    sub_partitions: dict[int, int] = {}
    writer_of: dict[str, int] = {}
    for sub in subs:
        for node in sub.nodes:
            if node.kind == "sink":
                writer_of.setdefault(node.topic.name, sub.id)

    def count_of(spec: Any) -> int:
        if spec.name in partitions:
            return partitions[spec.name]
        if spec.kind.value == "repartition" and spec.partitions is None:
            return sub_partitions[writer_of[spec.name]]
        if spec.name in existing:
            return existing[spec.name]
        if spec.partitions is None:
            raise ConfigError(
                f"topic {spec.name!r} does not exist; create it, or declare "
                f"app.topic({spec.name!r}, partitions=N) so streamflow creates it"
            )
        declared: int = spec.partitions
        return declared

    for sub in subs:  # declaration order: a repartition topic's writer comes first
        counts = {spec.name: count_of(spec) for spec in sub.sources}
        if len(set(counts.values())) > 1:
            raise TopologyError(
                f"sub-topology {sub.id} reads topics that are not co-partitioned: {counts}; "
                "give them the same partition count or re-key one with key_by()"
            )
        sub_partitions[sub.id] = next(iter(counts.values()))
        partitions.update(counts)
        for store in sub.stores:
            partitions[store.changelog] = sub_partitions[sub.id]
    for spec in topology.topics.values():
        if spec.name not in partitions and spec.kind.value != "changelog":
            partitions[spec.name] = count_of(spec)
    partitions.setdefault(dead_letter_topic, existing.get(dead_letter_topic, 1))
    return TopicPlan(partitions, sub_partitions)


def ensure_topics(
    admin: AdminClient,
    topology: Any,
    plan: TopicPlan,
    existing: dict[str, int],
    replication_factor: int = -1,
    principal: str = "this client",
) -> None:
    """Create missing topics; an internal topic with the wrong partition count is an error."""
    configs = {spec.name: dict(spec.config) for spec in topology.topics.values()}
    for name, count in plan.partitions.items():
        have = existing.get(name)
        if have is not None and have != count:
            raise TopologyError(
                f"topic {name!r} has {have} partitions but the topology needs {count}; "
                "internal topics cannot be re-partitioned in place: reset the app "
                "(new app name) or recreate the topic"
            )
    missing = [
        NewTopic(
            name,
            num_partitions=count,
            replication_factor=replication_factor,
            config=configs.get(name, {}),
        )
        for name, count in plan.partitions.items()
        if name not in existing
    ]
    if not missing:
        return
    futures = admin.create_topics(missing, operation_timeout=30, request_timeout=30)
    for name, future in futures.items():
        try:
            future.result()
            log.info("created topic %s (%d partitions)", name, plan.partitions[name])
        except KafkaException as exc:
            if exc.args[0].code() == exc.args[0].TOPIC_ALREADY_EXISTS:
                continue  # another worker won the race; the count check above still holds
            refusal = denied(exc.args[0], "CREATE", "topic", name, principal)
            if refusal is not None:
                raise refusal from None
            raise ConfigError(f"cannot create topic {name!r}: {exc.args[0].str()}") from exc
