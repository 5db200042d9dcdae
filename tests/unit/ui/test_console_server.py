"""The console's HTTP layer: the page, the token, errors as JSON (its data is tested on Kafka,
in a browser: tests/integration/test_console_in_browser.py)."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from streamflow.errors import StreamflowError
from streamflow.ui.server import ApiError, serve


class _Console:
    """The API's shape with fixed answers: what the HTTP layer is tested against."""

    def overview(self) -> dict[str, Any]:
        return {"app": "demo", "workflows": ["w"], "group": {}}

    def instance(self, workflow: str, ident: str) -> dict[str, Any]:
        raise ApiError(404, f"no instance {ident!r} of workflow {workflow!r}")

    def signal(self, workflow: str, ident: str, body: dict[str, Any]) -> dict[str, Any]:
        return {"sent": "signal", "to": [workflow, ident], "name": body["name"]}


def _get(url: str, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            raw = r.read()
            return r.status, raw if r.headers["Content-Type"].startswith(
                "text/html"
            ) else json.loads(raw)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture()
def running() -> Any:
    servers = []

    def start(token: str | None = None) -> str:
        server = serve(_Console(), "127.0.0.1", 0, token)  # type: ignore[arg-type]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_page_and_the_api_with_a_token(running: Any) -> None:
    base = running("s3cret")
    status, page = _get(base + "/")
    assert status == 200 and b"streamflow console" in page  # the page itself needs no token
    assert _get(base + "/api/overview") == (401, {"error": "a token is needed (--token)"})
    assert _get(base + "/api/overview", "wrong")[0] == 401
    assert _get(base + "/api/overview", "s3cret") == (
        200,
        {"app": "demo", "workflows": ["w"], "group": {}},
    )


def test_errors_are_json_naming_what_is_wrong(running: Any) -> None:
    base = running()
    assert _get(base + "/api/instances/w/nope") == (
        404,
        {"error": "no instance 'nope' of workflow 'w'"},
    )
    status, body = _get(base + "/api/nothing")
    assert status == 404 and "no API GET /api/nothing" in body["error"]
    status, body = _get(base + "/api/instances/w/i-1/signal", body={"name": "go"})
    assert status == 200 and body == {"sent": "signal", "to": ["w", "i-1"], "name": "go"}


def test_binding_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(StreamflowError, match="needs --token"):
        serve(_Console(), "0.0.0.0", 0, None)  # type: ignore[arg-type]


def test_a_cluster_that_is_not_there_is_named_in_one_line() -> None:
    """A real Console whose cluster (127.0.0.1:1) refuses connections: 503 with the line `run`
    prints, not an empty TimeoutError."""
    import urllib.request as request

    from streamflow import App
    from streamflow.kafka.settings import KafkaSettings
    from streamflow.ui.server import Console

    app = App("gone")
    app.topic("t")
    console = Console(app, {"bootstrap.servers": "127.0.0.1:1"}, KafkaSettings())
    server = serve(console, "127.0.0.1", 0, None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/overview"
        try:
            request.urlopen(url, timeout=60)
            raise AssertionError("answered without a cluster")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            assert "cannot reach Kafka at 127.0.0.1:1" in json.loads(exc.read())["error"]
    finally:
        server.shutdown()
        server.server_close()
