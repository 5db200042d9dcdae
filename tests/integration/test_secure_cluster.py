"""A secured cluster, as managed ones are: SASL_SSL with SCRAM, mutual TLS, ACLs enforced.

The test session starts its own `streamflow dev kafka start --secure` cluster. The app runs as
the SCRAM user ``app`` with exactly the ACLs ``streamflow acls --apply`` grants; results are
checked against a plain-Python truth read back as the super user. Then each way the cluster can
refuse a worker (wrong password, untrusted CA, every kind of ACL the app needs) must stop it
with one line that names what to fix, and never show a password.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AclBindingFilter, AdminClient, NewTopic

from tests.engine_helpers import REPO, WorkerProcess, load_app_with_env

pytestmark = pytest.mark.kafka

APP_FILE = REPO / "tests" / "apps" / "secure_app.py"
SCHEMA = REPO / "tests" / "apps" / "secure_schemas" / "total.avsc"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from streamflow.dev import LocalKafka

    cluster = LocalKafka(tmp_path_factory.mktemp("secure") / "kafka", secure=True)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def _name() -> str:
    return f"sec{uuid.uuid4().hex[:8]}"


def _rules(name: str) -> list[Any]:
    from streamflow.cluster.acls import app_acls

    app = load_app_with_env(APP_FILE, {"SF_TEST_APP": name})
    return app_acls(app.topology, "User:app", uses_registry=True)


def _admin(cluster: Any) -> AdminClient:
    return AdminClient(cluster.client_settings("admin"))


def _grant_all_but(cluster: Any, name: str, drop: Callable[[Any], tuple[str, ...]]) -> None:
    """Grant the app's ACLs except the operations ``drop(rule)`` names, which are revoked (a
    shared rule, such as the registry's, may have been granted by an earlier test)."""
    admin = _admin(cluster)
    keep, revoke = [], []
    for rule in _rules(name):
        dropped = drop(rule)
        for binding in rule.bindings():
            (revoke if binding.operation.name in dropped else keep).append(binding)
    for future in admin.create_acls(keep, request_timeout=30).values():
        future.result()
    if revoke:
        filters = [
            AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
            for b in revoke
        ]
        for future in admin.delete_acls(filters, request_timeout=30).values():
            future.result()
    time.sleep(0.5)  # ACL changes reach the authorizer through the metadata log


def _create_topics(cluster: Any, name: str) -> None:
    admin = _admin(cluster)
    futures = admin.create_topics([NewTopic(f"in-{name}", 2, 1), NewTopic(f"out-{name}", 2, 1)])
    for future in futures.values():
        future.result(30)


def _run_until_exit(cluster: Any, name: str, tmp_path: Path, **env: str) -> tuple[int, str]:
    """`streamflow run` as user ``app``; its exit status and everything it printed."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamflow",
            "run",
            str(APP_FILE),
            "--state-dir",
            str(tmp_path / "state"),
            "--config",
            str(cluster.security_files.settings_file("app")),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO), "SF_TEST_APP": name, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _assert_one_line_error(rc: int, output: str, *fragments: str) -> str:
    assert rc != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    for fragment in fragments:
        assert fragment in errors[0], output
    return errors[0]


# -- it works ------------------------------------------------------------------------------------


def _avro_totals(cluster: Any, topic: str, expected_records: int) -> dict[str, dict[str, Any]]:
    """The last total per account, decoded from the Confluent wire format with the schema
    file: an independent reading of what the app wrote."""
    schema = fastavro.parse_schema(json.loads(SCHEMA.read_text()))
    consumer = Consumer(
        {
            **cluster.client_settings("admin"),
            "group.id": f"check-{uuid.uuid4().hex}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    totals: dict[str, dict[str, Any]] = {}
    seen = 0
    deadline = time.monotonic() + 90
    try:
        while seen < expected_records and time.monotonic() < deadline:
            for msg in consumer.consume(500, 1.0):
                if msg.error():
                    continue
                raw = msg.value()
                magic, _schema_id = struct.unpack(">bI", raw[:5])
                assert magic == 0
                record = fastavro.schemaless_reader(io.BytesIO(raw[5:]), schema)
                totals[record["account"]] = record
                seen += 1
    finally:
        consumer.close()
    assert seen == expected_records, f"{seen} of {expected_records} totals"
    return totals


def test_streams_workflows_and_the_registry_run_as_a_scram_user_with_only_its_acls(
    secured: Any, tmp_path: Path
) -> None:
    name = _name()
    files = secured.security_files
    # The command a user runs, with the administrator's settings.
    granted = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamflow",
            "acls",
            str(APP_FILE),
            "--principal",
            "User:app",
            "--apply",
            "--config",
            str(files.settings_file("admin")),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO), "SF_TEST_APP": name},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert granted.returncode == 0, granted.stdout + granted.stderr
    assert f"allowed User:app DESCRIBE, WRITE on transactional id '{name}-' (prefix)" in (
        granted.stdout
    )
    _create_topics(secured, name)
    env = {"SF_TEST_APP": name, "STREAMFLOW_CONFIG": str(files.settings_file("app"))}
    worker = WorkerProcess(
        APP_FILE, secured.bootstrap, tmp_path / "state", env, tmp_path / "worker.log"
    )
    try:
        producer = Producer(secured.client_settings("admin"))
        truth: dict[str, tuple[int, int]] = {}
        for i in range(300):
            account = f"acct-{i % 12}"
            count, cents = truth.get(account, (0, 0))
            truth[account] = (count + 1, cents + i)
            producer.produce(
                f"in-{name}", orjson.dumps({"account": account, "cents": i}), account.encode()
            )
        assert producer.flush(30) == 0

        app = load_app_with_env(APP_FILE, env)
        client = app.client(secured.bootstrap)
        client.start("checkout", id="order-1", input=250)
        view = client.wait("checkout", "order-1", timeout=90)
        assert view.status == "completed" and view.result == "charged 250"

        totals = _avro_totals(secured, f"out-{name}", 300)
        assert {a: (t["count"], t["cents"]) for a, t in totals.items()} == truth

        # The same principal by client certificate, on the mutual-TLS listener.
        mtls_env = {"SF_TEST_APP": name, "STREAMFLOW_CONFIG": str(files.settings_file("app-mtls"))}
        by_certificate = load_app_with_env(APP_FILE, mtls_env).client()
        seen = by_certificate.get("checkout", "order-1")
        assert seen is not None and seen.status == "completed"
    finally:
        rc = worker.terminate()
    log = (tmp_path / "worker.log").read_text()
    assert rc == 0, log
    assert "Traceback" not in log and "not authorized" not in log, log


# -- it refuses, clearly -------------------------------------------------------------------------


def test_a_wrong_password_names_the_user_and_the_setting_not_the_password(
    secured: Any, tmp_path: Path
) -> None:
    name = _name()
    _grant_all_but(secured, name, lambda rule: ())
    rc, output = _run_until_exit(
        secured, name, tmp_path, STREAMFLOW_KAFKA_SASL_PASSWORD="not-the-password"
    )
    _assert_one_line_error(
        rc,
        output,
        f"authentication failed for user 'app' (SCRAM-SHA-512) at {secured.bootstrap}",
        "sasl.password (from STREAMFLOW_KAFKA_* environment variables)",
    )
    real = secured.security_files.passwords()["app"]
    assert "not-the-password" not in output and real not in output


COMMANDS = {
    "workflows start": ["workflows", "start", str(APP_FILE), "checkout", "c-1", "5"],
    "workflows show": ["workflows", "show", str(APP_FILE), "checkout", "c-1"],
    "workflows list": ["workflows", "list", str(APP_FILE)],
    "status": ["status", str(APP_FILE)],
    "dlq list": ["dlq", "list", str(APP_FILE)],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_names_a_wrong_password_in_one_line(
    secured: Any, tmp_path: Path, command: str
) -> None:
    """Not only `run`: each command a user types says the same one line, and librdkafka's own
    log lines stay out of the terminal."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamflow",
            *COMMANDS[command],
            "--config",
            str(secured.security_files.settings_file("app")),
        ],
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SF_TEST_APP": _name(),
            "STREAMFLOW_KAFKA_SASL_PASSWORD": "not-the-password",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    _assert_one_line_error(
        proc.returncode,
        output,
        f"authentication failed for user 'app' (SCRAM-SHA-512) at {secured.bootstrap}",
        "sasl.password",
    )
    assert "|FAIL|" not in output and "rdkafka" not in output, output
    assert "not-the-password" not in output


def test_an_untrusted_ca_names_the_certificate_problem(secured: Any, tmp_path: Path) -> None:
    from streamflow.dev.certificates import CertificateAuthority

    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(CertificateAuthority("someone else").certificate_pem)
    name = _name()
    rc, output = _run_until_exit(
        secured, name, tmp_path, STREAMFLOW_KAFKA_SSL_CA_LOCATION=str(other_ca)
    )
    _assert_one_line_error(
        rc,
        output,
        f"TLS with {secured.bootstrap} failed: certificate verify failed",
        f"not signed by a CA the client trusts: check ssl.ca.location={other_ca}",
    )


def _on(resource: str, pattern: str, named: Callable[[str], str], *ops: str) -> Any:
    """A `drop` for `_grant_all_but`: ``ops`` (all, if none) of the one matching rule."""

    def drop(name: str) -> Callable[[Any], tuple[str, ...]]:
        def of(rule: Any) -> tuple[str, ...]:
            match = (rule.resource_type, rule.pattern_type, rule.name) == (
                resource,
                pattern,
                named(name),
            )
            return (ops or rule.operations) if match else ()

        return of

    return drop


MISSING = {
    "input topic READ": (
        _on("TOPIC", "LITERAL", lambda n: f"in-{n}", "READ"),
        lambda n: f"READ on topic 'in-{n}' for User:app",
    ),
    "output topic WRITE": (
        _on("TOPIC", "LITERAL", lambda n: f"out-{n}", "WRITE"),
        lambda n: f"WRITE on topic 'out-{n}' for User:app",
    ),
    "internal topics <app>-": (
        _on("TOPIC", "PREFIXED", lambda n: f"{n}-"),
        lambda n: f"DESCRIBE on topic '{n}-",
    ),
    "internal topics <app>.": (
        _on("TOPIC", "PREFIXED", lambda n: f"{n}."),
        lambda n: f"DESCRIBE on topic '{n}.",
    ),
    "consumer group READ": (
        _on("GROUP", "LITERAL", lambda n: n, "READ"),
        lambda n: f"READ on group '{n}' for User:app",
    ),
    "restorer group": (
        _on("GROUP", "PREFIXED", lambda n: f"{n}-"),
        lambda n: f"DESCRIBE on group '{n}-restore'",
    ),
    "transactional ids": (
        _on("TRANSACTIONAL_ID", "PREFIXED", lambda n: f"{n}-", "WRITE"),
        lambda n: f"WRITE on transactional id '{n}-",
    ),
    "registry topic": (
        _on("TOPIC", "LITERAL", lambda n: "_streamflow_schemas"),
        lambda n: "on topic '_streamflow_schemas' for User:app",
    ),
    "registry reader group": (
        _on("GROUP", "LITERAL", lambda n: "_streamflow_schemas-reader"),
        lambda n: "DESCRIBE on group '_streamflow_schemas-reader'",
    ),
    "registry writer": (
        _on("TRANSACTIONAL_ID", "LITERAL", lambda n: "_streamflow_schemas-writer", "WRITE"),
        lambda n: "WRITE on transactional id '_streamflow_schemas-writer'",
    ),
}


@pytest.mark.parametrize("missing", list(MISSING))
def test_each_missing_acl_is_named_with_its_operation_and_resource(
    secured: Any, tmp_path: Path, missing: str
) -> None:
    drop, expected = MISSING[missing]
    name = _name()
    _create_topics(secured, name)
    _grant_all_but(secured, name, drop(name))
    rc, output = _run_until_exit(secured, name, tmp_path)
    _assert_one_line_error(rc, output, "not authorized: ", expected(name), "streamflow acls")
