"""``app.async_client()``: the workflow client for asyncio services (FastAPI, aiohttp).

It is the sync ``WorkflowClient`` underneath: the same events, the same producer, the same
lookup. Only the waiting differs. A command awaits its record's acknowledgement as a future
(the client's delivery thread completes it), and ``get``/``wait`` talk HTTP to the owning
worker over asyncio streams, so the event loop never blocks on the network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import Future
from typing import Any

from streamflow.errors import KafkaUnavailable
from streamflow.workflow.client import WorkflowClient, raise_undelivered
from streamflow.workflow.commands import InstanceView, not_ended
from streamflow.workflow.deliveries import DELIVERY_TIMEOUT_S
from streamflow.workflow.lookup import run_async
from streamflow.workflow.messages import Cancel, Event, Purge, Resume, Terminate


class AsyncWorkflowClient:
    """Start, signal, cancel and query workflow instances from a coroutine."""

    def __init__(self, app: Any, bootstrap: str | None = None) -> None:
        self._client = WorkflowClient(app, bootstrap)

    async def close(self) -> None:
        """Deliver what is in flight, then stop."""
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> AsyncWorkflowClient:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    # -- commands ---------------------------------------------------------------------------------

    async def _send(self, workflow: Any, instance_id: str, event: Event) -> None:
        delivered = self._client._produce(workflow, instance_id, event)
        await _acknowledged(self._client, delivered, f"{type(event).__name__} for {instance_id!r}")

    async def start(
        self, workflow: Any, *, id: str, input: Any = None, version: int | None = None
    ) -> str:
        """Start an instance; a second start with the same id leaves the first one running.
        Returns once the broker has the start (the loop goes on serving meanwhile)."""
        await self._send(workflow, id, self._client._start_event(workflow, id, input, version))
        return id

    async def start_many(
        self, workflow: Any, starts: Iterable[tuple[str, Any]], version: int | None = None
    ) -> list[str]:
        """Start many instances at once (``(id, input)`` pairs); see ``WorkflowClient``."""
        ids, delivered = self._client._produce_starts(workflow, starts, version)
        refused = await _acknowledged(
            self._client,
            delivered,
            f"starts of {len(ids)} instances (send them again: starts are idempotent)",
        )
        raise_undelivered(refused, len(ids))
        return ids

    async def signal(self, workflow: Any, id: str, name: str, payload: Any = None) -> None:
        await self._send(workflow, id, self._client._signal_event(workflow, id, name, payload))

    async def cancel(self, workflow: Any, id: str) -> None:
        """See ``WorkflowClient.cancel``."""
        await self._send(workflow, id, Cancel(id))

    async def purge(self, workflow: Any, id: str) -> None:
        await self._send(workflow, id, Purge(id))

    async def resume(self, workflow: Any, id: str) -> None:
        await self._send(workflow, id, Resume(id))

    async def fail(self, workflow: Any, id: str, reason: str = "") -> None:
        await self._send(workflow, id, Terminate(id, reason))

    # -- lookups ----------------------------------------------------------------------------------

    async def get(self, workflow: Any, id: str) -> InstanceView | None:
        """The instance as the worker that owns it last committed it (None: no such id)."""
        answer = await run_async(self._client._asking(workflow, id, 0.0))
        if answer is None:
            return await asyncio.to_thread(self._client._get_from_changelog, workflow, id)
        return self._client._answered(workflow, id, answer)

    async def wait(self, workflow: Any, id: str, timeout: float = 30.0) -> InstanceView:
        """Until the instance has ended (a long poll on the owning worker, no polling)."""
        deadline = time.monotonic() + timeout
        view: InstanceView | None = None
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            answer = await run_async(self._client._asking(workflow, id, remaining))
            if answer is None:  # no worker answers: the changelog, every so often
                view = await asyncio.to_thread(self._client._get_from_changelog, workflow, id)
                if view is None or not view.done:
                    await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            else:
                view = self._client._answered(workflow, id, answer)
            if view is not None and view.done:
                return view
            if time.monotonic() >= deadline:
                raise not_ended(id, timeout, view)

    async def list(self, workflow: Any, **filters: Any) -> AsyncIterator[InstanceView]:
        """``WorkflowClient.list`` (same filters), each page fetched on a thread so the loop
        is not held."""
        pages = self._client.list(workflow, **filters)
        done = object()
        while True:
            view = await asyncio.to_thread(next, pages, done)
            if view is done:
                return
            yield view  # type: ignore[misc]


async def _acknowledged(client: WorkflowClient, delivered: Future[Any], what: str) -> Any:
    """``WorkflowClient._acknowledged`` for a coroutine: the loop is never blocked."""
    waiting = asyncio.wrap_future(delivered)
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while True:
        try:
            result = await asyncio.wait_for(
                asyncio.shield(waiting), min(0.5, max(0.0, deadline - time.monotonic()))
            )
        except TimeoutError:
            client._errors.raise_if_refused()
            if time.monotonic() >= deadline:
                raise KafkaUnavailable(
                    f"could not deliver the {what} within {DELIVERY_TIMEOUT_S:.0f} s"
                ) from None
            continue
        client._errors.reached()
        return result
