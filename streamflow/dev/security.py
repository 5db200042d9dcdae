"""A secured local cluster: what production clusters do, on loopback.

Managed clusters hand out SASL_SSL with SCRAM and enforce ACLs; a stream processor that was
only ever run against PLAINTEXT finds out what it lacks there. ``--secure`` makes the local
cluster refuse the same things:

- ``CLIENT`` (the bootstrap port): SASL_SSL with SCRAM-SHA-256 and SCRAM-SHA-512;
- ``MTLS``: TLS with a required client certificate, the principal taken from its CN;
- ``INTERNAL`` and ``CONTROLLER``: mutual TLS between the nodes, with the broker certificate;
- ``StandardAuthorizer``, nothing allowed without an ACL. Super users: the brokers and ``admin``.

Two SCRAM users are made when the storage is formatted: ``admin`` (a super user, for setup and
for granting ACLs) and ``app`` (nothing until ACLs are granted: ``streamflow acls FILE``). The
client certificate has CN ``app`` too, so one set of ACLs serves both ways of logging in.

Everything lives in ``<run dir>/security``: the CA, the broker's key store, the users'
passwords, and one librdkafka ``.properties`` file per way of connecting, for ``--config``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from streamflow.dev.broker_config import HOST, ClusterSpec
from streamflow.dev.certificates import CertificateAuthority, write_private
from streamflow.errors import DevKafkaError

ADMIN_USER = "admin"
APP_USER = "app"
BROKER_PRINCIPAL = "streamflow-broker"
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
CLIENT_MECHANISM = "SCRAM-SHA-512"
"""What the written client settings use; the broker accepts both."""

_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@dataclass(frozen=True)
class SecurityFiles:
    """The paths of a secured cluster's material under ``<run dir>/security``."""

    root: Path

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    @property
    def broker_keystore(self) -> Path:
        """The broker's key and certificate chain in one PEM file (a JVM ``PEM`` key store)."""
        return self.root / "broker.pem"

    @property
    def client_certificate(self) -> Path:
        return self.root / f"{APP_USER}-client.pem"

    @property
    def client_key(self) -> Path:
        return self.root / f"{APP_USER}-client-key.pem"

    @property
    def users_file(self) -> Path:
        return self.root / "users.json"

    def settings_file(self, name: str) -> Path:
        """``admin.properties``, ``app.properties`` (SCRAM) or ``app-mtls.properties``."""
        return self.root / f"{name}.properties"

    def exists(self) -> bool:
        return all(
            p.exists()
            for p in (self.ca_file, self.broker_keystore, self.users_file, self.client_key)
        )

    def passwords(self) -> dict[str, str]:
        try:
            raw = json.loads(self.users_file.read_text())
        except (OSError, ValueError) as exc:
            raise DevKafkaError(
                f"{self.users_file} is unreadable ({exc}); start again with --clean"
            ) from exc
        return {str(k): str(v) for k, v in raw.items()}


def create(files: SecurityFiles, cluster: ClusterSpec) -> None:
    """Make the CA, the certificates and the users' passwords (a new cluster, once)."""
    ca = CertificateAuthority("streamflow dev CA")
    broker = ca.issue(BROKER_PRINCIPAL, server=True, ip_addresses=(HOST,), dns_names=("localhost",))
    client = ca.issue(APP_USER, server=False)
    files.root.mkdir(parents=True, exist_ok=True)
    files.root.chmod(0o700)
    (files.ca_file).write_bytes(ca.certificate_pem)
    write_private(files.broker_keystore, broker.key + broker.certificate + ca.certificate_pem)
    files.client_certificate.write_bytes(client.certificate)
    write_private(files.client_key, client.key)
    # Hex: SCRAM's `--add-scram` syntax has no quoting for ',' or ']'.
    passwords = {user: secrets.token_hex(16) for user in (ADMIN_USER, APP_USER)}
    write_private(files.users_file, json.dumps(passwords, indent=2) + "\n")
    write_settings_files(files, cluster)


def write_settings_files(files: SecurityFiles, cluster: ClusterSpec) -> None:
    """One ``.properties`` per way of connecting; ports are the cluster's, so rewritten on
    every start."""
    for user in (ADMIN_USER, APP_USER):
        _write_properties(files.settings_file(user), scram_settings(files, cluster, user))
    _write_properties(files.settings_file(f"{APP_USER}-mtls"), mtls_settings(files, cluster))


def _write_properties(path: Path, settings: dict[str, str]) -> None:
    lines = ["# Written by `streamflow dev kafka start --secure`: use with --config."]
    lines += [f"{key}={value}" for key, value in settings.items()]
    write_private(path, "\n".join(lines) + "\n")


def scram_settings(files: SecurityFiles, cluster: ClusterSpec, user: str) -> dict[str, str]:
    """librdkafka settings for ``user`` on the SASL_SSL listener."""
    password = files.passwords().get(user)
    if password is None:
        raise DevKafkaError(f"the secured cluster has no user {user!r}")
    return {
        "bootstrap.servers": cluster.bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": CLIENT_MECHANISM,
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(files.ca_file),
    }


def mtls_settings(files: SecurityFiles, cluster: ClusterSpec) -> dict[str, str]:
    """librdkafka settings for the ``app`` certificate on the mutual-TLS listener."""
    return {
        "bootstrap.servers": cluster.mtls_bootstrap,
        "security.protocol": "SSL",
        "ssl.ca.location": str(files.ca_file),
        "ssl.certificate.location": str(files.client_certificate),
        "ssl.key.location": str(files.client_key),
    }


def broker_properties(files: SecurityFiles) -> dict[str, str]:
    """The TLS, SASL and authorizer settings of every node (listeners: `broker_config`)."""
    props = {
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(files.broker_keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(files.ca_file),
        # The nodes and MTLS clients prove who they are with a certificate; its CN is the name.
        "listener.name.controller.ssl.client.auth": "required",
        "listener.name.internal.ssl.client.auth": "required",
        "listener.name.mtls.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
        "sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
        "listener.name.client.sasl.enabled.mechanisms": ",".join(SCRAM_MECHANISMS),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{BROKER_PRINCIPAL};User:{ADMIN_USER}",
    }
    for mechanism in SCRAM_MECHANISMS:
        props[f"listener.name.client.{mechanism.lower()}.sasl.jaas.config"] = _SCRAM_LOGIN
    return props


def format_arguments(files: SecurityFiles) -> list[str]:
    """``StorageTool format`` arguments that create the SCRAM users in the first metadata."""
    args: list[str] = []
    for user, password in files.passwords().items():
        for mechanism in SCRAM_MECHANISMS:
            args += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
    return args
