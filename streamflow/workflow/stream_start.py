"""Streams that start workflows: ``stream.start_workflow(transfer, id=...)``.

The node lives with the workflows because it writes their ``start`` message; the stream API
(topology layer) reaches it through the app's workflow registry, so the topology layer never
imports the workflow layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamflow.topology.nodes import Node, ProcessorRuntime, Push
from streamflow.topology.specs import TopicSpec
from streamflow.workflow.messages import Start, dumps


@dataclass(eq=False, kw_only=True)
class StartWorkflowNode(Node):
    """Sends a workflow ``start`` event per record, in the same transaction as its consumption."""

    events: TopicSpec
    id_fn: Callable[[Any], str]
    input_fn: Callable[[Any], Any] | None = None
    kind: str = field(default="start_workflow", init=False)

    def detail(self) -> str:
        return self.events.name

    def build(self, rt: ProcessorRuntime, downstream: list[Push]) -> Push:
        topic, id_fn, input_fn = self.events.name, self.id_fn, self.input_fn

        def push(key: Any, value: Any, _sf_node: Node = self) -> None:
            instance_id = str(id_fn(value))
            payload = value if input_fn is None else input_fn(value)
            rt.send(
                topic,
                instance_id.encode(),
                dumps(Start(instance_id, payload).to_json()),
                None,
                None,
                None,
            )

        return push
