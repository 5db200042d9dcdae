"""A worker's small HTTP endpoint: metrics, status and store queries (docs/operating.md).

Served by the standard library's threading HTTP server on a daemon thread: a few requests a
second from Prometheus, ``streamflow status`` and ``streamflow state``; nothing here needs more.
The handlers never touch a task, a store or a Kafka client themselves (none is thread-safe).
Metrics and status read what the worker published (``Metrics.snapshot``); a query is handed to
the worker thread through ``WorkerCalls`` and answered between two batches.

It binds 127.0.0.1 unless told otherwise (``--http-host``): it shows state, so exposing it is a
decision, not a default.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

from streamflow.operate.metrics import Metrics

log = logging.getLogger(__name__)

HTTP_CLIENT_ID_MARK = "@http="
"""A worker's consumer ``client.id`` ends with this and its endpoint's address: how
``streamflow status`` and store queries find each member's endpoint through the group."""
CALL_TIMEOUT_S = 10.0
"""How long a query waits for the worker thread (which answers between batches)."""


class QueryError(Exception):
    """A query the worker refuses, with the HTTP status to answer and a reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class WorkerCalls:
    """Functions the HTTP thread asks the worker thread to run (``run_pending`` in its loop)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()

    def call(self, fn: Callable[[], Any], timeout: float = CALL_TIMEOUT_S) -> Any:
        future: Future[Any] = Future()
        self._queue.put((fn, future))
        return future.result(timeout)

    @property
    def pending(self) -> bool:
        return not self._queue.empty()

    def run_pending(self) -> None:
        while True:
            try:
                fn, future = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - the asker reports it
                future.set_exception(exc)


Route = Callable[[str, dict[str, list[str]]], tuple[int, bytes, str]]
"""``(path, query) -> (status, body, content type)``."""


class HttpEndpoint:
    """``/metrics`` (Prometheus text), ``/status`` (JSON) and the routes a worker adds."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0) -> None:
        self.metrics = metrics
        self.routes: dict[str, Route] = {
            "/metrics": self._metrics,
            "/status": self._status,
        }
        self.status_extra: Callable[[], dict[str, Any]] = dict
        self.refresh: Callable[[], Any] | None = None
        """Called before ``/status`` answers: the worker publishes its figures of now."""
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                route = endpoint._route(url.path)
                if route is None:
                    self._answer(404, b'{"error": "no such path"}\n', "application/json")
                    return
                try:
                    status, body, kind = route(url.path, parse_qs(url.query))
                except QueryError as exc:
                    status, kind = exc.status, "application/json"
                    body = orjson.dumps({"error": str(exc)})
                except Exception as exc:  # noqa: BLE001 - a failed query is an answer, not a crash
                    log.warning("HTTP %s failed: %s: %s", url.path, type(exc).__name__, exc)
                    status, kind = 500, "application/json"
                    body = orjson.dumps({"error": f"{type(exc).__name__}: {exc}"})
                self._answer(status, body, kind)

            def _answer(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http: " + format, *args)

        self.server = _Server((host, port), Handler)
        address: tuple[Any, ...] = tuple(self.server.server_address)
        self.host: str = str(address[0])
        self.port: int = int(address[1])
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="streamflow-http", daemon=True
        )

    def _route(self, path: str) -> Route | None:
        route = self.routes.get(path)
        if route is not None:
            return route
        for prefix, handler in self.routes.items():
            if prefix.endswith("/") and path.startswith(prefix):
                return handler
        return None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        log.info("HTTP endpoint on http://%s (/metrics, /status)", self.address)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _metrics(self, _path: str, _query: dict[str, list[str]]) -> tuple[int, bytes, str]:
        return 200, self.metrics.render().encode(), "text/plain; version=0.0.4; charset=utf-8"

    def _status(self, _path: str, _query: dict[str, list[str]]) -> tuple[int, bytes, str]:
        if self.refresh is not None:
            try:
                self.refresh()
            except TimeoutError:
                pass  # the worker is busy (starting, restoring a slice): its last figures
        snap = self.metrics.snapshot
        body = {
            "app": snap.app,
            "worker_id": snap.worker_id,
            "member_id": snap.member_id,
            "published_at": snap.published_at,
            "restore_records_per_second": snap.restore_records_per_second,
            "standbys": [{"task": t, "lag": lag} for t, lag in sorted(snap.standby_lag.items())],
            "hung_attempts": [
                {
                    "step": a.id.step,
                    "instance_id": a.id.instance_id,
                    "seq": a.id.seq,
                    "attempt": a.id.attempt,
                    "age_seconds": a.age_seconds,
                    "timeout_seconds": a.timeout_seconds,
                    "past_timeout": a.past_timeout,
                    "void": a.id.void,
                }
                for a in snap.long_attempts
            ],
            "tasks": [
                {
                    "task": t.task,
                    "state": t.state,
                    "processed": t.processed,
                    "records_per_second": t.records_per_second,
                    "dead_letters": t.dead_letters,
                    "restore_done": t.restore_done,
                    "restore_total": t.restore_total,
                    "partitions": [
                        {"topic": tp, "partition": p, "position": pos, "high": high}
                        for tp, p, pos, high in t.partitions
                    ],
                }
                for t in snap.tasks
            ],
            **self.status_extra(),
        }
        return 200, orjson.dumps(body), "application/json"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    """The listen backlog. socketserver's default of 5 overflowed when an async client sent a
    burst of waits (300 long polls at once): the kernel dropped the extra connection attempts,
    and each was retried after a second. 300 concurrent waits took 59 s; with room for the
    burst, they take well under a second."""
