"""The secured local cluster's configuration and TLS material, without a JVM.

`streamflow dev kafka start --secure` must refuse what a managed cluster refuses: SCRAM on the
client listener, mutual TLS between nodes, an authorizer that allows nothing by default. If a
port collides, a listener keeps PLAINTEXT, a key is world-readable or the broker certificate
does not name 127.0.0.1, the cluster either fails to start or silently tests nothing. These
tests check the pure parts (broker_config, security, certificates, run_dir) on tmp_path: ports
and listeners, file modes, and the certificates parsed back with `cryptography`.
"""

from __future__ import annotations

import ipaddress
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streamflow.dev import security
from streamflow.dev.broker_config import ClusterSpec, broker_properties, cluster_spec
from streamflow.dev.run_dir import RunDir, RunState
from streamflow.dev.security import SecurityFiles
from streamflow.errors import DevKafkaError

PAIRS = [(19000, 19001), (19002, 19003), (19004, 19005)]


def _secure(pairs: list[tuple[int, int]] = PAIRS) -> ClusterSpec:
    return cluster_spec(pairs, secure=True)


def test_secure_nodes_get_internal_and_mtls_ports_distinct_from_everything_else() -> None:
    spec = _secure()
    assert spec.secure
    ports: list[int] = []
    for node in spec.nodes:
        assert node.internal_port is not None and node.mtls_port is not None
        assert node.proxied_port is None and node.proxy_port is None
        ports += [node.port, node.controller_port, node.internal_port, node.mtls_port]
    assert len(set(ports)) == len(ports) == 12
    assert spec.mtls_bootstrap == ",".join(f"127.0.0.1:{n.mtls_port}" for n in spec.nodes)
    assert spec.bootstrap == "127.0.0.1:19000,127.0.0.1:19002,127.0.0.1:19004"


def test_a_plain_cluster_has_no_secured_listeners() -> None:
    spec = cluster_spec(PAIRS[:1])
    assert not spec.secure and spec.mtls_bootstrap == ""
    assert spec.nodes[0].internal_port is None and spec.nodes[0].mtls_port is None


def test_a_cluster_cannot_be_proxied_and_secured() -> None:
    with pytest.raises(DevKafkaError, match=r"proxied .* or secured"):
        cluster_spec(PAIRS[:1], proxied=True, secure=True)


def _listeners(value: str) -> dict[str, str]:
    return dict(item.split("://", 1) for item in value.split(","))


def test_secure_listeners_use_sasl_ssl_for_clients_and_tls_between_nodes() -> None:
    spec = _secure()
    for node in spec.nodes:
        props = broker_properties(spec, node, Path("/data"))
        assert _listeners(props["listeners"]) == {
            "CLIENT": f"127.0.0.1:{node.port}",
            "INTERNAL": f"127.0.0.1:{node.internal_port}",
            "MTLS": f"127.0.0.1:{node.mtls_port}",
            "CONTROLLER": f"127.0.0.1:{node.controller_port}",
        }
        assert props["advertised.listeners"] == props["listeners"]
        protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
        assert protocols == {
            "CLIENT": "SASL_SSL",
            "INTERNAL": "SSL",
            "MTLS": "SSL",
            "CONTROLLER": "SSL",
        }
        assert props["inter.broker.listener.name"] == "INTERNAL"
        assert props["controller.listener.names"] == "CONTROLLER"
        assert "PLAINTEXT" not in props["listeners"] + props["listener.security.protocol.map"]


def test_plain_listeners_are_unchanged() -> None:
    spec = cluster_spec(PAIRS[:1])
    props = broker_properties(spec, spec.nodes[0], Path("/data"))
    ctl = spec.nodes[0].controller_port
    assert props["listeners"] == f"PLAINTEXT://127.0.0.1:19000,CONTROLLER://127.0.0.1:{ctl}"
    assert props["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"


# -- the material ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[SecurityFiles, ClusterSpec]:
    files = SecurityFiles(tmp_path_factory.mktemp("run") / "security")
    cluster = _secure(PAIRS[:1])
    security.create(files, cluster)
    return files, cluster


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_is_written_and_secrets_are_owner_only(
    made: tuple[SecurityFiles, ClusterSpec],
) -> None:
    files, _ = made
    assert files.exists()
    assert _mode(files.root) == 0o700
    private = [files.broker_keystore, files.client_key, files.users_file]
    private += [files.settings_file(n) for n in ("admin", "app", "app-mtls")]
    for path in private:
        assert path.is_file(), path
        assert _mode(path) == 0o600, path
    assert files.ca_file.is_file() and files.client_certificate.is_file()
    assert b"PRIVATE KEY" not in files.ca_file.read_bytes()
    assert b"PRIVATE KEY" not in files.client_certificate.read_bytes()
    assert b"PRIVATE KEY" in files.client_key.read_bytes()
    passwords = json.loads(files.users_file.read_text())
    assert set(passwords) == {"admin", "app"} and passwords["admin"] != passwords["app"]


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_the_broker_certificate_names_loopback_and_is_signed_by_the_ca(
    made: tuple[SecurityFiles, ClusterSpec],
) -> None:
    files, _ = made
    (ca,) = x509.load_pem_x509_certificates(files.ca_file.read_bytes())
    keystore = files.broker_keystore.read_bytes()
    assert keystore.index(b"PRIVATE KEY") < keystore.index(b"CERTIFICATE")  # key first
    broker, chained_ca = x509.load_pem_x509_certificates(keystore)
    assert chained_ca == ca
    assert _cn(broker) == "streamflow-broker"
    broker.verify_directly_issued_by(ca)
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert _usages(broker) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not broker.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_the_client_certificate_is_app_and_cannot_serve(
    made: tuple[SecurityFiles, ClusterSpec],
) -> None:
    files, _ = made
    (ca,) = x509.load_pem_x509_certificates(files.ca_file.read_bytes())
    (client,) = x509.load_pem_x509_certificates(files.client_certificate.read_bytes())
    assert _cn(client) == "app"
    client.verify_directly_issued_by(ca)
    assert _usages(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_scram_and_mtls_client_settings(made: tuple[SecurityFiles, ClusterSpec]) -> None:
    files, cluster = made
    app = security.scram_settings(files, cluster, "app")
    assert app == {
        "bootstrap.servers": cluster.bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "app",
        "sasl.password": files.passwords()["app"],
        "ssl.ca.location": str(files.ca_file),
    }
    written = files.settings_file("app").read_text().splitlines()
    assert f"sasl.password={app['sasl.password']}" in written
    mtls = files.settings_file("app-mtls").read_text()
    assert f"bootstrap.servers={cluster.mtls_bootstrap}\n" in mtls
    assert "security.protocol=SSL\n" in mtls and "sasl" not in mtls
    with pytest.raises(DevKafkaError, match="no user 'nobody'"):
        security.scram_settings(files, cluster, "nobody")


def test_format_adds_every_user_for_every_mechanism(
    made: tuple[SecurityFiles, ClusterSpec],
) -> None:
    files, _ = made
    args = security.format_arguments(files)
    flags, values = args[0::2], args[1::2]
    assert set(flags) == {"--add-scram"}
    expected = {
        f"{mechanism}=[name={user},password={password}]"
        for user, password in files.passwords().items()
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
    }
    assert set(values) == expected and len(values) == 4


def test_the_broker_allows_nothing_without_an_acl_except_to_super_users(
    made: tuple[SecurityFiles, ClusterSpec],
) -> None:
    files, _ = made
    props = security.broker_properties(files)
    assert props["authorizer.class.name"].endswith(".StandardAuthorizer")
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert set(props["super.users"].split(";")) == {"User:streamflow-broker", "User:admin"}
    assert props["ssl.keystore.location"] == str(files.broker_keystore)
    assert props["ssl.truststore.location"] == str(files.ca_file)
    for listener in ("controller", "internal", "mtls"):
        assert props[f"listener.name.{listener}.ssl.client.auth"] == "required"
    for mechanism in ("scram-sha-256", "scram-sha-512"):
        assert "ScramLoginModule" in props[f"listener.name.client.{mechanism}.sasl.jaas.config"]


def test_run_dir_round_trips_a_secure_cluster(tmp_path: Path) -> None:
    spec = _secure(PAIRS[:2])
    run_dir = RunDir(tmp_path)
    run_dir.save(RunState("4.4.0", spec, {1: 111, 2: None}))
    loaded = run_dir.require()
    assert loaded.cluster == spec
    assert loaded.cluster.secure
    assert [n.mtls_port for n in loaded.cluster.nodes] == [n.mtls_port for n in spec.nodes]
    assert [n.internal_port for n in loaded.cluster.nodes] == [n.internal_port for n in spec.nodes]
    plain = cluster_spec(PAIRS[:1])
    run_dir.save(RunState("4.4.0", plain))
    assert run_dir.require().cluster == plain and not run_dir.require().cluster.secure
