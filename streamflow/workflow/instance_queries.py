"""Workflow instances through the query path: the routes a worker serves for them and what a
client reads through ``StateQuery``.

Worker side (``InstanceRoutes``, registered by the worker next to ``/state/``):
``/instances/<store>`` pages a workflow's headers in id order with the ``InstanceFilter``
applied as it scans, and ``/journal/<store>?id=…[&wait=S]`` answers one instance (a long poll
with ``wait``). Both read committed values through the generic ``WorkerQueries``. They live
here, with the journal layout they read, so the runtime's query path knows nothing of
workflows (docs/architecture.md, "Operating surface").

Client side: ``read_journal`` (an instance whole, from the owner or the changelog) and
``header_summary`` (what a list shows of each instance).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from streamflow.errors import StoreClosed
from streamflow.operate.http_endpoint import QueryError
from streamflow.operate.state_query import (
    MAX_SCAN,
    MAX_WAIT_S,
    Route,
    StateQuery,
    WorkerQueries,
    dumps_json,
)
from streamflow.topology.specs import StoreSpec
from streamflow.workflow.instance_filter import InstanceFilter
from streamflow.workflow.journal import ENTRY, HEADER, TERMINAL


def header_summary(header: dict[str, Any]) -> dict[str, Any]:
    """What a list of instances shows of each: not the input or the result (they can be big)."""
    keys = ("workflow", "status", "version", "started_ms", "finished_ms", "attributes")
    return {k: header.get(k) for k in keys}


class InstanceRoutes:
    """The worker's ``/instances/`` and ``/journal/`` routes, over its generic queries."""

    def __init__(self, queries: WorkerQueries) -> None:
        self.queries = queries

    def routes(self) -> Mapping[str, Route]:
        return {"/instances/": self.instances, "/journal/": self.journal}

    def instances(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes, str]:
        """``/instances/<store>?after=ID&limit=N&status=S``: workflow headers in id order, a
        page at a time (a million instances are never read at once). At most ``MAX_SCAN``
        entries are looked at per request; ``scanned_to`` says how far, for the next page."""
        name = urllib.parse.unquote(path.removeprefix("/instances/"))
        spec = self.queries.specs.get(name)
        if spec is None:
            raise QueryError(404, f"no store {name!r} in this app")
        after = query.get("after", [None])[0]
        try:
            limit = min(MAX_SCAN, int(query.get("limit", ["50"])[0]))
        except ValueError:
            raise QueryError(400, "limit must be a number") from None
        try:
            wanted = InstanceFilter.from_query(query)
        except ValueError as exc:
            raise QueryError(400, str(exc)) from None
        full = query.get("full", ["0"])[0] == "1"
        body = self.queries.call(lambda: self._headers(spec, after, wanted, limit, full))
        return 200, dumps_json(body), "application/json"

    def journal(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes, str]:
        """``/journal/<instances store>?id=ID[&task=T][&wait=S]``: one instance's header and
        entries, read on the HTTP thread from the task that holds it (committed values only;
        the store guards its reads against a concurrent close). With ``wait``, a long poll:
        the answer comes when the instance has ended, or after ``S`` seconds with what it is
        then, woken by the commit that writes its header, never by polling.

        409 when this worker does not hold the instance's task (it moved, or never was here):
        the client asks the group again."""
        name = urllib.parse.unquote(path.removeprefix("/journal/"))
        spec = self.queries.specs.get(name)
        if spec is None:
            raise QueryError(404, f"no store {name!r} in this app")
        instance_id = query.get("id", [""])[0]
        if not instance_id:
            raise QueryError(400, "id is required")
        wanted = query.get("task", [None])[0]
        try:
            wait = min(MAX_WAIT_S, max(0.0, float(query.get("wait", ["0"])[0])))
        except ValueError:
            raise QueryError(400, "wait must be a number of seconds") from None
        head_kb = (instance_id + HEADER).encode()
        deadline = time.monotonic() + wait
        header: dict[str, Any] | None = None
        while True:
            held = [t for t in self.queries.tasks_of(spec) if wanted is None or t.id == wanted]
            if not held:
                raise QueryError(409, f"task {wanted} is not on this worker")
            if len(held) > 1:  # no task named: look in each, and answer at once
                for task in held:
                    header = self.queries.committed(task, spec, head_kb)
                    if header is not None:
                        break
                break
            task = held[0]
            store = self.queries.opened(task, spec)
            # Armed before the read: a commit between the read and the wait still wakes it.
            watched = store.watch(head_kb) if wait else None
            try:
                header = self.queries.committed(task, spec, head_kb)
                remaining = deadline - time.monotonic()
                ended = header is not None and header.get("status") in TERMINAL
                if watched is None or ended or remaining <= 0:
                    break
                watched.wait(remaining)  # a commit wrote its header, or the store closed
            finally:
                if watched is not None:
                    store.unwatch(head_kb, watched)
        body: dict[str, Any] = {"found": header is not None, "task": task.id, **self.queries.who()}
        if header is not None:
            try:
                entries = self.queries.opened(task, spec).committed_prefix(
                    (instance_id + ENTRY).encode(), MAX_SCAN
                )
            except StoreClosed:
                raise QueryError(409, f"task {task.id} moved off this worker") from None
            body["done"] = header.get("status") in TERMINAL
            body["header"] = header
            body["entries"] = [value for _, value in entries]
        return 200, dumps_json(body), "application/json"

    def _headers(
        self, spec: StoreSpec, after: str | None, wanted: Any, limit: int, full: bool = False
    ) -> dict[str, Any]:
        """A page of instances; ``full``: each whole (header and journal entries), else a
        summary."""
        holder: dict[str, Any] = {}

        found: list[dict[str, Any]] = []
        scanned_to: str | None = None
        looked = 0
        tasks = self.queries.tasks_of(spec)
        # Each task's store is in key order; their merge is too, up to the smallest stop.
        per_task: list[tuple[list[dict[str, Any]], str | None]] = []
        for task in tasks:
            mine: list[dict[str, Any]] = []
            stop: str | None = None
            start = None if after is None else (after + HEADER).encode()
            for key, value in task.store(spec.name).committed_items(b"", start):
                looked += 1
                if not key.endswith(HEADER):
                    continue
                if wanted.matches(value):
                    ident = key[: -len(HEADER)]
                    mine.append({"id": ident, **(value if full else header_summary(value))})
                    holder[ident] = task
                if len(mine) >= limit or looked >= MAX_SCAN:
                    stop = key[: -len(HEADER)]
                    break
            per_task.append((mine, stop))
        stops = [stop for _, stop in per_task if stop is not None]
        bound = min(stops) if stops else None
        for mine, _ in per_task:
            found.extend(h for h in mine if bound is None or h["id"] <= bound)
        found.sort(key=lambda h: h["id"])
        if bound is not None:
            scanned_to = bound
        if full:
            for h in found[:limit]:
                store = holder[h["id"]].store(spec.name)
                prefix = (h["id"] + ENTRY).encode()
                h["entries"] = [v for _, v in store.committed_items(prefix)]
        return {
            "instances": found[:limit],
            "scanned_to": scanned_to if len(found) <= limit else found[limit - 1]["id"],
            "tasks": [t.id for t in tasks],
            **self.queries.who(),
        }


def read_journal(query: StateQuery, workflow: Any, instance_id: str) -> dict[str, Any] | None:
    """A workflow instance's header and journal entries, read like any store (from the
    worker that owns the instance, or the changelog): None when there is no such id."""
    node = query.app.workflows.node_of(workflow)
    store = node.instances.name
    head = query.get(store, instance_id + HEADER, text=instance_id + HEADER)
    if not head["found"]:
        return None
    answer = query.scan(store, instance_id + ENTRY, limit=MAX_SCAN)
    entries = sorted((e["value"] for e in answer["entries"]), key=lambda e: e.get("seq", 0))
    return {
        "id": instance_id,
        "header": head["value"],
        "entries": entries,
        "source": head["source"],
    }
