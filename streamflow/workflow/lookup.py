"""Reading an instance where it lives: the worker that owns its partition.

An instance's journal is in one task's RocksDB store, on one worker. ``client.get`` asks that
worker (``/journal/<store>?id=...`` on its HTTP endpoint, served from committed values on the
HTTP thread) instead of reading the ``-instances`` changelog partition from offset 0: one
round trip, whatever the number of instances ever started. ``client.wait`` sends the same
request with ``wait=S``: the worker answers when the commit that ends the instance lands (a
long poll woken by the store, see ``KeyValueStore.watch``), so nothing polls.

Which worker: every worker advertises its endpoint in its consumer ``client.id`` (see
``operate/http_endpoint.py``), so the group's description lists them; the first answer for a
task says who holds it and is remembered. A worker that no longer holds the task answers 409
and the next one is asked. Only when no worker serves an endpoint (none runs, or all were
started with ``--no-http``) does the client fall back to reading the changelog.

The asking is written once, as a generator of requests (``asking``), and driven by blocking
HTTP in ``WorkflowClient`` and by asyncio streams in ``AsyncWorkflowClient``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import orjson

from streamflow.errors import StreamflowError
from streamflow.operate.group_status import endpoint_of, fetch_json
from streamflow.operate.state_query import MAX_WAIT_S, QUERY_TIMEOUT_S, SETTLE_S
from streamflow.runtime.partitioner import partition_for

ENDPOINTS_TTL_S = 10.0
"""How long the group's list of endpoints is trusted before it is described again (a worker
that went away is noticed sooner: its requests fail)."""


EMPTY_GROUP_TTL_S = 1.0
"""How long "no worker serves an endpoint" is believed (the changelog is read meanwhile)."""


class LookupFailed(StreamflowError):
    """A query the workers refused as wrong (an unknown store, a bad argument)."""


class HttpStatus(Exception):
    """A worker answered with an HTTP error status."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"HTTP {code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Fetch:
    """Ask ``endpoint`` for ``path``; the answer (JSON) or the exception is sent back."""

    endpoint: str
    path: str
    timeout: float


@dataclass(frozen=True)
class Pause:
    """Wait ``seconds`` before asking again (a task on the move)."""

    seconds: float


Request = Fetch | Pause


class Owners:
    """The app's worker endpoints and which one holds each task, as last seen."""

    def __init__(self, app: Any, client_conf: dict[str, Any]) -> None:
        self._app = app
        self._conf = client_conf
        self._admin: Any = None
        self._endpoints: list[str] = []
        self._described_at = float("-inf")
        self._owner: dict[str, str] = {}
        self._tasks: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()

    def endpoints(self, refresh: bool = False) -> list[str]:
        """Every worker's endpoint (described at most once per ``ENDPOINTS_TTL_S``)."""
        with self._lock:
            # An empty group (workers still joining) is asked again soon, not trusted for long.
            ttl = ENDPOINTS_TTL_S if self._endpoints else EMPTY_GROUP_TTL_S
            if refresh or time.monotonic() - self._described_at > ttl:
                self._endpoints = self._describe()
                self._described_at = time.monotonic()
            return list(self._endpoints)

    def _describe(self) -> list[str]:
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient(self._conf)
        name = self._app.name
        try:
            described = self._admin.describe_consumer_groups([name])[name].result(10)
        except Exception:  # noqa: BLE001 - no group yet, or no broker: nobody to ask
            return []
        found = {endpoint_of(m.client_id or "") for m in described.members}
        return sorted(e for e in found if e)

    def task_of(self, store: Any, changelog_partitions: int, instance_id: str) -> str:
        """The task holding ``instance_id`` in ``store``: ``<sub-topology>_<partition>``."""
        if store.name not in self._tasks:
            sub = next(
                s
                for s in self._app.topology.sub_topologies()
                if any(spec.name == store.name for spec in s.stores)
            )
            self._tasks[store.name] = (sub.id, changelog_partitions)
        sub_id, partitions = self._tasks[store.name]
        return f"{sub_id}_{partition_for(instance_id.encode(), partitions)}"

    def owner(self, task: str) -> str | None:
        return self._owner.get(task)

    def learned(self, task: str, endpoint: str) -> None:
        self._owner[task] = endpoint

    def forget(self, task: str) -> None:
        self._owner.pop(task, None)


def asking(
    owners: Owners, store: str, task: str, instance_id: str, wait: float
) -> Generator[Request, Any, dict[str, Any] | None]:
    """Ask the worker holding ``task`` for ``instance_id``'s journal; the answer, or None when
    no worker serves an endpoint (the caller reads the changelog instead).

    ``wait`` > 0: a long poll of at most ``MAX_WAIT_S`` (the caller asks again for more)."""
    wait = min(wait, MAX_WAIT_S)
    query = {"id": instance_id, "task": task}
    if wait > 0:
        query["wait"] = f"{wait:.3f}"
    path = f"/journal/{urllib.parse.quote(store)}?{urllib.parse.urlencode(query)}"
    settle_until = time.monotonic() + SETTLE_S
    refresh = False
    while True:
        endpoints = owners.endpoints(refresh)
        if not endpoints:
            return None
        known = owners.owner(task)
        order = ([known] if known in endpoints else []) + [e for e in endpoints if e != known]
        for endpoint in order:
            answer = yield Fetch(endpoint, path, wait + QUERY_TIMEOUT_S)
            if isinstance(answer, HttpStatus):
                if answer.code in (400, 404):  # the question is wrong: every worker says so
                    raise LookupFailed(f"worker {endpoint}: {answer.reason}")
                owners.forget(task)  # 409: not (or no longer) there
                continue
            if isinstance(answer, BaseException):
                owners.forget(task)  # unreachable or too slow: ask the others
                continue
            owners.learned(task, endpoint)
            return dict(answer)
        if time.monotonic() > settle_until:
            return None  # nobody holds it for now (a long rebalance): the changelog answers
        yield Pause(0.25)  # the task is moving (a rebalance, a restore): it runs again soon
        refresh = True


def run_blocking(requests: Generator[Request, Any, Any]) -> Any:
    """Drive ``asking`` with blocking HTTP (the sync client)."""
    try:
        request = next(requests)
        while True:
            if isinstance(request, Pause):
                time.sleep(request.seconds)
                request = requests.send(None)
                continue
            try:
                answer: Any = fetch_json(request.endpoint, request.path, request.timeout)
            except urllib.error.HTTPError as exc:
                answer = HttpStatus(exc.code, _reason(exc.read() or b"", str(exc)))
            except (OSError, ValueError) as exc:
                answer = exc
            request = requests.send(answer)
    except StopIteration as done:
        return done.value


async def run_async(requests: Generator[Request, Any, Any]) -> Any:
    """Drive ``asking`` with asyncio streams (the async client): a thousand waits are a
    thousand sockets, not a thousand threads."""
    try:
        request = next(requests)
        while True:
            if isinstance(request, Pause):
                await asyncio.sleep(request.seconds)
                request = requests.send(None)
                continue
            try:
                answer: Any = await asyncio.wait_for(
                    http_get_json(request.endpoint, request.path), request.timeout
                )
            except (OSError, ValueError, TimeoutError, HttpStatus) as exc:
                answer = exc
            request = requests.send(answer)
    except StopIteration as done:
        return done.value


async def http_get_json(endpoint: str, path: str) -> Any:
    """One HTTP/1.1 GET, answered as JSON: all a worker endpoint needs, without a client
    library."""
    host, _, port = endpoint.rpartition(":")
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise ValueError(f"{endpoint} did not answer HTTP: {head[:80]!r}")
    code = int(status_line[1])
    if code != 200:
        raise HttpStatus(code, _reason(body, f"HTTP {code}"))
    return orjson.loads(body)


def _reason(body: bytes, fallback: str) -> str:
    try:
        return str(orjson.loads(body).get("error", fallback))
    except (orjson.JSONDecodeError, AttributeError):
        return fallback
