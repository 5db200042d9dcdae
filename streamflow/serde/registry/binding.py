"""Late binding: the Avro serdes of a topology get their schema ids when the app starts.

A serde is declared with the app (``avro("com.acme.Order")``), but its schema id comes from a
registry that is reachable only once the worker knows its cluster. ``bind_schemas`` is that
moment: it runs in the worker after the topics exist and before any client starts, and in the
test driver with an in-memory registry. It

1. lists every place the topology uses an Avro schema, as registry subjects: ``<topic>-key`` and
   ``<topic>-value`` for topics, ``<app>-<store>-key`` / ``<app>-<store>-value`` for stores (a
   changelog carries its store's bytes, so it has no subject of its own), and those of workflow
   and step payloads declared Avro (``streamflow.workflow.compiler``);
2. checks every one against the registered versions under the subject's mode, and refuses to
   start, naming each store or topic and why, if any is incompatible. All are checked before
   any is registered, so a refused start writes nothing;
3. registers them (a no-op when unchanged) and binds each serde to its id.

Default modes, recorded on a subject when it is created: BACKWARD for the app's input and
output topics (consumers upgrade first, as with any Confluent registry); FULL_TRANSITIVE for
what streamflow itself writes and reads back, stores, repartition and workflow topics: a restore
replays changelog records of every age, and during a rolling upgrade old and new workers read
each other's writes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from streamflow.errors import SchemaIncompatible
from streamflow.serde.avro.serde import AvroSerde
from streamflow.serde.registry.base import FIX_HINT, SchemaRegistry, incompatibility_report
from streamflow.serde.registry.compatibility import CompatibilityMode, Incompatibility
from streamflow.serde.registry.settings import resolve as resolve_registry_settings

log = logging.getLogger(__name__)

TOPIC_MODE = CompatibilityMode.BACKWARD
INTERNAL_MODE = CompatibilityMode.FULL_TRANSITIVE


class ClientSettings(Protocol):
    """The Kafka client settings every client gets (``runtime.kafka_settings.KafkaSettings``)."""

    @property
    def values(self) -> Mapping[str, str]: ...


class AppSettings(Protocol):
    """What binding needs of an app's config (``runtime.config.AppConfig`` has it; serde sits
    below runtime and does not import it)."""

    @property
    def name(self) -> str: ...

    @property
    def bootstrap(self) -> str: ...

    @property
    def kafka(self) -> ClientSettings: ...


@dataclass(frozen=True)
class SchemaUse:
    """One subject of the registry and the serde that writes it."""

    subject: str
    serde: AvroSerde
    what: str
    """What uses it, as a user would name it: "store 'totals' value", "topic 'orders' key"."""
    default_mode: CompatibilityMode


def schema_uses(topology: Any) -> list[SchemaUse]:
    """Every (subject, Avro serde) of ``topology``, stores first, then topics by name."""
    uses: list[SchemaUse] = []
    app = topology.app_name
    for store in sorted(topology.stores.values(), key=lambda s: s.name):
        for part, serde in (("key", store.key_serde), ("value", store.value_serde)):
            if isinstance(serde, AvroSerde):
                uses.append(
                    SchemaUse(
                        f"{app}-{store.name}-{part}",
                        serde,
                        f"store {store.name!r} {part}",
                        INTERNAL_MODE,
                    )
                )
    for topic in sorted(topology.topics.values(), key=lambda t: t.name):
        kind = topic.kind.value
        if kind in ("changelog", "dead-letter"):
            continue  # a changelog is its store's subject; a dead letter keeps the original bytes
        mode = TOPIC_MODE if kind == "user" else INTERNAL_MODE
        for part, serde in (("key", topic.key_serde), ("value", topic.value_serde)):
            if isinstance(serde, AvroSerde):
                uses.append(
                    SchemaUse(f"{topic.name}-{part}", serde, f"topic {topic.name!r} {part}", mode)
                )
    # Workflow and step payloads declared Avro: journaled, so read back as long as an instance
    # lives (``streamflow.workflow.compiler`` names their subjects).
    for subject, serde, what in getattr(
        getattr(topology, "workflows", None), "payload_schemas", ()
    ):
        uses.append(SchemaUse(subject, serde, what, INTERNAL_MODE))
    return uses


def registry_from_config(config: AppSettings) -> SchemaRegistry:
    """An external registry when its url is configured (``registry/settings.py``: the config
    file's ``[schema_registry]`` table, ``$STREAMFLOW_SCHEMA_REGISTRY_URL``...), else the Kafka
    one on the app's own cluster.

    ``config.schema_registry`` is what ``streamflow run --config`` resolved; a config without
    one (an ``App`` embedded in a program, the workflow client) resolves from the environment.
    """
    settings = getattr(config, "schema_registry", None) or resolve_registry_settings()
    if settings.url:
        from streamflow.serde.registry.confluent import ConfluentSchemaRegistry

        return ConfluentSchemaRegistry.from_settings(settings)
    from streamflow.serde.registry.kafka import KafkaSchemaRegistry

    return KafkaSchemaRegistry(config.bootstrap, client_config=config.kafka.values)


def bind_schemas(
    topology: Any, config: AppSettings, registry: SchemaRegistry | None = None
) -> SchemaRegistry | None:
    """Check, register and bind every Avro schema ``topology`` uses; returns the registry used
    (None when the topology has no Avro serde and so needs none).

    Raises SchemaIncompatible, naming each store or topic whose schema changed incompatibly and
    why, before anything is registered.
    """
    uses = schema_uses(topology)
    if not uses:
        return registry
    if registry is None:
        registry = registry_from_config(config)
    refused: list[tuple[SchemaUse, CompatibilityMode, list[Incompatibility]]] = []
    for use in uses:
        problems = registry.check(use.subject, use.serde.schema_text, default_mode=use.default_mode)
        if problems:
            refused.append((use, registry.mode(use.subject) or use.default_mode, problems))
    if refused:
        raise _refusal(config.name, refused)
    for use in uses:
        registered = registry.register(
            use.subject, use.serde.schema_text, default_mode=use.default_mode
        )
        use.serde.bind(registry, registered.id)
        log.info(
            "schema %s for %s: subject %s version %d, id %d",
            use.serde.schema_name,
            use.what,
            use.subject,
            registered.version,
            registered.id,
        )
    return registry


def _refusal(
    app: str, refused: list[tuple[SchemaUse, CompatibilityMode, list[Incompatibility]]]
) -> SchemaIncompatible:
    reports = [
        incompatibility_report(
            f"{use.what} ({use.serde.schema_name}, subject {use.subject!r})", mode, problems
        )
        for use, mode, problems in refused
    ]
    count = "a schema" if len(refused) == 1 else f"{len(refused)} schemas"
    return SchemaIncompatible(
        f"app {app!r} cannot start: {count} changed incompatibly; nothing was registered.\n"
        + "\n".join(reports)
        + f"\n{FIX_HINT}"
    )
