"""What every workflow client shares, however its commands travel: checked command events out,
instance views in.

``WorkflowCommands`` turns ``start``, ``signal``, ``cancel`` and the operator's commands into
the events a workflow's orchestrator folds, checking inputs and payloads here, before anything
is sent, against the same types the worker checks them with. ``InstanceView`` is an instance as
its journal tells it, its result rebuilt into what the workflow returned. A subclass says how an
event travels and how a journal is read: Kafka (``workflow/client.py``) or the test driver's
in-memory logs (``streamflow.testing``), so a test drives the very code a service runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from streamflow.serde.avro.serde import AvroSerde
from streamflow.workflow.journal import TERMINAL, InstanceStatus
from streamflow.workflow.messages import (
    Cancel,
    Event,
    Purge,
    Resume,
    Signal,
    Start,
    Terminate,
)
from streamflow.workflow.payloads import (
    check_fits,
    is_plain_type,
    pack,
    parameter_types,
    rebuild,
    return_type,
    unpack,
)


@dataclass(frozen=True)
class InstanceView:
    """A workflow instance as its journal tells it."""

    id: str
    header: dict[str, Any]
    entries: list[dict[str, Any]]
    result_serde: AvroSerde | None = None
    """The result's Avro type, when the workflow declares one: ``result`` is read with it."""
    result_type: Any = None
    """The workflow function's return annotation (a dataclass, say): ``result`` is rebuilt
    into it, so a client sees what the workflow returned, not its JSON."""

    @property
    def status(self) -> InstanceStatus:
        status: InstanceStatus = self.header["status"]
        return status

    @property
    def result(self) -> Any:
        what = f"the result of {self.id!r}"
        value = self.header.get("result")
        if self.result_serde is not None:
            value = unpack(self.result_serde, value, what)
        if self.result_type is None or value is None or self.status != "completed":
            return value
        return rebuild(self.result_type, value, what)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


def check_instance_id(workflow: Any, instance_id: Any) -> None:
    if not isinstance(instance_id, str) or not instance_id:
        raise TypeError(
            f"start({workflow!r}, id=...): the instance id must be a non-empty str, "
            f"not {instance_id!r}"
        )


class WorkflowCommands:
    """Start, signal and cancel as events on a workflow's events topic; how they travel and how
    journals are read is the subclass's: Kafka (``WorkflowClient``) or the test driver."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._registry = app.workflows

    def _send(self, workflow: Any, instance_id: str, event: Event) -> None:
        raise NotImplementedError

    def _bind(self, serde: AvroSerde | None) -> None:
        """Make sure ``serde`` knows its schema id (the test driver binds at start)."""

    def _pack(self, serde: AvroSerde | None, value: Any) -> Any:
        """Avro payloads are sent in the wire format, with this code's schema id: a worker on
        an older or newer schema version resolves them."""
        self._bind(serde)
        return pack(serde, value)

    def start(
        self,
        workflow: Any,
        *,
        id: str,
        input: Any = None,
        version: int | None = None,
    ) -> str:
        """Start an instance; a second start with the same id leaves the first one running."""
        self._send(workflow, id, self._start_event(workflow, id, input, version))
        return id

    def start_many(
        self, workflow: Any, starts: Iterable[tuple[str, Any]], version: int | None = None
    ) -> list[str]:
        """Start many instances (``(id, input)`` pairs); returns their ids. Every input is
        checked before any start is sent."""
        events = [(i, self._start_event(workflow, i, value, version)) for i, value in starts]
        for instance_id, event in events:
            self._send(workflow, instance_id, event)
        return [instance_id for instance_id, _ in events]

    def _start_event(self, workflow: Any, id: str, input: Any, version: int | None) -> Start:
        """The start, its input checked here against the workflow's parameter type (the same
        ``ValueMismatch``, naming the field, that the worker would raise), so a bad input is
        refused before anything is sent."""
        wdef = self._version(workflow, version)
        check_instance_id(workflow, id)
        packed = self._pack(wdef.input, input)
        types_ = parameter_types(wdef.fn)
        if types_ and wdef.input is None:
            check_fits(types_[0], packed, f"the input of {wdef.name} instance {id!r}")
        return Start(id, packed, version)

    def _signal_event(self, workflow: Any, id: str, name: str, payload: Any) -> Signal:
        # The instance may be pinned to another version: the newest one's declaration is a
        # compatible version of its schema, so the orchestrator reads it either way.
        wdef = self._version(workflow, None)
        packed = self._pack(wdef.signal_serde(name), payload)
        declared = wdef.signal_type(name)
        if declared is not None:
            check_fits(declared, packed, f"the payload of signal {name!r} of {wdef.name} {id!r}")
        return Signal(id, name, packed)

    def signal(self, workflow: Any, id: str, name: str, payload: Any = None) -> None:
        self._send(workflow, id, self._signal_event(workflow, id, name, payload))

    def cancel(self, workflow: Any, id: str) -> None:
        """Stop the instance: ``Cancelled`` is raised at its current await, its timers are
        deleted, its running attempts cancelled, and its compensations run before it reports
        ``cancelled``."""
        self._send(workflow, id, Cancel(id))

    def purge(self, workflow: Any, id: str) -> None:
        """Delete a finished instance now instead of after its retention (one that has not
        ended is left alone)."""
        self._send(workflow, id, Purge(id))

    def resume(self, workflow: Any, id: str) -> None:
        """Run a ``suspended`` instance's code again (after a fix, or a passing cause)."""
        self._send(workflow, id, Resume(id))

    def fail(self, workflow: Any, id: str, reason: str = "") -> None:
        """End an instance for good as ``failed`` (no compensation): for a suspended
        instance nobody will fix, or one that must stop without its undo steps."""
        self._send(workflow, id, Terminate(id, reason))

    def _version(self, workflow: Any, version: int | None) -> Any:
        versions = self._registry.node_of(workflow).versions
        return versions.get(version or max(versions)) or versions[max(versions)]

    def _viewed(self, workflow: Any, view: InstanceView) -> InstanceView:
        wdef = self._registry.node_of(workflow).versions.get(view.header.get("version"))
        if wdef is None:
            return view
        declared = return_type(wdef.fn)
        if wdef.result is not None:
            self._bind(wdef.result)
        return dataclasses.replace(
            view,
            result_serde=wdef.result,
            result_type=None if is_plain_type(declared) else declared,
        )


def not_ended(instance_id: str, timeout: float, view: InstanceView | None) -> TimeoutError:
    """What ``wait`` raises when ``timeout`` passed first (the sync and async clients')."""
    status = view.status if view is not None else "not started"
    return TimeoutError(
        f"instance {instance_id!r} not finished after {timeout}s (status: {status})"
    )
