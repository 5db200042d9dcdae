"""The topology graph: declared topics, stores and processors, split into sub-topologies.

A sub-topology is a connected component of processors, where two processors are connected when
one feeds the other directly or when they share a store. Repartition topics are the only edges
that cross sub-topologies: that is what lets each part scale by its own partition count.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from streamflow.errors import TopologyError
from streamflow.serde.base import Serde
from streamflow.topology.nodes import JoinNode, Node, SourceNode, TableSourceNode
from streamflow.topology.specs import (
    CHANGELOG_CONFIG,
    StoreSpec,
    SubTopology,
    TopicKind,
    TopicSpec,
)


class Topology:
    """Everything an App declares; ``sub_topologies()`` is what the runtime turns into tasks."""

    def __init__(self, app_name: str) -> None:
        self.app_name = app_name
        self.topics: dict[str, TopicSpec] = {}
        self.stores: dict[str, StoreSpec] = {}
        self.sources: list[SourceNode] = []
        self.standalone: list[Node] = []
        """Processors no stream feeds (punctuations), placed by the stores they use."""
        self._names: dict[str, int] = {}
        self.workflows: Any = None  # the App's WorkflowRegistry, when it has one

    # -- declarations ----------------------------------------------------------------------------

    def add_topic(self, spec: TopicSpec) -> TopicSpec:
        existing = self.topics.get(spec.name)
        if existing is not None and existing != spec:
            raise TopologyError(
                f"topic {spec.name!r} is declared twice with different settings: "
                f"{existing} vs {spec}; declare it once and reuse the object"
            )
        self.topics[spec.name] = spec
        return spec

    def add_store(
        self, name: str, key_serde: Serde, value_serde: Serde, ttl: timedelta | None = None
    ) -> StoreSpec:
        if name in self.stores:
            raise TopologyError(f"store {name!r} is declared twice; store names are unique per app")
        if not name or any(c in name for c in "/\\ "):
            raise TopologyError(
                f"store name {name!r} must be non-empty, without '/', '\\' or spaces"
            )
        ttl_ms = None if ttl is None else int(ttl.total_seconds() * 1000)
        if ttl_ms is not None and ttl_ms <= 0:
            raise TopologyError(f"store {name!r}: ttl must be a positive duration, not {ttl!r}")
        spec = StoreSpec(name, key_serde, value_serde, f"{self.app_name}-{name}-changelog", ttl_ms)
        self.stores[name] = spec
        self.add_topic(
            TopicSpec(
                spec.changelog, key_serde, value_serde, None, TopicKind.CHANGELOG, CHANGELOG_CONFIG
            )
        )
        return spec

    def add_source(self, topic: TopicSpec, node: SourceNode) -> None:
        for source in self.sources:
            if source.topic.name == topic.name:
                raise TopologyError(
                    f"topic {topic.name!r} is consumed twice; reuse one stream and fan out"
                )
        self.sources.append(node)

    def unique_name(self, kind: str) -> str:
        n = self._names.get(kind, 0) + 1
        self._names[kind] = n
        return f"{kind}-{n}"

    # -- structure -------------------------------------------------------------------------------

    def nodes(self) -> Iterator[Node]:
        seen: set[int] = set()
        stack: list[Node] = [*self.sources, *self.standalone]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            yield node
            stack.extend(node.children)

    def sub_topologies(self) -> list[SubTopology]:
        """Connected components, numbered in declaration order of their first source."""
        nodes = list(self.nodes())
        parent = {id(n): id(n) for n in nodes}

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        def union(a: int, b: int) -> None:
            parent[find(a)] = find(b)

        by_store: dict[str, int] = {}
        table_of_store = {n.store.name: n for n in nodes if isinstance(n, TableSourceNode)}
        for node in nodes:
            for child in node.children:
                union(id(node), id(child))
            for store in node.stores():
                if store.name in by_store:
                    union(id(node), by_store[store.name])
                else:
                    by_store[store.name] = id(node)
            if isinstance(node, JoinNode) and node.table_store.name in table_of_store:
                union(id(node), id(table_of_store[node.table_store.name]))

        groups: dict[int, SubTopology] = {}
        order: list[SubTopology] = []
        for source in self.sources:
            root = find(id(source))
            if root not in groups:
                groups[root] = SubTopology(id=len(order))
                order.append(groups[root])
            groups[root].sources.append(source.topic)
        for node in nodes:
            sub = groups.get(find(id(node)))
            if sub is None:
                names = ", ".join(s.name for s in node.stores()) or "none"
                raise TopologyError(
                    f"{node.kind} {node.name!r} uses stores ({names}) that no stream uses; it "
                    "runs in the tasks that own its stores, so give it a store of a stream"
                )
            sub.nodes.append(node)
            for store in node.stores():
                if store not in sub.stores:
                    sub.stores.append(store)
        return order

    def source_node(self, topic: str) -> SourceNode:
        for source in self.sources:
            if source.topic.name == topic:
                return source
        raise TopologyError(f"no stream reads topic {topic!r}")
