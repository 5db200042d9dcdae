"""``streamflow ui``: a web console for one app's workflows, topology, workers and dead letters.

Why this stack: the standard library's threading HTTP server and one HTML page with plain
JavaScript (``console.html``) — no build step, no framework to keep up to date, nothing to
install beyond streamflow. The console is a client like the CLI: every figure comes from the
cluster and the workers' endpoints (``operate/group_status``, ``operate/state_query``,
``operate/dead_letters``), and every action is an ordinary command (a signal, a cancel, a start, a
dead-letter replay) on the app's topics. Nothing it does needs a database of its own.

It binds 127.0.0.1 unless told otherwise; binding anything else needs ``--token``, which
every API request must then carry (``Authorization: Bearer …``; the page asks for it once
and keeps it in the browser's session storage).
"""

from __future__ import annotations

import hmac
import logging
import threading
import urllib.parse
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

import orjson
from confluent_kafka import KafkaException

from streamflow.cluster.client_errors import check_cluster
from streamflow.errors import KafkaUnavailable, StreamflowError
from streamflow.kafka.client_log import LIBRDKAFKA_LOGGER
from streamflow.operate.dead_letters import DeadLetters
from streamflow.operate.group_status import group_status
from streamflow.operate.http_endpoint import QueryError
from streamflow.operate.state_query import StateQuery
from streamflow.workflow.instance_filter import InstanceFilter
from streamflow.workflow.instance_queries import header_summary, read_journal

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DLQ_PAGE = 200


ApiError = QueryError
"""A request the console refuses: the HTTP status to answer and why (the workers' kind)."""


class Console:
    """The API behind the page, for one app."""

    def __init__(self, app: Any, client: dict[str, Any], settings: Any = None) -> None:
        self.app = app
        # Its clients' log lines at DEBUG, not on the terminal: errors come as one line.
        self.client = {**client, "logger": LIBRDKAFKA_LOGGER}
        self.settings = settings
        """The invocation's ``KafkaSettings``: what ``unavailable`` checks the cluster with."""
        self.query = StateQuery(app, self.client)
        self.dead_letters = DeadLetters(app.name, client["bootstrap.servers"], self.client)
        self._workflows: Any = None
        self._lock = threading.Lock()

    def unavailable(self, exc: BaseException) -> str:
        """What a request that met a cluster problem answers: the one line ``run`` prints
        (a refused password or certificate, nothing listening), found by asking once more."""
        if self.settings is not None:
            try:
                check_cluster(self.settings, self.client["bootstrap.servers"])
            except StreamflowError as refused:
                return str(refused)
        return (
            f"Kafka did not answer in time ({type(exc).__name__}: {exc}); it answers again "
            "now: try again"
        )

    def _commands(self) -> Any:
        with self._lock:
            if self._workflows is None:
                self._workflows = self.app.client(self.client["bootstrap.servers"])
            return self._workflows

    # -- reads ---------------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        inputs = sorted({t.name for sub in self.app.topology.sub_topologies() for t in sub.sources})
        status = group_status(self.query.admin, self.app.name, inputs, self.app.dead_letter_topic)
        return {
            "app": self.app.name,
            "workflows": sorted(self.app.workflows.workflows),
            "group": status.to_json(),
        }

    def topology(self) -> dict[str, Any]:
        subs = []
        for sub in self.app.topology.sub_topologies():
            subs.append(
                {
                    "id": sub.id,
                    "sources": [t.name for t in sub.sources],
                    "processors": [
                        {
                            "name": n.name,
                            "kind": n.kind,
                            "children": [c.name for c in n.children],
                            "sinks": [n.topic.name] if n.kind == "sink" else [],
                        }
                        for n in sub.nodes
                    ],
                    "stores": [s.name for s in sub.stores],
                }
            )
        return {"app": self.app.name, "text": self.app.describe(), "sub_topologies": subs}

    def instances(self, query: dict[str, str]) -> dict[str, Any]:
        workflow = query.get("workflow") or next(iter(sorted(self.app.workflows.workflows)), None)
        if workflow is None:
            return {"workflow": None, "instances": [], "next": None}
        ident = query.get("id")
        if ident:  # a search by id: one journal read, not a scan
            found = read_journal(self.query, workflow, ident)
            rows = [] if found is None else [{"id": ident, **header_summary(found["header"])}]
            return {"workflow": workflow, "instances": rows, "next": None}
        try:
            wanted = InstanceFilter(
                status=query.get("status") or None,
                version=int(query["version"]) if query.get("version") else None,
                started_from_ms=int(query["since"]) if query.get("since") else None,
            )
        except ValueError as exc:
            raise ApiError(400, f"version and since are numbers: {exc}") from None
        page = self.query.instances(
            workflow,
            after=query.get("after") or None,
            limit=int(query.get("limit") or 50),
            filters=wanted,
        )
        try:
            counts = self.query.counts(workflow)
        except StreamflowError:
            counts = None  # a task on the move: the page shows its instances all the same
        return {"workflow": workflow, "counts": counts, **page}

    def instance(self, workflow: str, ident: str) -> dict[str, Any]:
        found = read_journal(self.query, workflow, ident)
        if found is None:
            raise ApiError(404, f"no instance {ident!r} of workflow {workflow!r}")
        return found

    def dlq(self, query: dict[str, str]) -> dict[str, Any]:
        marks = self.dead_letters.replayed()
        rows: list[dict[str, Any]] = []
        by_type: dict[str, int] = {}
        source = query.get("source") or None
        for letter in self.dead_letters.list(query.get("error") or None):
            where = letter.source
            if source and (where is None or where[0] != source):
                continue
            by_type[letter.error_type] = by_type.get(letter.error_type, 0) + 1
            if len(rows) < DLQ_PAGE:
                rows.append({**letter.to_json(), "replayed": letter.id in marks})
        return {"dead_letters": rows, "by_type": by_type}

    # -- actions -------------------------------------------------------------------------------

    def signal(self, workflow: str, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("name")
        if not name:
            raise ApiError(400, "a signal needs a name")
        self._running(workflow, ident, "signal")
        self._commands().signal(workflow, ident, name, body.get("payload"))
        return {"sent": "signal", "name": name}

    def cancel(self, workflow: str, ident: str) -> dict[str, Any]:
        self._running(workflow, ident, "cancel")
        self._commands().cancel(workflow, ident)
        return {"sent": "cancel"}

    def _running(self, workflow: str, ident: str, what: str) -> None:
        """Refuse a command the instance would drop, saying why (404, 409)."""
        found = self._commands().get(workflow, ident)
        if found is None:
            raise ApiError(404, f"no instance {ident!r} of workflow {workflow!r}: {what} not sent")
        if found.done:
            raise ApiError(
                409, f"instance {ident!r} already ended ({found.status}): {what} not sent"
            )

    def resume(self, workflow: str, ident: str) -> dict[str, Any]:
        self._commands().resume(workflow, ident)
        return {"sent": "resume"}

    def fail(self, workflow: str, ident: str) -> dict[str, Any]:
        self._commands().fail(workflow, ident, "failed for good from the console")
        return {"sent": "fail"}

    def restart(self, workflow: str, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        """A new instance with the same input (the old one is left as it is)."""
        old = self._commands().get(workflow, ident)
        if old is None:
            raise ApiError(404, f"no instance {ident!r} of workflow {workflow!r}")
        new_id = body.get("id") or f"{ident}-{uuid.uuid4().hex[:6]}"
        wdef = self.app.workflows.node_of(workflow).versions
        version = old.header.get("version")
        serde = wdef.get(version).input if version in wdef else None
        payload = old.header.get("input")
        if serde is not None:
            from streamflow.workflow.payloads import unpack

            payload = unpack(serde, payload, f"the input of {ident!r}")
        self._commands().start(workflow, id=new_id, input=payload)
        return {"started": new_id}

    def replay_dlq(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.dead_letters.replay(body.get("error") or None)


def serve(console: Console, host: str, port: int, token: str | None) -> ThreadingHTTPServer:
    """A server for ``console`` on ``host:port`` (not started: ``serve_forever``)."""
    if host not in LOOPBACK and not token:
        raise StreamflowError(
            f"the console shows and changes workflows: binding {host} needs --token"
        )
    page = resources.files("streamflow.ui").joinpath("console.html").read_bytes()

    routes: list[tuple[str, str, Callable[..., Any]]] = [
        ("GET", "/api/overview", lambda q, b: console.overview()),
        ("GET", "/api/topology", lambda q, b: console.topology()),
        ("GET", "/api/instances", lambda q, b: console.instances(q)),
        ("GET", "/api/dlq", lambda q, b: console.dlq(q)),
        ("POST", "/api/dlq/replay", lambda q, b: console.replay_dlq(b)),
    ]

    class Handler(BaseHTTPRequestHandler):
        def _authorized(self) -> bool:
            if token is None:
                return True
            given = self.headers.get("Authorization", "").removeprefix("Bearer ")
            return hmac.compare_digest(given.encode(), token.encode())

        def _handle(self, method: str) -> None:
            url = urllib.parse.urlsplit(self.path)
            if method == "GET" and url.path in ("/", "/index.html"):
                self._answer(200, page, "text/html; charset=utf-8")
                return
            if not url.path.startswith("/api/"):
                self._answer(404, b"not found", "text/plain")
                return
            if not self._authorized():
                self._json(401, {"error": "a token is needed (--token)"})
                return
            query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = orjson.loads(self.rfile.read(length)) if length else {}
                self._json(200, self._dispatch(method, url.path, query, body))
            except ApiError as exc:
                self._json(exc.status, {"error": str(exc)})
            except (TimeoutError, KafkaException, KafkaUnavailable) as exc:
                self._json(503, {"error": console.unavailable(exc)})
            except (StreamflowError, orjson.JSONDecodeError, ValueError, TypeError) as exc:
                self._json(400, {"error": f"{type(exc).__name__}: {exc}"})
            except Exception as exc:  # noqa: BLE001 - the page shows it; the server goes on
                log.warning("console %s %s failed: %s", method, url.path, exc)
                self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

        def _dispatch(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
            for m, p, fn in routes:
                if m == method and p == path:
                    return fn(query, body)
            parts = [urllib.parse.unquote(x) for x in path.split("/")[2:]]
            # /api/instances/<workflow>/<id>[/<action>]
            if len(parts) >= 3 and parts[0] == "instances":
                workflow, ident = parts[1], parts[2]
                action = parts[3] if len(parts) > 3 else None
                if method == "GET" and action is None:
                    return console.instance(workflow, ident)
                if method == "POST" and action == "signal":
                    return console.signal(workflow, ident, body)
                if method == "POST" and action == "cancel":
                    return console.cancel(workflow, ident)
                if method == "POST" and action == "resume":
                    return console.resume(workflow, ident)
                if method == "POST" and action == "fail":
                    return console.fail(workflow, ident)
                if method == "POST" and action == "restart":
                    return console.restart(workflow, ident, body)
            raise ApiError(404, f"no API {method} {path}")

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        def _json(self, status: int, body: Any) -> None:
            data = orjson.dumps(body, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))
            self._answer(status, data, "application/json")

        def _answer(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("console: " + format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
