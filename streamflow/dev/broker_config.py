"""What a local development cluster looks like: node ids, loopback ports and `server.properties`.

Pure functions only (no processes, no files), so the settings that make transactions work on one
node are unit-tested without a JVM.
"""

from __future__ import annotations

import base64
import errno
import socket
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from streamflow.errors import DevKafkaError

HOST = "127.0.0.1"

# Small internal-topic partition counts: the broker creates them on first use, and 50 partitions
# (the default for __consumer_offsets) cost seconds on every fresh test broker.
_INTERNAL_TOPIC_PARTITIONS = 4


@dataclass(frozen=True)
class NodeSpec:
    """One combined broker+controller process of the local cluster."""

    node_id: int
    port: int
    """Client listener (PLAINTEXT; SASL_SSL when secured): what goes into the bootstrap."""
    controller_port: int
    directory_id: str
    """KRaft metadata directory id, needed by `format --initial-controllers` (several nodes)."""
    proxied_port: int | None = None
    """A second client listener (``PROXIED``) for clients that go through a proxy: fault tests."""
    proxy_port: int | None = None
    """What ``PROXIED`` advertises: where the proxy in front of ``proxied_port`` listens. A
    client that bootstraps there gets these ports in metadata, so all its traffic stays on the
    proxies and a test can cut it off without touching the brokers."""
    internal_port: int | None = None
    """Secured clusters only: the brokers' own listener (``INTERNAL``, mutual TLS), so that the
    client listener can require SCRAM from everyone else."""
    mtls_port: int | None = None
    """Secured clusters only: a client listener (``MTLS``) that authenticates by certificate."""

    @property
    def controller_endpoint(self) -> str:
        return f"{HOST}:{self.controller_port}"


@dataclass(frozen=True)
class ClusterSpec:
    """Every node of the cluster plus the settings that are the same on all of them."""

    cluster_id: str
    nodes: tuple[NodeSpec, ...]
    extra_properties: Mapping[str, str] = field(default_factory=dict)
    secure: bool = False
    """TLS everywhere, SCRAM on the client listener, an authorizer (see `dev.security`)."""

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    @property
    def mtls_bootstrap(self) -> str:
        """The bootstrap address of the certificate-authenticated listener (secured only)."""
        return ",".join(f"{HOST}:{node.mtls_port}" for node in self.nodes if node.mtls_port)

    @property
    def proxied_bootstrap(self) -> str:
        """The bootstrap address through the proxies (empty when the cluster has none)."""
        return ",".join(f"{HOST}:{node.proxy_port}" for node in self.nodes if node.proxy_port)

    def proxy_routes(self) -> list[tuple[int, int]]:
        """(proxy port, ``PROXIED`` listener port) per node: what each proxy forwards."""
        return [
            (n.proxy_port, n.proxied_port)
            for n in self.nodes
            if n.proxy_port is not None and n.proxied_port is not None
        ]

    def node(self, node_id: int) -> NodeSpec:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        known = ", ".join(str(n.node_id) for n in self.nodes)
        raise DevKafkaError(f"the local cluster has no node {node_id} (its nodes are {known})")

    def initial_controllers(self) -> str:
        """The `--initial-controllers` argument of `StorageTool format` for a multi-node quorum."""
        return ",".join(f"{n.node_id}@{n.controller_endpoint}:{n.directory_id}" for n in self.nodes)


def random_kafka_uuid() -> str:
    """A Kafka `Uuid` in its base64 form, as `StorageTool random-uuid` prints it (no JVM needed)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        # Kafka refuses ids that start with '-' (they look like a command-line flag).
        if not text.startswith("-"):
            return text


def cluster_spec(
    ports: Iterable[tuple[int, int]],
    *,
    cluster_id: str | None = None,
    extra_properties: Mapping[str, str] | None = None,
    proxied: bool = False,
    secure: bool = False,
) -> ClusterSpec:
    """A cluster with one node per (client port, controller port) pair, node ids 1..N;
    ``proxied`` gives each node a ``PROXIED`` listener and a port for a proxy in front of it;
    ``secure`` gives each an ``INTERNAL`` and an ``MTLS`` listener as well."""
    pairs = list(ports)
    if proxied and secure:
        raise DevKafkaError("a local cluster is either proxied (fault tests) or secured, not both")
    taken = {port for pair in pairs for port in pair}
    extra: list[int] = []
    while (proxied or secure) and len(extra) < 2 * len(pairs):
        # The planned ports are free again by now: never hand one of them out twice.
        extra = [p for p in allocate_ports(2 * len(pairs)) if p not in taken][: 2 * len(pairs)]
    nodes = tuple(
        NodeSpec(
            node_id=i,
            port=port,
            controller_port=ctl,
            directory_id=random_kafka_uuid(),
            proxied_port=extra[2 * i - 2] if proxied else None,
            proxy_port=extra[2 * i - 1] if proxied else None,
            internal_port=extra[2 * i - 2] if secure else None,
            mtls_port=extra[2 * i - 1] if secure else None,
        )
        for i, (port, ctl) in enumerate(pairs, start=1)
    )
    if not nodes:
        raise DevKafkaError("a local Kafka cluster needs at least one node")
    return ClusterSpec(
        cluster_id=cluster_id or random_kafka_uuid(),
        nodes=nodes,
        extra_properties=dict(extra_properties or {}),
        secure=secure,
    )


def broker_properties(cluster: ClusterSpec, node: NodeSpec, data_dir: Path) -> dict[str, str]:
    """`server.properties` of one node, as an ordered dict.

    Replication settings follow the cluster size: one node must not ask for three replicas of
    `__transaction_state` (the broker's default), or `init_transactions()` never completes; three
    nodes get RF 3 with min ISR 2 so that failure tests see what production sees.
    """
    size = len(cluster.nodes)
    replication = min(size, 3)
    min_isr = 1 if size == 1 else 2
    listeners = f"PLAINTEXT://{HOST}:{node.port},CONTROLLER://{node.controller_endpoint}"
    advertised = listeners
    protocols = "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    if node.proxied_port is not None and node.proxy_port is not None:
        listeners += f",PROXIED://{HOST}:{node.proxied_port}"
        advertised += f",PROXIED://{HOST}:{node.proxy_port}"
        protocols += ",PROXIED:PLAINTEXT"
    inter_broker = "PLAINTEXT"
    if cluster.secure:
        # What each listener is for is in `dev.security`, which adds the TLS/SASL settings.
        listeners = (
            f"CLIENT://{HOST}:{node.port},INTERNAL://{HOST}:{node.internal_port},"
            f"MTLS://{HOST}:{node.mtls_port},CONTROLLER://{node.controller_endpoint}"
        )
        advertised = listeners
        protocols = "CLIENT:SASL_SSL,INTERNAL:SSL,MTLS:SSL,CONTROLLER:SSL"
        inter_broker = "INTERNAL"
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.bootstrap.servers": ",".join(
            n.controller_endpoint for n in cluster.nodes
        ),
        "listeners": listeners,
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": inter_broker,
        "listener.security.protocol.map": protocols,
        "log.dirs": str(data_dir.resolve()),
        "num.partitions": "1",
        "default.replication.factor": str(replication),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replication),
        "offsets.topic.num.partitions": str(_INTERNAL_TOPIC_PARTITIONS),
        "transaction.state.log.replication.factor": str(replication),
        "transaction.state.log.min.isr": str(min_isr),
        "transaction.state.log.num.partitions": str(_INTERNAL_TOPIC_PARTITIONS),
        "share.coordinator.state.topic.replication.factor": str(replication),
        "share.coordinator.state.topic.min.isr": str(min_isr),
        "share.coordinator.state.topic.num.partitions": str(_INTERNAL_TOPIC_PARTITIONS),
        # Tests start consumer groups constantly; the 3 s default delay is pure waiting.
        "group.initial.rebalance.delay.ms": "0",
        # Groups on the new protocol (KIP-848) take their session timeout from the broker: the
        # same 10 s the classic groups of streamflow ask for, not the 45 s default.
        "group.consumer.min.session.timeout.ms": "6000",
        "group.consumer.session.timeout.ms": "10000",
        "group.consumer.min.heartbeat.interval.ms": "1000",  # the broker refuses below the min
        "group.consumer.heartbeat.interval.ms": "2000",
        # The engine creates every topic it uses explicitly; a typo must fail, not create a topic.
        "auto.create.topics.enable": "false",
        "delete.topic.enable": "true",
    }
    props.update(cluster.extra_properties)
    return props


def render_properties(props: Mapping[str, str]) -> str:
    """Java properties text; a backslash is the one special character our values can hold."""
    lines = ["# Written by `streamflow dev kafka`; regenerated on every start."]
    lines += [f"{key}={value.replace(chr(92), chr(92) * 2)}" for key, value in props.items()]
    return "\n".join(lines) + "\n"


def parse_property_overrides(items: Iterable[str]) -> dict[str, str]:
    """`key=value` strings from the command line into a dict, with a clear error for typos."""
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DevKafkaError(f"broker property override {item!r} is not of the form key=value")
        result[key.strip()] = value.strip()
    return result


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if a server could listen on host:port now.

    SO_REUSEADDR as the JVM sets it, so a port in TIME_WAIT from a stopped broker counts as free
    and only a real listener makes it busy.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def require_free_ports(ports: Iterable[int]) -> None:
    """Raise a DevKafkaError naming every requested port that something already listens on."""
    busy = [port for port in ports if not port_is_free(port)]
    if busy:
        names = ", ".join(f"{HOST}:{port}" for port in busy)
        raise DevKafkaError(
            f"cannot start the local Kafka broker: {names} already in use. Stop whatever listens "
            "there (`streamflow dev kafka status` shows a broker of ours), pick another --port, "
            "or omit --port to use a free one."
        )


def allocate_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports, chosen by the kernel.

    All sockets stay bound until every port is picked so the same port cannot come back twice.
    (Another process can still take one before the broker binds it; the launcher reports that
    as a port-in-use error from the broker log.)
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def plan_ports(brokers: int, port: int | None) -> list[tuple[int, int]]:
    """(client port, controller port) per node.

    With `port`, clients get port, port+1, …, so a user can write the bootstrap down in advance;
    controller ports are always free ones (no client ever needs them). Requested ports are
    checked here, before any JVM starts, so the error names them.
    """
    if brokers < 1:
        raise DevKafkaError(f"--brokers must be at least 1, got {brokers}")
    if port is None:
        free = allocate_ports(2 * brokers)
        return [(free[2 * i], free[2 * i + 1]) for i in range(brokers)]
    client_ports = [port + i for i in range(brokers)]
    if client_ports[-1] > 65535 or port < 1:
        raise DevKafkaError(
            f"--port {port} leaves no room for {brokers} broker port(s) below 65536"
        )
    require_free_ports(client_ports)
    controller_ports = [p for p in allocate_ports(2 * brokers) if p not in client_ports][:brokers]
    return list(zip(client_ports, controller_ports, strict=True))
