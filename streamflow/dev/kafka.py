"""A local Apache Kafka cluster for development and tests: real brokers, no Docker.

`LocalKafka` formats KRaft storage and runs 1 or 3 combined broker+controller JVMs on loopback
ports, detached from the calling process, and records what it started in its run directory, so
`streamflow dev kafka start` in one shell and `pytest` or `stop` in another find the same
cluster. It reports ready only once transactions work (see `readiness`).

Size: `LocalKafka` is one object over one run directory. Its lifecycle methods (start, stop,
kill, restart) all read and save the same `RunState` (start, stop and restart under one
cross-process lock), and whether a node lives is asked of the `Popen` handles of the brokers
this object launched (`_children`, which also reaps them) before the pid in the run dir. What
needs none of that is apart already: configs (`broker_config`), commands and signals
(`broker_process`), readiness, the run dir's files, security. The status records here are the
class's answers.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streamflow.dev import broker_process, security
from streamflow.dev.broker_config import (
    HOST,
    ClusterSpec,
    NodeSpec,
    broker_properties,
    cluster_spec,
    plan_ports,
    render_properties,
    require_free_ports,
)
from streamflow.dev.jars import KAFKA_VERSION, KafkaJars
from streamflow.dev.java import find_java
from streamflow.dev.readiness import wait_for_cluster, wait_listening
from streamflow.dev.run_dir import RunDir, RunState
from streamflow.dev.tcp_proxy import ProxyGroup
from streamflow.errors import DevKafkaError

log = logging.getLogger(__name__)

DEFAULT_RUN_DIR = Path(".cache") / "kafka-run"


def default_run_dir() -> Path:
    """`$STREAMFLOW_KAFKA_DIR`, else `.cache/kafka-run` under the current directory.

    Per checkout rather than per user: `make kafka` then `make test` in one clone share a broker,
    and two clones never stop each other's.
    """
    explicit = os.environ.get("STREAMFLOW_KAFKA_DIR")
    return Path(explicit).expanduser() if explicit else DEFAULT_RUN_DIR


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    port: int
    controller_port: int
    pid: int | None
    alive: bool
    log_file: Path


@dataclass(frozen=True)
class ClusterStatus:
    run_dir: Path
    bootstrap: str | None
    """None when the run dir has never held a cluster."""
    kafka_version: str | None
    nodes: tuple[NodeStatus, ...]
    secure: bool = False

    @property
    def running(self) -> bool:
        return bool(self.nodes) and all(node.alive for node in self.nodes)


def running_dev_bootstrap() -> str | None:
    """The bootstrap of the local dev cluster (``streamflow dev kafka start``) running in the
    default run directory, if a plain one runs there: what a command given no bootstrap uses
    instead of 127.0.0.1:9092 (that cluster picks a free port). A secured one needs its
    settings file, so it is never guessed."""
    try:
        status = LocalKafka().status()
    except Exception:  # noqa: BLE001 - an unreadable run dir: no dev cluster to offer
        return None
    if status.running and not status.secure:
        return status.bootstrap
    return None


class LocalKafka:
    """One local cluster, identified by its run directory.

    `start()` creates a cluster, resumes the stopped one the directory holds (same ports, same
    data), or returns at once if it runs. `brokers` and `port` left at None accept whatever the
    run dir holds (a new cluster then gets 1 broker on a free port); given, they must match it.
    `heap` and `extra_properties` apply to brokers started by this object.
    """

    def __init__(
        self,
        run_dir: Path | str | None = None,
        *,
        brokers: int | None = None,
        port: int | None = None,
        kafka_version: str = KAFKA_VERSION,
        cache_dir: Path | str | None = None,
        heap: str | None = None,
        extra_properties: Mapping[str, str] | None = None,
        startup_timeout: float = 120.0,
        proxied: bool = False,
        secure: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir or default_run_dir()).expanduser().resolve()
        self.brokers = brokers
        self.port = port
        self.jars = KafkaJars(kafka_version, Path(cache_dir).expanduser() if cache_dir else None)
        self.heap = heap
        self.extra_properties = dict(extra_properties or {})
        self.startup_timeout = startup_timeout
        self.proxied = proxied
        """A new cluster gets ``PROXIED`` listeners for `tcp_proxy` (fault tests)."""
        self.secure = secure
        """A new cluster gets TLS, SCRAM users and an authorizer (`dev.security`)."""
        self._dir = RunDir(self.run_dir)
        # Brokers this process launched: polling them also reaps them (no zombies in pytest).
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._java_and_classpath: tuple[str, str] | None = None

    # ------------------------------------------------------------------------------ queries

    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:port[,…]` of the cluster this run dir holds (running or not)."""
        return self._dir.require().cluster.bootstrap

    def proxies(self) -> ProxyGroup:
        """Start a proxy in front of each node's ``PROXIED`` listener (a ``proxied`` cluster);
        clients given ``proxied_bootstrap`` then reach the cluster only through them."""
        routes = self._dir.require().cluster.proxy_routes()
        if not routes:
            raise DevKafkaError(f"the cluster in {self.run_dir} was not started with proxied=True")
        return ProxyGroup(routes)

    @property
    def proxied_bootstrap(self) -> str:
        return self._dir.require().cluster.proxied_bootstrap

    @property
    def security_files(self) -> security.SecurityFiles:
        return security.SecurityFiles(self._dir.security_dir)

    def client_settings(self, user: str = security.ADMIN_USER) -> dict[str, str]:
        """librdkafka settings that reach this cluster as ``user``, ``bootstrap.servers``
        included: nothing but the bootstrap for a plain cluster; SASL_SSL with SCRAM for a
        secured one (``admin`` is a super user, ``app`` needs ACLs)."""
        cluster = self._dir.require().cluster
        if not cluster.secure:
            return {"bootstrap.servers": cluster.bootstrap}
        return security.scram_settings(self.security_files, cluster, user)

    def mtls_settings(self) -> dict[str, str]:
        """librdkafka settings for the ``app`` client certificate (secured clusters only)."""
        cluster = self._dir.require().cluster
        if not cluster.secure:
            raise DevKafkaError(f"the cluster in {self.run_dir} is not secured (--secure)")
        return security.mtls_settings(self.security_files, cluster)

    def is_running(self) -> bool:
        """Every node of the cluster in the run dir is alive."""
        return self.status().running

    def status(self) -> ClusterStatus:
        state = self._dir.load()
        if state is None:
            return ClusterStatus(self.run_dir, None, None, ())
        nodes = tuple(
            NodeStatus(
                node_id=node.node_id,
                port=node.port,
                controller_port=node.controller_port,
                pid=state.pids.get(node.node_id),
                alive=self._alive(node.node_id, state.pids.get(node.node_id)),
                log_file=self.log_file(node.node_id),
            )
            for node in state.cluster.nodes
        )
        return ClusterStatus(
            self.run_dir, state.cluster.bootstrap, state.kafka_version, nodes, state.cluster.secure
        )

    def log_file(self, node_id: int = 1) -> Path:
        return self._dir.node(node_id).log_file

    # ---------------------------------------------------------------------------- lifecycle

    def start(self, *, clean: bool = False) -> str:
        """Start the cluster (or find it running) and return its bootstrap address once a
        transactional producer can initialise on it. `clean` discards earlier data first."""
        with self._lock():
            state = self._dir.load()
            alive = self._alive_nodes(state)
            if state is not None and alive and not clean:
                self._check_matches(state.cluster, "is running")
                dead = [n for n in state.cluster.nodes if n.node_id not in alive]
                if not dead:
                    log.info("local Kafka already running at %s", state.cluster.bootstrap)
                    return state.cluster.bootstrap
                # Part of a multi-node cluster died: bring the missing nodes back.
                return self._launch_and_wait(state, dead)
            if alive:
                self._stop_locked(timeout=30.0)
            if state is not None and not clean:
                self._check_matches(state.cluster, "holds a stopped cluster")
                require_free_ports(
                    [p for n in state.cluster.nodes for p in (n.port, n.controller_port)]
                )
            else:
                self._dir.wipe()
                cluster = cluster_spec(
                    plan_ports(self.brokers or 1, self.port),
                    extra_properties=self.extra_properties,
                    proxied=self.proxied,
                    secure=self.secure,
                )
                state = RunState(self.jars.version, cluster)
            self._prepare(state)
            return self._launch_and_wait(state, list(state.cluster.nodes))

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node (a clean shutdown), SIGKILL what is left after `timeout` seconds.
        Data stays, so the next `start` resumes the same cluster."""
        if not self.run_dir.exists():
            return
        with self._lock():
            self._stop_locked(timeout)

    def kill_broker(self, node_id: int) -> None:
        """SIGKILL one node, as a crashed machine dies (for failure tests)."""
        self._signal_and_wait(node_id, signal.SIGKILL, timeout=10.0)

    def stop_broker(self, node_id: int, timeout: float = 30.0) -> None:
        """SIGTERM one node and wait for it to exit (SIGKILL after `timeout` seconds)."""
        if not self._signal_and_wait(node_id, signal.SIGTERM, timeout):
            self._signal_and_wait(node_id, signal.SIGKILL, timeout=10.0)

    def restart_broker(self, node_id: int) -> None:
        """Start a stopped or killed node again with its ports and data; return once the cluster
        has it back as a broker and transactions work."""
        with self._lock():
            state = self._dir.require()
            node = state.cluster.node(node_id)
            if self._alive(node_id, state.pids.get(node_id)):
                raise DevKafkaError(
                    f"node {node_id} of {self.run_dir} is still running; stop or kill it first"
                )
            require_free_ports([node.port, node.controller_port])
            self._launch_and_wait(state, [node])

    # ---------------------------------------------------------------------------- internals

    def _runtime(self) -> tuple[str, str]:
        if self._java_and_classpath is None:
            java = find_java()  # first: a missing JVM should not cost a download to discover
            self.jars.ensure()
            self._java_and_classpath = (str(java.executable), self.jars.classpath())
        return self._java_and_classpath

    def _heap(self, cluster: ClusterSpec) -> str:
        # One broker gets the most; three share 2 cores with the tests that torture them.
        return self.heap or ("768m" if len(cluster.nodes) == 1 else "512m")

    def _check_matches(self, cluster: ClusterSpec, what: str) -> None:
        same_size = self.brokers is None or len(cluster.nodes) == self.brokers
        same_port = self.port is None or cluster.nodes[0].port == self.port
        if self.secure and not cluster.secure:
            raise DevKafkaError(
                f"{self.run_dir} {what} without security; start again with --secure --clean, "
                "or use another --dir"
            )
        if same_size and same_port:
            return
        asked = f"{self.brokers or len(cluster.nodes)} broker(s)" + (
            f" on port {self.port}" if self.port else ""
        )
        raise DevKafkaError(
            f"{self.run_dir} {what} with {len(cluster.nodes)} broker(s) at {cluster.bootstrap}, "
            f"not the {asked} asked for. Stop it and start again with --clean, or use another "
            "--dir."
        )

    def _prepare(self, state: RunState) -> None:
        """Write each node's config; format the storage of nodes that have none yet."""
        java, classpath = self._runtime()
        log4j = resources.files("streamflow.dev").joinpath("log4j2.xml").read_text()
        formats = []
        files = self.security_files
        secured: dict[str, str] = {}
        scram_users: list[str] = []
        if state.cluster.secure:
            if not files.exists():
                security.create(files, state.cluster)
            security.write_settings_files(files, state.cluster)
            secured = security.broker_properties(files)
            scram_users = security.format_arguments(files)
        for node in state.cluster.nodes:
            paths = self._dir.node(node.node_id)
            paths.logs_dir.mkdir(parents=True, exist_ok=True)
            paths.data_dir.mkdir(parents=True, exist_ok=True)
            paths.log4j_file.write_text(log4j)
            props = broker_properties(state.cluster, node, paths.data_dir)
            props.update(secured)
            paths.properties_file.write_text(render_properties(props))
            if not paths.is_formatted():
                command = broker_process.format_command(
                    java, classpath, state.cluster, paths, scram_users
                )
                formats.append((node, paths, command))
        broker_process.run_formats(formats)
        self._dir.save(state)

    def _launch_and_wait(self, state: RunState, nodes: list[NodeSpec]) -> str:
        java, classpath = self._runtime()
        pids: dict[int, int | None] = {}
        for node in nodes:
            paths = self._dir.node(node.node_id)
            heap = self._heap(state.cluster)
            command = broker_process.broker_command(java, classpath, heap, self.run_dir, paths)
            proc = broker_process.launch(command, paths)
            self._children[node.node_id] = proc
            pids[node.node_id] = proc.pid
            log.info(
                "started Kafka node %d (pid %d) on %s:%d, log %s",
                node.node_id,
                proc.pid,
                HOST,
                node.port,
                paths.log_file,
            )
        self._dir.save(state.with_pids(pids))

        deadline = time.monotonic() + self.startup_timeout

        def check() -> None:
            self._check_started(nodes)

        try:
            for node in state.cluster.nodes:
                if not wait_listening(node.port, deadline, check):
                    raise DevKafkaError(
                        f"Kafka node {node.node_id} did not listen on {HOST}:{node.port} within "
                        f"{self.startup_timeout:.0f} s. "
                        + broker_process.log_tail(self._dir.node(node.node_id))
                    )
            admin = (
                security.scram_settings(self.security_files, state.cluster, security.ADMIN_USER)
                if state.cluster.secure
                else {}
            )
            wait_for_cluster(state.cluster, deadline, check, admin)
        except BaseException:
            # Never leave a half-started broker behind (also on Ctrl-C).
            for node in nodes:
                self._signal_and_wait(node.node_id, signal.SIGKILL, timeout=10.0)
            raise
        log.info("local Kafka ready at %s", state.cluster.bootstrap)
        return state.cluster.bootstrap

    def _check_started(self, nodes: list[NodeSpec]) -> None:
        """Raise with the log's tail if a node launched by this process has exited."""
        for node in nodes:
            proc = self._children.get(node.node_id)
            if proc is None or proc.poll() is None:
                continue
            paths = self._dir.node(node.node_id)
            tail = broker_process.log_tail(paths)
            if "Address already in use" in tail:
                raise DevKafkaError(
                    f"Kafka node {node.node_id} could not bind {HOST}:{node.port} or "
                    f"{HOST}:{node.controller_port}: address already in use. Another process took "
                    f"the port; start again with --clean to pick new free ports.\n{tail}"
                )
            raise DevKafkaError(
                f"Kafka node {node.node_id} exited with status {proc.returncode} while starting. "
                f"The end of its logs:\n{tail}"
            )

    def _alive_nodes(self, state: RunState | None) -> set[int]:
        if state is None:
            return set()
        return {n for n, pid in state.pids.items() if self._alive(n, pid)}

    def _stop_locked(self, timeout: float) -> None:
        state = self._dir.load()
        if state is None:
            return
        alive = {n: pid for n, pid in state.pids.items() if pid is not None and self._alive(n, pid)}
        for pid in alive.values():
            broker_process.send_signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = {n: pid for n, pid in alive.items() if self._alive(n, pid)}
        for node_id, pid in alive.items():
            log.warning("Kafka node %d ignored SIGTERM for %.0f s; killing it", node_id, timeout)
            broker_process.send_signal(pid, signal.SIGKILL)
            self._wait_dead(node_id, pid, 10.0)
        self._dir.save(state.with_pids({n: None for n in state.pids}))
        if state.pids and any(state.pids.values()):
            log.info("local Kafka in %s stopped", self.run_dir)

    def _signal_and_wait(self, node_id: int, signum: signal.Signals, timeout: float) -> bool:
        state = self._dir.require()
        state.cluster.node(node_id)  # a clear error for an unknown node id
        pid = state.pids.get(node_id)
        if pid is not None and self._alive(node_id, pid):
            broker_process.send_signal(pid, signum)
            if not self._wait_dead(node_id, pid, timeout):
                return False
        self._dir.save(state.with_pids({node_id: None}))
        return True

    def _wait_dead(self, node_id: int, pid: int | None, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._alive(node_id, pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _alive(self, node_id: int, pid: int | None) -> bool:
        if pid is None:
            return False
        child = self._children.get(node_id)
        if child is not None and child.pid == pid:
            return child.poll() is None
        return broker_process.is_our_broker(pid, self.run_dir)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise start/stop/restart of one run dir across processes (make, pytest, a shell)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self._dir.lock_file, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
