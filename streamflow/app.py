"""App: the one object a user creates. It names the consumer group, declares topics and stores,
and hands the resulting topology to a worker (``streamflow run``) or the test driver.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from streamflow.errors import ConfigError
from streamflow.runtime.config import AppConfig, Guarantee
from streamflow.serde.base import Serde, resolve_serde
from streamflow.topology.describe import describe
from streamflow.topology.graph import Topology
from streamflow.topology.nodes import SourceNode, TableSourceNode
from streamflow.topology.specs import StoreSpec, TopicSpec
from streamflow.topology.stream import Stream, Table

class App:
    """A streamflow application: ``App("orders")``; its name is the consumer group id."""

    def __init__(self, name: str, *, bootstrap: str | None = None,
                 state_dir: str | os.PathLike[str] | None = None,
                 guarantee: Guarantee = "exactly_once",
                 commit_interval: float | timedelta = 0.1, commit_every: int = 20_000) -> None:
        if not name or any(c in name for c in " /\\"):
            raise ConfigError(f"app name {name!r} must be non-empty without spaces or slashes: "
                              "it becomes the consumer group id and a topic prefix")
        if guarantee not in ("exactly_once", "at_least_once"):
            raise ConfigError(f"app {name!r}: guarantee must be 'exactly_once' or "
                              f"'at_least_once', not {guarantee!r}")
        interval = (commit_interval.total_seconds() if isinstance(commit_interval, timedelta)
                    else float(commit_interval))
        self.name = name
        self.config = AppConfig(
            name=name,
            bootstrap=bootstrap or os.environ.get("STREAMFLOW_BOOTSTRAP", "127.0.0.1:9092"),
            state_dir=Path(state_dir or os.environ.get("STREAMFLOW_STATE_DIR", ".state")),
            guarantee=guarantee, commit_interval=interval, commit_every=commit_every)
        self.topology = Topology(name)

    # -- declarations ----------------------------------------------------------------------------

    def topic(self, name: str, *, key: str | Serde = "str", value: str | Serde = "json",
              partitions: int | None = None, config: dict[str, str] | None = None) -> TopicSpec:
        """Declare a topic. With ``partitions`` it is created when missing (and checked when not)."""
        spec = TopicSpec(name, resolve_serde(key), resolve_serde(value), partitions,
                         config=tuple(sorted((config or {}).items())))
        return self.topology.add_topic(spec)

    def store(self, name: str, *, key: str | Serde = "str", value: str | Serde = "json") -> StoreSpec:
        """Declare a store for ``process(..., stores=[name])``."""
        return self.topology.add_store(name, resolve_serde(key), resolve_serde(value))

    def stream(self, topic: TopicSpec | str) -> Stream:
        spec = self._topic(topic)
        node = SourceNode(f"source-{spec.name}", topic=spec)
        self.topology.add_source(spec, node)
        return Stream(self.topology, node, spec.key_serde, spec.value_serde)

    def table(self, topic: TopicSpec | str, *, store: str | None = None) -> Table:
        """Materialize ``topic`` (last value per key; a null value deletes) into a store."""
        spec = self._topic(topic)
        store_spec = self.topology.add_store(store or f"{spec.name}-table", spec.key_serde,
                                             spec.value_serde)
        source = SourceNode(f"source-{spec.name}", topic=spec)
        self.topology.add_source(spec, source)
        source.children.append(TableSourceNode(f"table-{store_spec.name}", topic=spec,
                                               store=store_spec))
        return Table(self.topology, store_spec, spec)

    def _topic(self, topic: TopicSpec | str) -> TopicSpec:
        if isinstance(topic, TopicSpec):
            return self.topology.add_topic(topic)
        try:
            return self.topology.topics[topic]
        except KeyError:
            raise ConfigError(f"app {self.name!r}: topic {topic!r} is not declared; "
                              f"call app.topic({topic!r}, ...) first") from None

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.name}.dlq"

    def describe(self) -> str:
        return describe(self.topology, self.config.guarantee)
