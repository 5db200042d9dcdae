"""Declarations of fact: the topics and stores a topology uses.

Frozen so the runtime, the test driver and ``describe`` all read the same truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from streamflow.serde.base import Serde

if TYPE_CHECKING:
    from streamflow.topology.nodes import Node


class TopicKind(Enum):
    USER = "user"
    REPARTITION = "repartition"
    CHANGELOG = "changelog"
    DEAD_LETTER = "dead-letter"
    WORKFLOW = "workflow"


@dataclass(frozen=True)
class TopicSpec:
    """A Kafka topic and how its keys and values are encoded.

    ``partitions`` None means "use the topic as it exists"; a number means "create it with this
    many partitions if missing, and refuse to start if it exists with another count".
    """

    name: str
    key_serde: Serde
    value_serde: Serde
    partitions: int | None = None
    kind: TopicKind = TopicKind.USER
    config: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class StoreSpec:
    """A named keyed store and its compacted changelog ``<app>-<store>-changelog``."""

    name: str
    key_serde: Serde
    value_serde: Serde
    changelog: str
    ttl_ms: int | None = None
    """Keys expire this long after their last write (``state.ttl_store``); None: never."""

    def __str__(self) -> str:
        return self.name


CHANGELOG_CONFIG: tuple[tuple[str, str], ...] = (
    ("cleanup.policy", "compact"),
    # Compaction must not outrun restores of slow tasks, and tombstones must survive long
    # enough for a stale replica's checkpoint to see them.
    ("min.compaction.lag.ms", "0"),
    ("delete.retention.ms", str(24 * 3600 * 1000)),
)

REPARTITION_CONFIG: tuple[tuple[str, str], ...] = (
    ("cleanup.policy", "delete"),
    ("retention.ms", str(7 * 24 * 3600 * 1000)),
)


@dataclass
class SubTopology:
    """A connected part of the topology: the unit that becomes one task per partition."""

    id: int
    sources: list[TopicSpec] = field(default_factory=list)
    stores: list[StoreSpec] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
