"""The ACLs one app's principal needs on a cluster with an authorizer: derived from its topology.

A secured cluster refuses what it was not told to allow, and finding the missing ACL from a
worker's errors one at a time is slow. So the app says what it touches:

- its input topics: READ and DESCRIBE;
- its output topics (sinks, and declared topics nothing reads, which ``ctx.emit`` writes):
  WRITE and DESCRIBE, plus CREATE where the app declares partitions (it creates them if missing);
- its internal topics, by prefix ``<app>-`` (changelogs, repartition topics) and ``<app>.``
  (dead letters, workflow events, step commands): CREATE, DESCRIBE, DESCRIBE_CONFIGS, READ, WRITE;
- its consumer group ``<app>``: READ and DESCRIBE (membership, offsets sent in transactions),
  and DESCRIBE on groups ``<app>-*`` (consumers that only assign partitions still need one);
- its transactional ids, by prefix ``<app>-`` (``<app>-<worker id>`` and ``…-2``): WRITE, DESCRIBE;
- the Kafka-native schema registry, when the app has Avro topics: its topic
  ``_streamflow_schemas`` (CREATE, DESCRIBE, READ, WRITE) and its writer's transactional id.

Printed as ``kafka-acls`` command lines and as JSON (``streamflow acls FILE``), or granted
with an administrator's settings (``--apply``). The worker checks the same list at start-up
(`access`), so what is printed is exactly what is checked.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass
from typing import Any

from streamflow.serde.registry.kafka import READER_GROUP, WRITER_TRANSACTIONAL_ID
from streamflow.serde.registry.kafka import TOPIC as REGISTRY_TOPIC
from streamflow.serde.registry.settings import RegistrySettings
from streamflow.topology.graph import Topology
from streamflow.topology.specs import TopicKind

INTERNAL_TOPIC_OPERATIONS = ("CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "READ", "WRITE")


@dataclass(frozen=True)
class Acl:
    """One allow rule: ``principal`` may do ``operations`` on the resource."""

    principal: str
    resource_type: str
    """``TOPIC``, ``GROUP`` or ``TRANSACTIONAL_ID``."""
    pattern_type: str
    """``LITERAL`` (exactly ``name``) or ``PREFIXED`` (every name starting with it)."""
    name: str
    operations: tuple[str, ...]
    why: str

    def command(self, bootstrap: str) -> str:
        """The ``kafka-acls.sh`` command line that adds this rule."""
        flag = {"TOPIC": "--topic", "GROUP": "--group", "TRANSACTIONAL_ID": "--transactional-id"}
        parts = [
            "kafka-acls.sh",
            "--bootstrap-server",
            bootstrap,
            "--add",
            "--allow-principal",
            self.principal,
        ]
        for op in self.operations:
            parts += ["--operation", _camel(op)]
        parts += [flag[self.resource_type], self.name]
        if self.pattern_type == "PREFIXED":
            parts += ["--resource-pattern-type", "prefixed"]
        return shlex.join(parts)

    def bindings(self) -> list[Any]:
        """This rule as confluent-kafka ``AclBinding`` objects (one per operation), for
        ``AdminClient.create_acls``."""
        from confluent_kafka.admin import (
            AclBinding,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        return [
            AclBinding(
                ResourceType[self.resource_type],
                self.name,
                ResourcePatternType[self.pattern_type],
                self.principal,
                "*",
                AclOperation[op],
                AclPermissionType.ALLOW,
            )
            for op in self.operations
        ]

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["operations"] = list(self.operations)
        return data


def uses_kafka_registry(topology: Topology, registry: RegistrySettings | None = None) -> bool:
    """Whether the app's workers use the Kafka-native schema registry: Avro topics, and no
    external registry configured (``registry``: resolved settings, else the environment's)."""
    from streamflow.serde.registry.binding import schema_uses
    from streamflow.serde.registry.settings import resolve as resolve_registry_settings

    if not schema_uses(topology):
        return False
    return (registry or resolve_registry_settings()).url is None


def app_acls(topology: Topology, principal: str, uses_registry: bool) -> list[Acl]:
    """Every rule the app's workers need, in a stable order."""
    app = topology.app_name
    read: set[str] = set()
    written: set[str] = set()
    for sub in topology.sub_topologies():
        read.update(t.name for t in sub.sources)
        for node in sub.nodes:
            topic = getattr(node, "topic", None)
            if node.kind == "sink" and topic is not None:
                written.add(topic.name)
    acls: list[Acl] = []
    internal = (f"{app}-", f"{app}.")
    for name, spec in sorted(topology.topics.items()):
        if spec.kind is not TopicKind.USER or name.startswith(internal):
            continue  # covered by the prefixes below
        operations: list[str] = ["DESCRIBE"]
        why = []
        if name in read:
            operations.append("READ")
            why.append("read")
        if name in written or name not in read:
            operations.append("WRITE")
            why.append("written")
        if spec.partitions is not None:
            operations.append("CREATE")
            why.append("created when missing")
        acls.append(
            Acl(
                principal,
                "TOPIC",
                "LITERAL",
                name,
                tuple(operations),
                f"topic {' and '.join(why)} by the app",
            )
        )
    for prefix in internal:
        acls.append(
            Acl(
                principal,
                "TOPIC",
                "PREFIXED",
                prefix,
                INTERNAL_TOPIC_OPERATIONS,
                "internal topics: changelogs, repartition, dead letters, workflows",
            )
        )
    acls.append(
        Acl(
            principal,
            "GROUP",
            "LITERAL",
            app,
            ("DESCRIBE", "READ"),
            "the consumer group; offsets are committed in its transactions",
        )
    )
    acls.append(
        Acl(
            principal,
            "GROUP",
            "PREFIXED",
            f"{app}-",
            ("DESCRIBE",),
            "groups that never join (the store restorer, workflow client queries): librdkafka "
            "still looks up their coordinator",
        )
    )
    acls.append(
        Acl(
            principal,
            "TRANSACTIONAL_ID",
            "PREFIXED",
            f"{app}-",
            ("DESCRIBE", "WRITE"),
            "each worker's two transactional producers",
        )
    )
    if uses_registry:
        acls.append(
            Acl(
                principal,
                "TOPIC",
                "LITERAL",
                REGISTRY_TOPIC,
                ("CREATE", "DESCRIBE", "READ", "WRITE"),
                "the Kafka-native schema registry",
            )
        )
        acls.append(
            Acl(
                principal,
                "GROUP",
                "LITERAL",
                READER_GROUP,
                ("DESCRIBE",),
                "the schema registry's reader (never joins)",
            )
        )
        acls.append(
            Acl(
                principal,
                "TRANSACTIONAL_ID",
                "LITERAL",
                WRITER_TRANSACTIONAL_ID,
                ("DESCRIBE", "WRITE"),
                "the schema registry's fenced writer",
            )
        )
    return acls


def _camel(operation: str) -> str:
    """``DESCRIBE_CONFIGS`` → ``DescribeConfigs``, as ``kafka-acls`` spells operations."""
    return "".join(part.capitalize() for part in operation.split("_"))
