"""Interactive queries: a store's committed value, read where it lives.

Worker side (``WorkerQueries``): ``GET /state/<store>?key=K`` and ``?prefix=P&limit=N`` on the
worker's HTTP endpoint. The HTTP thread hands the read to the worker thread
(``WorkerCalls``), which looks in the running tasks it owns. Only committed values are seen
(RocksDB and its cache, never the open cycle's write buffer): a query never shows a write that
an abort may still take back.

Client side (``StateQuery``, used by ``streamflow state get|scan``): the group's description
names every member's endpoint (``client.id``); each one is asked, since each holds only its own
partitions and a rebalance may have moved the key since. When no member serves an endpoint
(no worker runs), the store's changelog is read instead: slower, but the same committed truth.

Keys on the command line are text: for a ``str`` store that is the key; for others it is
parsed as JSON first (``'{"user": 1}'``, ``42``) and used as a string if that fails. Prefixes
match the encoded key's bytes.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from streamflow.cluster.topic_reader import MissingTopic, read_to_end
from streamflow.errors import StoreClosed, StreamflowError
from streamflow.operate.group_status import endpoint_of, fetch_json
from streamflow.operate.http_endpoint import QueryError
from streamflow.serde.base import Serde
from streamflow.state.chunked_values import whole_values
from streamflow.topology.specs import StoreSpec

SCAN_LIMIT = 1000
MAX_SCAN = 100_000
"""The most entries one worker scans for a query: it scans on its own thread, between
batches, and must not keep a transaction open for long (a scan of 100,000 takes ~0.3 s)."""
QUERY_TIMEOUT_S = 5.0
MAX_WAIT_S = 30.0
"""The longest one long poll (``/journal/...&wait=S``) is held: a client waiting longer asks
again, so a worker that went away is noticed."""
SETTLE_S = 10.0
"""How long a query waits for tasks on the move (a rebalance) to run again somewhere."""


class StateQueryError(StreamflowError):
    """A store query that cannot be answered (the message says why)."""


def parse_key(text: str, serde: Serde) -> Any:
    if serde.name in ("str", "string"):
        return text
    if serde.name == "bytes":
        return text.encode()
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _json(value: Any) -> Any:
    """What a store holds, as JSON can carry it (bytes as text or hex)."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return "0x" + value.hex()
    return value


def _key_text(key: Any) -> str:
    """A key as ``parse_key`` reads it back: a str as is, bytes as text, others as JSON."""
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return key.decode(errors="surrogateescape")
    return orjson.dumps(key).decode()


def dumps_json(body: Any) -> bytes:
    return orjson.dumps(body, default=lambda v: _json(v) if isinstance(v, bytes) else str(v))


Route = Callable[[str, dict[str, list[str]]], tuple[int, bytes, str]]
"""An endpoint route: ``(path, query) -> (status, body, content type)``."""


def store_specs(topology: Any) -> dict[str, StoreSpec]:
    """Every store of a topology by name."""
    return {s.name: s for sub in topology.sub_topologies() for s in sub.stores}


# -- worker side ----------------------------------------------------------------------------------


class WorkerQueries:
    """The ``/state/`` route of one worker, and the committed reads other routes build on
    (``workflow/instance_queries`` serves instances with them)."""

    def __init__(
        self,
        specs: Mapping[str, StoreSpec],
        running_tasks: Callable[[], list[Any]],
        call: Callable[[Callable[[], Any]], Any],
        worker_id: Callable[[], str],
    ) -> None:
        self.specs = specs
        self.running_tasks = running_tasks
        self.call = call
        self.worker_id = worker_id

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, bytes, str]:
        name = urllib.parse.unquote(path.removeprefix("/state/"))
        spec = self.specs.get(name)
        if spec is None:
            known = ", ".join(sorted(self.specs)) or "none"
            raise QueryError(404, f"no store {name!r} in this app (stores: {known})")
        if "key" in query:
            key = parse_key(query["key"][0], spec.key_serde)
            body = self.call(lambda: self._get(spec, key))
        else:
            prefix = query.get("prefix", [""])[0].encode()
            try:
                limit = min(MAX_SCAN, int(query.get("limit", [str(SCAN_LIMIT)])[0]))
            except ValueError:
                raise QueryError(400, "limit must be a number") from None
            body = self.call(lambda: self._scan(spec, prefix, limit))
        return 200, dumps_json(body), "application/json"

    def opened(self, task: Any, spec: StoreSpec) -> Any:
        """``task``'s store of ``spec``. A store the task has not opened yet (no record has
        touched it since the worker started) is opened by the worker thread, never by a query
        thread: once per store, the wait of one turn of the worker's loop."""
        store = task.stores.get(spec.name)
        if store is None:
            store = self.call(
                lambda: task.store(spec.name) if task in self.running_tasks() else None
            )
        if store is None or store.closed:
            raise QueryError(409, f"task {task.id} does not serve {spec.name!r} right now")
        return store

    def committed(self, task: Any, spec: StoreSpec, kb: bytes) -> Any:
        try:
            return self.opened(task, spec).committed_get(kb, None)
        except StoreClosed:
            raise QueryError(409, f"task {task.id} moved off this worker") from None

    def tasks_of(self, spec: StoreSpec) -> list[Any]:
        return [t for t in self.running_tasks() if any(s.name == spec.name for s in t.sub.stores)]

    def _get(self, spec: StoreSpec, key: Any) -> dict[str, Any]:
        """On the worker thread."""
        try:
            kb = spec.key_serde.serialize(key)
        except Exception as exc:  # noqa: BLE001 - the asker's key, not our fault
            reason = f"key {key!r} cannot be encoded for store {spec.name!r}: {exc}"
            raise QueryError(400, reason) from None
        tasks = self.tasks_of(spec)
        for task in tasks:
            value = task.store(spec.name).committed_get(kb, _MISSING)
            if value is not _MISSING:
                return {"found": True, "key": key, "value": value, "task": task.id, **self.who()}
        return {"found": False, "key": key, "tasks": [t.id for t in tasks], **self.who()}

    def _scan(self, spec: StoreSpec, prefix: bytes, limit: int) -> dict[str, Any]:
        entries: list[dict[str, Any]] = []
        tasks = self.tasks_of(spec)
        truncated = False
        for task in tasks:
            for key, value in task.store(spec.name).committed_items(prefix):
                if len(entries) >= limit:
                    truncated = True
                    break
                entries.append({"key": key, "value": value, "task": task.id})
        return {
            "entries": entries,
            "truncated": truncated,
            "tasks": [t.id for t in tasks],
            **self.who(),
        }

    def who(self) -> dict[str, str]:
        return {"worker": self.worker_id()}


_MISSING: Any = object()


# -- client side ----------------------------------------------------------------------------------


class StateQuery:
    """Read an app's stores from its running workers, or from the changelogs when none runs."""

    def __init__(self, app: Any, client: Mapping[str, Any]) -> None:
        self.app = app
        self.client = dict(client)
        self.specs = store_specs(app.topology)
        self._task_ids: dict[str, set[str]] = {}
        self._admin: Any = None

    def spec(self, store: str) -> StoreSpec:
        spec = self.specs.get(store)
        if spec is None:
            known = ", ".join(sorted(self.specs)) or "none"
            raise StateQueryError(f"app {self.app.name!r} has no store {store!r} (stores: {known})")
        return spec

    @property
    def admin(self) -> Any:
        """One admin client for every question this object asks (making one costs a
        metadata round trip)."""
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = AdminClient(self.client)
        return self._admin

    def endpoints(self) -> list[str]:
        described = self.admin.describe_consumer_groups([self.app.name])[self.app.name].result(15)
        found = [endpoint_of(m.client_id or "") for m in described.members]
        return sorted(e for e in found if e)

    def get(self, store: str, key: Any, text: str | None = None) -> dict[str, Any]:
        """``{"found": bool, "value": ..., "task": ..., "worker": ... | "source": "changelog"}``.
        ``text``: the key as the user typed it (the workers parse it as ``parse_key`` does)."""
        spec = self.spec(store)
        endpoints = self.endpoints()
        if not endpoints:
            return self._get_from_changelog(spec, key)
        if text is None:
            text = _key_text(key)
        path = f"/state/{urllib.parse.quote(store)}?key={urllib.parse.quote(text)}"
        deadline = time.monotonic() + SETTLE_S
        while True:
            answers, failures = self._ask_all(endpoints, path)
            for answer in answers:
                if answer.get("found"):
                    return {**answer, "source": "worker"}
            served = {t for a in answers for t in a.get("tasks", [])}
            missing = self._tasks_of_store(spec) - served
            if not missing and not failures:
                return {"found": False, "key": key, "source": "worker", "tasks": sorted(served)}
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)  # a task moving (a rebalance, a restore) runs again shortly
            endpoints = self.endpoints() or endpoints  # members may have come or gone
        raise StateQueryError(_unanswered(f"key {key!r}", missing, failures))

    def scan(self, store: str, prefix: str = "", limit: int = SCAN_LIMIT) -> dict[str, Any]:
        spec = self.spec(store)
        endpoints = self.endpoints()
        if not endpoints:
            return self._scan_changelog(spec, prefix.encode(), limit)
        path = (
            f"/state/{urllib.parse.quote(store)}?prefix={urllib.parse.quote(prefix)}&limit={limit}"
        )
        entries: list[dict[str, Any]] = []
        truncated = False
        deadline = time.monotonic() + SETTLE_S
        while True:
            answers, failures = self._ask_all(endpoints, path)
            served = {t for a in answers for t in a.get("tasks", [])}
            missing = self._tasks_of_store(spec) - served
            if not missing and not failures:
                break
            if time.monotonic() > deadline:
                raise StateQueryError(_unanswered(f"a scan of {store!r}", missing, failures))
            time.sleep(0.25)  # a task moving (a rebalance, a restore) runs again shortly
            endpoints = self.endpoints() or endpoints  # members may have come or gone
        for answer in answers:
            entries.extend({**e, "worker": answer.get("worker")} for e in answer["entries"])
            truncated = truncated or answer.get("truncated", False)
        entries.sort(key=lambda e: orjson.dumps(e["key"]))
        if len(entries) > limit:
            entries, truncated = entries[:limit], True
        return {"entries": entries, "truncated": truncated, "source": "worker"}

    def instances(
        self,
        workflow: Any,
        after: str | None = None,
        limit: int = 50,
        status: str | None = None,
        filters: Any = None,
        full: bool = False,
    ) -> dict[str, Any]:
        """A page of a workflow's instances in id order, from the workers that own them:
        ``{"instances": [...], "next": ID | None}`` (``next``: the cursor of the next page).
        ``filters``: an ``InstanceFilter`` the workers apply as they page."""
        node = self.app.workflows.node_of(workflow)
        store = node.instances.name
        query = {"limit": str(limit)}
        if after:
            query["after"] = after
        if filters is not None:
            query.update(filters.to_query())
        if full:
            query["full"] = "1"
        if status:
            query["status"] = status
        path = f"/instances/{urllib.parse.quote(store)}?{urllib.parse.urlencode(query)}"
        endpoints = self.endpoints()
        if not endpoints:
            raise StateQueryError(f"no worker of app {self.app.name!r} serves --http-port")
        answers, failures = self._ask_all(endpoints, path)
        if failures:
            raise StateQueryError(_unanswered("the instances", set(), failures))
        stops = [a["scanned_to"] for a in answers if a.get("scanned_to")]
        bound = min(stops) if stops else None
        merged = sorted(
            (h for a in answers for h in a["instances"] if bound is None or h["id"] <= bound),
            key=lambda h: h["id"],
        )
        page = merged[:limit]
        # More pages: this one was cut at ``limit``, or some worker stopped scanning early.
        cursor = page[-1]["id"] if len(merged) > limit else bound
        return {"instances": page, "next": cursor}

    def counts(self, workflow: Any) -> dict[str, int] | None:
        """Instances of ``workflow`` per status, summed over the workers' tasks (each keeps its
        own in a store: ``<workflow>-counts``); None when no worker serves an endpoint."""
        node = self.app.workflows.node_of(workflow)
        if node.counts is None or not self.endpoints():
            return None
        answer = self.scan(node.counts.name, "", limit=MAX_SCAN)
        totals: dict[str, int] = {}
        for entry in answer["entries"]:
            totals[entry["key"]] = totals.get(entry["key"], 0) + int(entry["value"])
        return {status: n for status, n in sorted(totals.items()) if n}

    def _tasks_of_store(self, spec: StoreSpec) -> set[str]:
        """Every task that holds a part of ``spec``: one per partition of its changelog."""
        if spec.name not in self._task_ids:
            sub = next(
                sub
                for sub in self.app.topology.sub_topologies()
                if any(s.name == spec.name for s in sub.stores)
            )
            topics = self.admin.list_topics(spec.changelog, timeout=15).topics
            meta = topics.get(spec.changelog)
            count = len(meta.partitions) if meta is not None and meta.error is None else 0
            self._task_ids[spec.name] = {f"{sub.id}_{p}" for p in range(count)}
        return self._task_ids[spec.name]

    def _ask_all(self, endpoints: list[str], path: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Every worker's answer, and which workers did not answer (unreachable, busy)."""
        answers = []
        failures = []
        for endpoint in endpoints:
            try:
                answers.append(fetch_json(endpoint, path, QUERY_TIMEOUT_S))
            except urllib.error.HTTPError as exc:
                try:
                    reason = orjson.loads(exc.read() or b"{}").get("error", str(exc))
                except orjson.JSONDecodeError:
                    reason = str(exc)
                if exc.code in (400, 404):  # the query is wrong: every worker would say so
                    raise StateQueryError(f"worker {endpoint}: {reason}") from None
                failures.append(f"{endpoint}: {reason}")
            except OSError as exc:
                failures.append(f"{endpoint}: {exc}")
        if not answers:
            raise StateQueryError("no worker answered: " + "; ".join(failures))
        return answers, failures

    # -- no worker running: the changelog -------------------------------------------------------

    def _changelog(self, spec: StoreSpec) -> dict[bytes, bytes]:
        """The changelog folded to its last value per key (tombstones delete), big values
        joined from their chunks."""
        latest: dict[bytes, bytes | None] = {}
        try:
            for msg in read_to_end(self.client, spec.changelog, f"{self.app.name}.state-query"):
                latest[msg.key()] = msg.value()  # a tombstone deletes (whole_values)
        except MissingTopic:
            raise StateQueryError(
                f"store {spec.name!r} has no changelog {spec.changelog!r} yet: "
                f"has app {self.app.name!r} run?"
            ) from None
        return {kb: raw for kb, raw in whole_values(latest).items() if raw is not None}

    def _decode(self, spec: StoreSpec, raw: bytes) -> tuple[bool, Any]:
        """(live, value): a TTL store's value carries its write time first (``ttl_store``)."""
        if spec.ttl_ms is not None:
            written = int.from_bytes(raw[:8], "big", signed=True)
            if written + spec.ttl_ms <= int(time.time() * 1000):
                return False, None
            raw = raw[8:]
        return True, spec.value_serde.deserialize(raw)

    def _get_from_changelog(self, spec: StoreSpec, key: Any) -> dict[str, Any]:
        kb = spec.key_serde.serialize(key)
        raw = self._changelog(spec).get(kb)
        live, value = (False, None) if raw is None else self._decode(spec, raw)
        body: dict[str, Any] = {"found": live, "key": key, "source": "changelog"}
        if live:
            body["value"] = value
        return body

    def _scan_changelog(self, spec: StoreSpec, prefix: bytes, limit: int) -> dict[str, Any]:
        entries: list[dict[str, Any]] = []
        truncated = False
        for kb, raw in sorted(self._changelog(spec).items()):
            if not kb.startswith(prefix):
                continue
            live, value = self._decode(spec, raw)
            if not live:
                continue
            if len(entries) >= limit:
                truncated = True
                break
            entries.append({"key": spec.key_serde.deserialize(kb), "value": value})
        return {"entries": entries, "truncated": truncated, "source": "changelog"}


def _unanswered(what: str, missing: set[str], failures: list[str]) -> str:
    parts = []
    if missing:
        parts.append(
            f"task(s) {', '.join(sorted(missing))} run on no worker right now (a rebalance or "
            "a restore is under way, or their workers have no --http-port)"
        )
    if failures:
        parts.append("these workers did not answer: " + "; ".join(failures))
    return f"{what} cannot be answered for sure: " + " and ".join(parts)


def as_json(body: Any) -> str:
    return dumps_json(body).decode()
