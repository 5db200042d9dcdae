"""A readable picture of a topology: sub-topologies, their processors, topics and stores."""

from __future__ import annotations

from streamflow.topology.graph import Topology
from streamflow.topology.nodes import Node
from streamflow.topology.specs import TopicKind


def describe(topology: Topology, guarantee: str = "exactly_once") -> str:
    lines = [f"App {topology.app_name!r}  (guarantee: {guarantee})"]
    for sub in topology.sub_topologies():
        sources = ", ".join(t.name for t in sub.sources)
        lines.append(f"\nSub-topology {sub.id}  (one task per partition of: {sources})")
        roots = [n for n in sub.nodes if n.kind in ("source",)]
        roots += [n for n in sub.nodes if n.kind == "table" and not _has_parent(n, sub.nodes)]
        for root in roots:
            _walk(root, 1, lines, set())
        for store in sub.stores:
            lines.append(
                f"  store {store.name}  [{store.key_serde.name}/{store.value_serde.name}]"
                f"  changelog {store.changelog}"
            )
    lines.append("\nTopics")
    for spec in sorted(topology.topics.values(), key=lambda t: (t.kind.value, t.name)):
        parts = "existing" if spec.partitions is None else f"{spec.partitions} partitions"
        if spec.kind is TopicKind.CHANGELOG:
            parts = "partitions of its sub-topology, compacted"
        elif spec.kind is TopicKind.REPARTITION and spec.partitions is None:
            parts = "partitions of the sub-topology writing it"
        lines.append(f"  {spec.kind.value:<12} {spec.name}  ({parts})")
    return "\n".join(lines)


def _has_parent(node: Node, nodes: list[Node]) -> bool:
    return any(node in n.children for n in nodes)


def _walk(node: Node, depth: int, lines: list[str], seen: set[int]) -> None:
    detail = node.detail()
    lines.append(f"{'  ' * depth}{node.kind:<9} {node.name}" + (f"  ({detail})" if detail else ""))
    if id(node) in seen:
        return
    seen.add(id(node))
    for child in node.children:
        _walk(child, depth + 1, lines, seen)
