"""Step tasks: consume ``<app>.step.<name>`` commands, run the step, reply to the workflow.

A step attempt runs at least once; its reply (result or failure), any entity state it wrote and
the command's offset commit in one transaction, so an entity step's effect on Kafka-held state
is exactly-once with the consumption of its command. Retries are not done here: the
orchestrator schedules them on durable timers, so a failing step never blocks its partition.
"""

from __future__ import annotations

import concurrent.futures
import logging
from dataclasses import dataclass, field
from typing import Any

from streamflow.topology.nodes import Node, Push
from streamflow.topology.specs import StoreSpec
from streamflow.workflow.api import NonRetryable, StepDef
from streamflow.workflow.payloads import dumps, pack, parameter_types, rebuild, unpack

log = logging.getLogger(__name__)

_MISSING: Any = object()
_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="streamflow-step")
    return _POOL


class StepContext:
    """What a step function receives as ``ctx``."""

    def __init__(self, command: dict, store: Any, entity: str | None) -> None:
        self.workflow_id: str = command["id"]
        self.idempotency_key: str = command["ikey"]
        """``"<workflow id>:<step seq>"``: the same for every attempt; pass it to the service you call."""
        self.attempt: int = command["attempt"]
        self.entity = entity
        self._store = store
        self._closed = False

    @property
    def state(self) -> Any:
        """Entity steps: the entity's current value (None when it has none yet)."""
        if self._store is None:
            raise TypeError("ctx.state is only available in entity steps (@app.step(entity=...))")
        return self._store.get(self.entity)

    @state.setter
    def state(self, value: Any) -> None:
        if self._store is None:
            raise TypeError("ctx.state is only available in entity steps (@app.step(entity=...))")
        if self._closed:
            raise RuntimeError(f"step attempt {self.idempotency_key}#{self.attempt} timed out; "
                               "its state write is discarded")
        if value is None:
            self._store.delete(self.entity)
        else:
            self._store.put(self.entity, value)


@dataclass(eq=False)
class StepNode(Node):
    step: StepDef = None  # type: ignore[assignment]
    entity_store: StoreSpec | None = None
    kind: str = field(default="step", init=False)

    def detail(self) -> str:
        extra = f", entity store {self.entity_store.name}" if self.entity_store else ""
        return f"retry {self.step.retry.attempts}x{extra}"

    def stores(self) -> list[StoreSpec]:
        return [self.entity_store] if self.entity_store else []

    def build(self, rt: Any, downstream: list[Push]) -> Push:
        sdef = self.step
        store = rt.store(self.entity_store.name) if self.entity_store else None
        types = parameter_types(sdef.fn)
        non_retryable = (NonRetryable, *sdef.retry.non_retryable)
        timeout = sdef.timeout.total_seconds() if sdef.timeout else None

        def push(key: Any, command: dict, _sf_node: Node = self) -> None:
            entity = str(command["args"][0]) if store is not None else None
            ctx = StepContext(command, store, entity)
            kb = store.key_serializer(entity) if store is not None else None
            before = store.buffer.entries.get(kb, _MISSING) if store is not None else None
            declared = sdef.args
            received = [unpack(declared[i], a, f"argument {i} of step {sdef.name!r}")
                        if i < len(declared) else a for i, a in enumerate(command["args"])]
            args = [rebuild(t, a) for t, a in zip(types, received, strict=False)]
            args += received[len(types):]
            try:
                if timeout is None:
                    result = sdef.fn(ctx, *args)
                else:
                    future = _pool().submit(sdef.fn, ctx, *args)
                    try:
                        result = future.result(timeout)
                    except concurrent.futures.TimeoutError:
                        ctx._closed = True
                        raise TimeoutError(f"step {sdef.name!r} took longer than {timeout}s") from None
                reply = {"type": "step_result", "id": command["id"], "seq": command["seq"],
                         "attempt": command["attempt"], "result": pack(sdef.result, result)}
            except Exception as exc:  # the attempt failed: its entity write must not stick
                if store is not None:
                    if before is _MISSING:
                        store.buffer.entries.pop(kb, None)
                    else:
                        store.buffer.entries[kb] = before
                retryable = not isinstance(exc, non_retryable)
                log.debug("step %s attempt %d of %s failed: %r", sdef.name, command["attempt"],
                          command["id"], exc)
                reply = {"type": "step_failed", "id": command["id"], "seq": command["seq"],
                         "attempt": command["attempt"], "retryable": retryable,
                         "error": {"type": type(exc).__name__, "message": str(exc)}}
            rt.send(command["reply"], command["id"].encode(), dumps(reply), command.get("rp"),
                    None, None)

        return push
