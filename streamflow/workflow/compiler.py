"""Compile workflow and step declarations into topology objects (docs/architecture.md).

For app ``A``: a workflow ``W`` reads ``A.W.events`` (keyed by instance id) and keeps its
journals in store ``W-instances`` and its durable timers in ``W-timers``; a step ``S`` reads
``A.step.S``. Steps get one topic each rather than one per (workflow, step) pair: an entity step
called by several workflows must keep all commands for one entity in one task with its store.

Payloads declared Avro get registry subjects of their own, registered by ``bind_schemas`` with
the stores' and topics' (FULL_TRANSITIVE: journals are read back for as long as an instance
lives): ``A.W-input``, ``A.W-result``, ``A.W-signal-<name>``, ``A.step.S-arg<i>``,
``A.step.S-result``.
"""

from __future__ import annotations

import dis
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from streamflow.errors import TopologyError
from streamflow.operate.state_query import Route, WorkerQueries
from streamflow.serde.avro.serde import AvroSerde
from streamflow.serde.base import BYTES, JSON, STR, Serde, resolve_serde
from streamflow.topology.graph import Topology
from streamflow.topology.nodes import SourceNode
from streamflow.topology.specs import TopicKind, TopicSpec
from streamflow.workflow.api import Retry, StepDef, WorkflowDef
from streamflow.workflow.instance_queries import InstanceRoutes
from streamflow.workflow.orchestrator import WorkflowNode
from streamflow.workflow.steps import StepNode
from streamflow.workflow.stream_start import StartWorkflowNode

WORKFLOW_TOPIC_CONFIG: tuple[tuple[str, str], ...] = (
    ("cleanup.policy", "delete"),
    ("retention.ms", str(7 * 24 * 3600 * 1000)),
)


class WorkflowRegistry:
    """The workflows and steps of one App, and the topology nodes they compile into."""

    def __init__(self, topology: Topology, partitions: int) -> None:
        self.topology = topology
        self.partitions = partitions
        self.steps: dict[Any, StepDef] = {}
        self.step_topics: dict[str, str] = {}
        self.workflows: dict[str, WorkflowNode] = {}
        self.payload_schemas: list[tuple[str, AvroSerde, str]] = []
        """(subject, serde, what uses it) of every Avro payload, for ``bind_schemas``."""

    def _payload(self, spec: str | Serde | None, subject: str, what: str) -> AvroSerde | None:
        """The Avro serde a payload is declared with (None: JSON, the default)."""
        if spec is None:
            return None
        serde = resolve_serde(spec)
        if serde.name == "json":
            return None
        if not serde.carries_schema or not isinstance(serde, AvroSerde):
            raise TopologyError(
                f"{what}: payloads are JSON or Avro, not {serde.name!r}; "
                "declare avro('<full name>') or leave it out"
            )
        self.payload_schemas.append((subject, serde, what))
        return serde

    def _topic(self, name: str) -> TopicSpec:
        return self.topology.add_topic(
            TopicSpec(name, STR, JSON, self.partitions, TopicKind.WORKFLOW, WORKFLOW_TOPIC_CONFIG)
        )

    def add_step(
        self,
        fn: Callable[..., Any],
        name: str | None,
        retry: Retry,
        timeout: timedelta | None,
        entity: str | None,
        args: Sequence[str | Serde | None] = (),
        result: str | Serde | None = None,
        max_concurrency: int | None = None,
        schedule_to_close: timedelta | None = None,
    ) -> StepDef:
        name = name or fn.__name__
        if max_concurrency is not None and (
            not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise TopologyError(
                f"step {name!r}: max_concurrency must be a positive int, not {max_concurrency!r}"
            )
        if name in self.step_topics:
            raise TopologyError(f"step {name!r} is registered twice")
        if entity is not None and entity not in self.topology.stores:
            self.topology.add_store(entity, STR, JSON)
        topic_name = f"{self.topology.app_name}.step.{name}"
        arg_serdes = tuple(
            self._payload(spec, f"{topic_name}-arg{i}", f"step {name!r} argument {i}")
            for i, spec in enumerate(args)
        )
        if entity is not None and arg_serdes and arg_serdes[0] is not None:
            raise TopologyError(
                f"entity step {name!r}: the first argument is the entity key "
                "and stays JSON; declare Avro types for the others only"
            )
        sdef = StepDef(
            name,
            fn,
            retry,
            timeout,
            entity,
            arg_serdes,
            self._payload(result, f"{topic_name}-result", f"step {name!r} result"),
            max_concurrency,
            schedule_to_close,
        )
        self.steps[fn] = self.steps[name] = sdef
        topic = self._topic(topic_name)
        self.step_topics[name] = topic.name
        # Offsets of commands finished above the committed offset (see workflow/steps.py); it
        # also keeps the parts of chunked commands (cluster/record_chunks).
        done = self.topology.add_store(f"step-{name}-done", BYTES, JSON)
        source = SourceNode(f"source-{topic.name}", topic=topic, parts_store=done)
        self.topology.add_source(topic, source)
        source.children.append(
            StepNode(
                f"step-{name}",
                step=sdef,
                topic=topic.name,
                done_store=done,
                entity_store=self.topology.stores.get(entity or ""),
            )
        )
        return sdef

    def add_workflow(
        self,
        fn: Callable[..., Any],
        name: str | None,
        version: int,
        input: str | Serde | None = None,
        result: str | Serde | None = None,
        signals: Mapping[str, Any] | None = None,
        timeout: timedelta | None = None,
        retention: timedelta | None = None,
    ) -> WorkflowDef:
        name = name or fn.__name__
        prefix, what = f"{self.topology.app_name}.{name}", f"workflow {name!r} v{version}"
        typed = {s: spec for s, spec in (signals or {}).items() if _is_python_type(spec)}
        declared = {
            signal: self._payload(spec, f"{prefix}-signal-{signal}", f"{what} signal {signal!r}")
            for signal, spec in (signals or {}).items()
            if signal not in typed
        }
        wdef = WorkflowDef(
            name,
            version,
            fn,
            self._payload(input, f"{prefix}-input", f"{what} input"),
            self._payload(result, f"{prefix}-result", f"{what} result"),
            tuple((k, v) for k, v in sorted(declared.items()) if v is not None),
            retention,
            timeout,
            tuple(sorted(typed.items())),
        )
        node = self.workflows.get(name)
        if node is None:
            events = self._topic(f"{self.topology.app_name}.{name}.events")
            node = WorkflowNode(
                f"workflow-{name}",
                workflow=name,
                steps=self.steps,
                events=events,
                step_topics=self.step_topics,
                topics=self.topology.topics,
                instances=self.topology.add_store(f"{name}-instances", STR, JSON),
                timers=self.topology.add_store(f"{name}-timers", BYTES, JSON),
                counts=self.topology.add_store(f"{name}-counts", STR, JSON),
                parked=self.topology.add_store(f"{name}-parked", STR, JSON),
            )
            # The parked store also keeps the parts of chunked events (cluster/record_chunks).
            source = SourceNode(f"source-{events.name}", topic=events, parts_store=node.parked)
            self.topology.add_source(events, source)
            source.children.append(node)
            self.workflows[name] = node
        if version in node.versions:
            raise TopologyError(f"workflow {name!r} version {version} is registered twice")
        node.versions[version] = wdef
        return wdef

    def start_node(
        self,
        name: str,
        workflow: Any,
        id_fn: Callable[[Any], str],
        input_fn: Callable[[Any], Any] | None,
    ) -> StartWorkflowNode:
        """The node a stream's ``start_workflow`` adds: one start of ``workflow`` per record."""
        return StartWorkflowNode(
            name, events=self.node_of(workflow).events, id_fn=id_fn, input_fn=input_fn
        )

    def query_routes(self, queries: WorkerQueries) -> Mapping[str, Route]:
        """The routes a worker serves for workflow instances, over its store queries."""
        return InstanceRoutes(queries).routes()

    def events_topic(self, workflow: Any) -> str:
        return self.node_of(workflow).events.name

    def node_of(self, workflow: Any) -> WorkflowNode:
        name = (
            workflow
            if isinstance(workflow, str)
            else getattr(workflow, "__streamflow_workflow__", getattr(workflow, "__name__", None))
        )
        node = self.workflows.get(name)  # type: ignore[arg-type]
        if node is None:
            raise TopologyError(
                f"{workflow!r} is not a registered workflow; known: "
                f"{', '.join(sorted(self.workflows)) or 'none'}"
            )
        return node

    def steps_called_by(self, workflow: str) -> list[str]:
        """Steps a workflow's code names (for ``describe``; calls through variables escape it)."""
        names: set[str] = set()
        for wdef in self.workflows[workflow].versions.values():
            for instruction in dis.get_instructions(wdef.fn):
                if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_ATTR"):
                    names.add(str(instruction.argval))
        return sorted(n for n in names if n in self.step_topics)


def _is_python_type(spec: Any) -> bool:
    """A signal declared with a Python type (``Approval``, ``int``, ``list[str]``,
    ``Literal["yes", "no"]``): a JSON payload of that shape, not an Avro schema."""
    if isinstance(spec, (str, Serde)):
        return False
    return isinstance(spec, type) or typing.get_origin(spec) is not None
