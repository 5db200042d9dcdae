"""The Confluent-compatible registry over TLS with credentials, against a real HTTPS server.

The server is ``http.server`` behind ``ssl`` on 127.0.0.1, with certificates from ``trustme``,
serving the handful of Schema Registry endpoints confluent-kafka's client calls, and wanting
HTTP basic auth (or a static bearer token). So what is proved is what a user meets: the real
client, real TLS, real 401s, and the error messages streamflow makes of them.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import trustme
from click.testing import CliRunner

from streamflow.app import App
from streamflow.cli import main
from streamflow.errors import ConfigError
from streamflow.serde.avro.serde import avro
from streamflow.serde.registry.binding import bind_schemas, registry_from_config
from streamflow.serde.registry.compatibility import CompatibilityMode
from streamflow.serde.registry.confluent import ConfluentSchemaRegistry
from streamflow.serde.registry.settings import RegistrySettings, resolve
from tests.avro_schemas import USER_V1, USER_V2, write_schemas

PASSWORD = "s3cret-Pa55"
READER_PASSWORD = "r3ader-Pa55"
TOKEN = "tok-9f8e7d"
USERS = {"alice": PASSWORD, "reader": READER_PASSWORD}
"""``reader`` may read but not write: its writes get 403."""


# -- a Schema Registry, just enough of it ---------------------------------------------------------


@dataclass
class _State:
    subjects: dict[str, list[int]] = field(default_factory=dict)
    """subject -> schema id of each version, oldest first"""
    schemas: dict[int, str] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    server: _RegistryHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        state = self.server.state
        path = urlsplit(self.path).path
        state.requests.append(f"{method} {path}")
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        user = self._user()
        if user is None:
            return self._reply(401, {"error_code": 401, "message": "Unauthorized"})
        if user == "reader" and method != "GET":
            return self._reply(403, {"error_code": 40301, "message": "User cannot access"})
        parts = [unquote(p) for p in path.strip("/").split("/")]
        with self.server.lock:
            status, reply = self._route(method, parts, body)
        self._reply(status, reply)

    def _user(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if header == f"Bearer {TOKEN}":
            return "token-user"
        if not header.startswith("Basic "):
            return None
        name, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return name if USERS.get(name) == password else None

    def _route(self, method: str, parts: list[str], body: Any) -> tuple[int, Any]:
        state = self.server.state
        match method, parts:
            case "GET", ["subjects"]:
                return 200, sorted(state.subjects)
            case "GET", ["subjects", subject, "versions"]:
                if subject not in state.subjects:
                    return 404, {"error_code": 40401, "message": f"Subject '{subject}' not found."}
                return 200, list(range(1, len(state.subjects[subject]) + 1))
            case "GET", ["subjects", subject, "versions", version]:
                ids = state.subjects.get(subject, [])
                if not version.isdigit() or not 0 < int(version) <= len(ids):
                    return 404, {"error_code": 40402, "message": "Version not found."}
                return 200, self._registered(subject, int(version), ids[int(version) - 1])
            case "POST", ["subjects", subject, "versions"]:
                text = body["schema"]
                ids = state.subjects.setdefault(subject, [])
                found = next((i for i, t in state.schemas.items() if t == text), None)
                schema_id = found if found is not None else len(state.schemas) + 1
                state.schemas[schema_id] = text
                if schema_id not in ids:
                    ids.append(schema_id)
                return 200, {"id": schema_id}
            case "POST", ["subjects", subject]:
                ids = state.subjects.get(subject, [])
                for number, schema_id in enumerate(ids, start=1):
                    if state.schemas[schema_id] == body["schema"]:
                        return 200, self._registered(subject, number, schema_id)
                return 404, {"error_code": 40403, "message": "Schema not found"}
            case "GET", ["schemas", "ids", schema_id]:
                if int(schema_id) not in state.schemas:
                    return 404, {"error_code": 40403, "message": "Schema not found"}
                return 200, {"schema": state.schemas[int(schema_id)]}
            case "GET", ["config", subject]:
                if subject not in state.modes:
                    return 404, {"error_code": 40408, "message": "Subject has no compatibility"}
                return 200, {"compatibilityLevel": state.modes[subject]}
            case "PUT", ["config", subject]:
                state.modes[subject] = body["compatibility"]
                return 200, {"compatibility": body["compatibility"]}
        return 404, {"error_code": 404, "message": f"no route {method} /{'/'.join(parts)}"}

    def _registered(self, subject: str, version: int, schema_id: int) -> dict[str, Any]:
        schema = self.server.state.schemas[schema_id]
        return {"subject": subject, "version": version, "id": schema_id, "schema": schema}

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _RegistryHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.state = _State()
        self.lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-request is what some tests do on purpose


@dataclass
class Registry:
    url: str
    ca_file: Path
    state: _State


@dataclass
class Pki:
    """The server's CA, a CA the client does not know, and a client certificate for mTLS."""

    dir: Path
    server_ca: trustme.CA = field(default_factory=trustme.CA)
    other_ca: trustme.CA = field(default_factory=trustme.CA)
    client_ca: trustme.CA = field(default_factory=trustme.CA)

    def file(self, name: str, blob: trustme.Blob) -> Path:
        path = self.dir / name
        blob.write_to_path(path)
        return path

    def client_cert(self, ca: trustme.CA) -> tuple[Path, Path]:
        cert = ca.issue_cert("streamflow-client")
        return (
            self.file(f"client-{id(ca)}.pem", cert.cert_chain_pems[0]),
            self.file(f"client-{id(ca)}.key", cert.private_key_pem),
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def _serve(pki: Pki, *, client_ca: trustme.CA | None = None) -> Iterator[Registry]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    pki.server_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        client_ca.configure_trust(context)
    server = _RegistryHTTPServer(context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield Registry(
            f"https://{host!s}:{port}",
            pki.file("server-ca.pem", pki.server_ca.cert_pem),
            server.state,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def registry(pki: Pki) -> Iterator[Registry]:
    yield from _serve(pki)


@pytest.fixture
def mtls_registry(pki: Pki) -> Iterator[Registry]:
    yield from _serve(pki, client_ca=pki.client_ca)


def env(registry: Registry, **extra: str) -> dict[str, str]:
    """The environment of a worker configured for ``registry`` (no retries: errors at once)."""
    variables = {
        "STREAMFLOW_SCHEMA_REGISTRY_URL": registry.url,
        "STREAMFLOW_SCHEMA_REGISTRY_USER_INFO": f"alice:{PASSWORD}",
        "STREAMFLOW_SCHEMA_REGISTRY_SSL_CA_LOCATION": str(registry.ca_file),
        "STREAMFLOW_SCHEMA_REGISTRY_MAX_RETRIES": "0",
        "STREAMFLOW_SCHEMA_REGISTRY_TIMEOUT": "10",
    }
    variables.update({f"STREAMFLOW_SCHEMA_REGISTRY_{k}": v for k, v in extra.items()})
    return variables


def connect(environ: dict[str, str]) -> ConfluentSchemaRegistry:
    return ConfluentSchemaRegistry.from_settings(resolve(environ=environ))


# -- over TLS, with credentials ------------------------------------------------------------------


def test_register_and_fetch_over_tls_with_basic_auth(registry: Registry) -> None:
    writer = connect(env(registry))
    first = writer.register("users-value", USER_V1, default_mode=CompatibilityMode.BACKWARD)
    second = writer.register("users-value", USER_V2, default_mode=CompatibilityMode.BACKWARD)
    assert (first.version, second.version) == (1, 2)
    assert registry.state.modes == {"users-value": "BACKWARD"}, "a new subject gets its mode"

    reader = connect(env(registry))  # a fresh client: nothing cached, every answer from the server
    assert reader.subjects() == ["users-value"]
    assert json.loads(reader.schema(second.id))["fields"][1]["name"] == "email"
    assert [v.id for v in reader.versions("users-value")] == [first.id, second.id]
    assert reader.mode("users-value") is CompatibilityMode.BACKWARD
    assert "GET /schemas/ids/2" in registry.state.requests


def test_a_static_bearer_token_is_passed_through(registry: Registry) -> None:
    environ = env(
        registry,
        BEARER_AUTH_CREDENTIALS_SOURCE="STATIC_TOKEN",
        BEARER_AUTH_TOKEN=TOKEN,
        BEARER_AUTH_LOGICAL_CLUSTER="lsrc-1",
    )
    del environ["STREAMFLOW_SCHEMA_REGISTRY_USER_INFO"]
    settings = resolve(environ=environ)
    assert TOKEN not in repr(settings)
    ConfluentSchemaRegistry.from_settings(settings).register(
        "t-value", USER_V1, default_mode=CompatibilityMode.BACKWARD
    )
    assert registry.state.subjects == {"t-value": [1]}


def test_a_wrong_password_names_url_user_and_setting_never_the_password(
    registry: Registry,
) -> None:
    wrong = "not-" + PASSWORD
    with pytest.raises(ConfigError) as info:
        connect(env(registry, USER_INFO=f"alice:{wrong}")).subjects()
    message = str(info.value)
    assert message.startswith("authentication failed:"), message
    assert registry.url in message and "user 'alice'" in message and "HTTP 401" in message
    assert (
        "basic.auth.user.info (user:password, from $STREAMFLOW_SCHEMA_REGISTRY_USER_INFO)"
        in message
    )
    assert wrong not in message and PASSWORD not in message


def test_no_credentials_says_which_setting_to_set(registry: Registry) -> None:
    environ = env(registry)
    del environ["STREAMFLOW_SCHEMA_REGISTRY_USER_INFO"]
    with pytest.raises(ConfigError, match=r"requires authentication \(HTTP 401\) to list subjects"):
        connect(environ).subjects()


def test_a_user_without_permission_gets_an_authorization_error(registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        connect(env(registry, USER_INFO=f"reader:{READER_PASSWORD}")).register(
            "users-value", USER_V1, default_mode=CompatibilityMode.BACKWARD
        )
    message = str(info.value)
    assert message.startswith("authorization failed:"), message
    assert "does not allow user 'reader' to set the compatibility mode of subject" in message
    assert "HTTP 403" in message and READER_PASSWORD not in message


def test_a_password_in_the_url_is_never_shown(registry: Registry) -> None:
    environ = env(registry)
    del environ["STREAMFLOW_SCHEMA_REGISTRY_USER_INFO"]
    environ["STREAMFLOW_SCHEMA_REGISTRY_URL"] = registry.url.replace("//", "//alice:wr0ng@")
    settings = resolve(environ=environ)
    assert "wr0ng" not in repr(settings)
    with pytest.raises(ConfigError) as info:
        ConfluentSchemaRegistry.from_settings(settings).subjects()
    assert "wr0ng" not in str(info.value) and "alice:***@127.0.0.1" in str(info.value)
    assert "user 'alice'" in str(info.value)


@pytest.mark.parametrize("trust", ["another CA", "the default CAs"])
def test_an_untrusted_server_certificate_names_the_problem_and_ssl_ca_location(
    registry: Registry, pki: Pki, trust: str
) -> None:
    environ = env(registry)
    if trust == "another CA":
        other = pki.file("other-ca.pem", pki.other_ca.cert_pem)
        environ["STREAMFLOW_SCHEMA_REGISTRY_SSL_CA_LOCATION"] = str(other)
    else:
        del environ["STREAMFLOW_SCHEMA_REGISTRY_SSL_CA_LOCATION"]
    with pytest.raises(ConfigError) as info:
        connect(environ).subjects()
    message = str(info.value)
    assert f"TLS to the schema registry at {registry.url} failed" in message, message
    assert "certificate verify failed" in message and "set ssl.ca.location" in message
    assert (str(pki.dir) in message) == (trust == "another CA")
    assert PASSWORD not in message
    assert registry.state.requests == [], "no request (and no password) went out"


def test_nothing_listening_names_the_url(tmp_path: Path, registry: Registry) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"https://127.0.0.1:{port}"
    with pytest.raises(ConfigError) as info:
        connect(env(registry, URL=url)).subjects()
    message = str(info.value)
    assert f"cannot connect to the schema registry at {url}: connection refused" in message
    assert "url (from $STREAMFLOW_SCHEMA_REGISTRY_URL)" in message


# -- mutual TLS ----------------------------------------------------------------------------------


def test_mtls_with_a_client_certificate_from_the_config_file(
    mtls_registry: Registry, pki: Pki, tmp_path: Path
) -> None:
    cert, key = pki.client_cert(pki.client_ca)
    config = tmp_path / "streamflow.toml"
    config.write_text(
        '[kafka]\n"security.protocol" = "SSL"\n'
        f'[schema_registry]\nurl = "{mtls_registry.url}"\n"max.retries" = 0\n'
        f'ssl.ca.location = "{mtls_registry.ca_file}"\n'
        f'ssl.certificate.location = "{cert}"\n'
        f'ssl.key.location = "{key}"\n'
    )
    settings = resolve(
        config_file=config, environ={"STREAMFLOW_SCHEMA_REGISTRY_USER_INFO": f"alice:{PASSWORD}"}
    )
    registry = ConfluentSchemaRegistry.from_settings(settings)
    registered = registry.register("m-value", USER_V1, default_mode=CompatibilityMode.BACKWARD)
    assert registry.versions("m-value")[0].id == registered.id


def test_mtls_without_a_client_certificate_says_to_set_one(mtls_registry: Registry) -> None:
    with pytest.raises(ConfigError) as info:
        connect(env(mtls_registry)).subjects()
    message = str(info.value)
    assert mtls_registry.url in message, message
    assert "ssl.certificate.location and ssl.key.location" in message
    assert PASSWORD not in message


def test_mtls_with_a_certificate_the_server_does_not_trust(
    mtls_registry: Registry, pki: Pki
) -> None:
    cert, key = pki.client_cert(pki.other_ca)
    environ = env(mtls_registry, SSL_CERTIFICATE_LOCATION=str(cert), SSL_KEY_LOCATION=str(key))
    with pytest.raises(ConfigError) as info:
        connect(environ).subjects()
    message = str(info.value)
    assert "refused the TLS connection" in message, message
    assert (
        "ssl.certificate.location (from $STREAMFLOW_SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION)"
        in message
    )
    assert "is signed by a CA the registry trusts" in message


def test_a_key_that_is_not_the_certificates_is_refused_naming_both_files(
    registry: Registry, pki: Pki
) -> None:
    cert, _ = pki.client_cert(pki.client_ca)
    _, other_key = pki.client_cert(pki.other_ca)
    environ = env(registry, SSL_CERTIFICATE_LOCATION=str(cert), SSL_KEY_LOCATION=str(other_key))
    with pytest.raises(ConfigError, match=r"cannot load its TLS files.*ssl\.key\.location"):
        connect(environ)


# -- where the worker and the CLI find the registry ----------------------------------------------


def test_bind_schemas_uses_the_apps_registry_settings(registry: Registry, tmp_path: Path) -> None:
    write_schemas(tmp_path, [USER_V1])
    app = App("signups")
    app.topic("signups", value=avro("acme.User", schema_dir=str(tmp_path)))
    config = replace(app.config, schema_registry=resolve(environ=env(registry)))
    assert isinstance(registry_from_config(config), ConfluentSchemaRegistry)
    bind_schemas(app.topology, config)
    assert registry.state.subjects == {"signups-value": [1]}
    assert registry.state.modes == {"signups-value": "BACKWARD"}


def test_the_schemas_cli_reads_the_config_files_registry_table(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("STREAMFLOW_CONFIG", "STREAMFLOW_SCHEMA_REGISTRY_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STREAMFLOW_SCHEMA_REGISTRY_USER_INFO", f"alice:{PASSWORD}")
    connect(env(registry)).register("users-value", USER_V1, default_mode=CompatibilityMode.FULL)
    config = tmp_path / "streamflow.toml"
    config.write_text(
        f'[schema_registry]\nurl = "{registry.url}"\n"max.retries" = 0\n'
        f'"ssl.ca.location" = "{registry.ca_file}"\n'
    )
    listed = CliRunner().invoke(main, ["schemas", "list", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    assert "users-value" in listed.output and "FULL" in listed.output

    monkeypatch.setenv("STREAMFLOW_SCHEMA_REGISTRY_USER_INFO", "alice:guessed")
    refused = CliRunner().invoke(main, ["schemas", "list", "--config", str(config)])
    assert refused.exit_code == 2, refused.output
    assert "error: authentication failed" in refused.output and "guessed" not in refused.output
    assert "Traceback" not in refused.output


def test_the_worker_refuses_to_start_on_a_bad_registry_setting(tmp_path: Path) -> None:
    app_file = tmp_path / "app.py"
    app_file.write_text("from streamflow import App\napp = App('registry-settings')\n")
    result = CliRunner().invoke(
        main, ["run", str(app_file)], env={"STREAMFLOW_SCHEMA_REGISTRY_SSL_CA_FILE": "/ca.pem"}
    )
    assert result.exit_code != 0
    assert "'ssl.ca.file' (from $STREAMFLOW_SCHEMA_REGISTRY_SSL_CA_FILE)" in result.output
    assert "Traceback" not in result.output


# -- the settings: sources, order, refusals, redaction -------------------------------------------


def test_later_sources_win_key_by_key(tmp_path: Path) -> None:
    config = tmp_path / "streamflow.toml"
    config.write_text(
        '[kafka]\n"security.protocol" = "SSL"\n'
        '[schema_registry]\nurl = "https://file.example.com"\ntimeout = 30\n'
        '[schema_registry.ssl.ca]\nlocation = "/etc/file-ca.pem"\n'
    )
    settings = resolve(
        config_file=config,
        cli={"url": "https://cli.example.com"},
        environ={
            "STREAMFLOW_SCHEMA_REGISTRY_SSL_CA_LOCATION": "/etc/env-ca.pem",
            "STREAMFLOW_SCHEMA_REGISTRY_USER_INFO": "app:old",
            "STREAMFLOW_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "app:new",
            "STREAMFLOW_SCHEMA_DIR": "schemas",  # not ours: another prefix
        },
    )
    assert settings.values == {
        "url": "https://cli.example.com",  # --registry-url over the file
        "timeout": "30",
        "ssl.ca.location": "/etc/env-ca.pem",  # the environment over the file
        "basic.auth.user.info": "app:new",  # the generic name over the old one
    }
    assert settings.sources["url"] == "--registry-url"
    assert settings.sources["timeout"] == f"[schema_registry] in config file {config}"
    assert settings.sources["ssl.ca.location"] == "$STREAMFLOW_SCHEMA_REGISTRY_SSL_CA_LOCATION"
    assert resolve(environ={"STREAMFLOW_CONFIG": str(config)}).url == "https://file.example.com"
    overridden = resolve(
        cli={"url": "https://cli.example.com"},
        environ={"STREAMFLOW_SCHEMA_REGISTRY_URL": "https://env.example.com"},
    )
    assert overridden.url == "https://env.example.com", "as with --kafka: the environment wins"


def test_no_url_means_the_kafka_native_registry(tmp_path: Path) -> None:
    props = tmp_path / "client.properties"
    props.write_text("security.protocol=SSL\n")
    assert resolve(config_file=props, environ={}).url is None, ".properties configure Kafka only"
    assert resolve(environ={"STREAMFLOW_SCHEMA_REGISTRY_USER_INFO": "a:b"}).url is None


def test_unknown_keys_are_refused_naming_key_and_source(tmp_path: Path) -> None:
    config = tmp_path / "streamflow.toml"
    config.write_text('[schema_registry]\nurl = "https://registry.example.com"\nusr = "x"\n')
    with pytest.raises(ConfigError, match=r"'usr' \(from \[schema_registry\] in config file "):
        resolve(config_file=config, environ={})
    with pytest.raises(
        ConfigError, match=r"'ssl\.ca' \(from \$STREAMFLOW_SCHEMA_REGISTRY_SSL_CA\)"
    ):
        resolve(environ={"STREAMFLOW_SCHEMA_REGISTRY_SSL_CA": "/etc/ca.pem"})


def test_secrets_never_show() -> None:
    settings = resolve(
        environ={
            "STREAMFLOW_SCHEMA_REGISTRY_URL": "https://u:urlpw@registry.example.com",
            "STREAMFLOW_SCHEMA_REGISTRY_USER_INFO": "app:hunter2",
            "STREAMFLOW_SCHEMA_REGISTRY_SSL_KEY_PASSWORD": "k3y",
            "STREAMFLOW_SCHEMA_REGISTRY_BEARER_AUTH_CLIENT_SECRET": "cl1ent",
            "STREAMFLOW_SCHEMA_REGISTRY_BEARER_AUTH_TOKEN": "t0ken",
        }
    )
    shown = repr(settings) + str(settings.redacted())
    for secret in ("urlpw", "hunter2", "k3y", "cl1ent", "t0ken"):
        assert secret not in shown
    assert settings.redacted()["url"] == "https://u:***@registry.example.com"
    bad = RegistrySettings({"url": "https://r", "basic.auth.user.info": "hunter2"})
    with pytest.raises(
        ConfigError, match=r"must be user:password \(the value is not shown\)"
    ) as info:
        bad.client_conf()
    assert "hunter2" not in str(info.value)


def test_the_client_gets_numbers_as_numbers_and_files_that_exist(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    conf = RegistrySettings(
        {"url": "https://r", "timeout": "2.5", "max.retries": "1", "ssl.ca.location": str(ca)}
    ).client_conf()
    assert conf == {
        "url": "https://r",
        "timeout": 2.5,
        "max.retries": 1,
        "ssl.ca.location": str(ca),
    }
    with pytest.raises(ConfigError, match=r"max\.retries \(from \$STREAMFLOW_SCHEMA_REGISTRY_MAX"):
        resolve(
            environ={
                "STREAMFLOW_SCHEMA_REGISTRY_URL": "https://r",
                "STREAMFLOW_SCHEMA_REGISTRY_MAX_RETRIES": "three",
            }
        ).client_conf()
    missing = {"STREAMFLOW_SCHEMA_REGISTRY_URL": "https://r"}
    missing["STREAMFLOW_SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION"] = str(tmp_path / "none.pem")
    with pytest.raises(
        ConfigError, match=r"ssl\.certificate\.location \(from .*none\.pem does not"
    ):
        resolve(environ=missing).client_conf()
    key_only = RegistrySettings({"url": "https://r", "ssl.key.location": str(ca)})
    with pytest.raises(ConfigError, match=r"needs ssl\.certificate\.location too"):
        key_only.client_conf()


def test_basic_auth_credentials_source_is_checked_and_not_passed_on() -> None:
    ok = RegistrySettings(
        {
            "url": "https://r",
            "basic.auth.credentials.source": "USER_INFO",
            "basic.auth.user.info": "a:b",
        }
    )
    assert "basic.auth.credentials.source" not in ok.client_conf()
    in_url = RegistrySettings({"url": "https://a:b@r", "basic.auth.credentials.source": "URL"})
    assert in_url.client_conf()["url"] == "https://a:b@r" and in_url.user == "a"
    for values, error in [
        ({"basic.auth.credentials.source": "USER_INFO"}, "basic.auth.user.info is not set"),
        ({"basic.auth.credentials.source": "URL", "basic.auth.user.info": "a:b"}, "leave basic"),
        ({"basic.auth.credentials.source": "SASL_INHERIT"}, "supports USER_INFO and URL"),
    ]:
        with pytest.raises(ConfigError, match=error):
            RegistrySettings({"url": "https://r", **values}).client_conf()
