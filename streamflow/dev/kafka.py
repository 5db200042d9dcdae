"""A local Apache Kafka cluster for development and tests: real brokers, no Docker.

`LocalKafka` formats KRaft storage and runs 1 or 3 combined broker+controller JVMs on loopback
ports, detached from the calling process (their own session), and records what it started in
`<run dir>/state.json`, so `streamflow dev kafka start` in one shell and `pytest` or `stop` in
another find the same cluster. It reports "ready" only once a transactional producer can
`init_transactions()`: a broker that answers metadata requests but has no transaction coordinator
yet would make the first exactly-once test flaky.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

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
from streamflow.errors import DevKafkaError

log = logging.getLogger(__name__)

DEFAULT_RUN_DIR = Path(".cache") / "kafka-run"
_STATE_FILE = "state.json"
_STATE_FORMAT = 1
_LOG_TAIL_LINES = 30
# Marks our JVMs on their command line, so a recycled pid is never mistaken for a broker.
_MARKER_PROPERTY = "streamflow.dev.kafka.run"


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
    nodes: tuple[NodeStatus, ...]
    kafka_version: str | None

    @property
    def running(self) -> bool:
        return bool(self.nodes) and all(node.alive for node in self.nodes)


class LocalKafka:
    """One local cluster, identified by its run directory.

    `LocalKafka(run_dir).start()` starts a new cluster or the stopped one the directory holds
    (same ports, same data); on a running one it just returns the bootstrap address.
    """

    def __init__(
        self,
        run_dir: Path | str | None = None,
        *,
        brokers: int = 1,
        port: int | None = None,
        kafka_version: str = KAFKA_VERSION,
        cache_dir: Path | str | None = None,
        heap: str | None = None,
        extra_properties: Mapping[str, str] | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self.run_dir = Path(run_dir).expanduser().resolve() if run_dir else default_run_dir().resolve()
        self.brokers = brokers
        self.port = port
        self.jars = KafkaJars(kafka_version, Path(cache_dir).expanduser() if cache_dir else None)
        # One broker gets the most; three share the machine with the tests that torture them.
        self.heap = heap or ("768m" if brokers == 1 else "512m")
        self.extra_properties = dict(extra_properties or {})
        self.startup_timeout = startup_timeout
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    # ----------------------------------------------------------------------------- public API

    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:port[,…]` of the cluster this run dir holds (running or not)."""
        spec = self._load_spec()
        if spec is None:
            raise DevKafkaError(f"no local Kafka cluster in {self.run_dir}; start one first")
        return spec.bootstrap

    def is_running(self) -> bool:
        return self.status().running

    def status(self) -> ClusterStatus:
        state = self._load_state()
        if state is None:
            return ClusterStatus(self.run_dir, None, (), None)
        spec = _spec_from_state(state)
        pids = _pids_from_state(state)
        nodes = tuple(
            NodeStatus(
                node_id=node.node_id,
                port=node.port,
                controller_port=node.controller_port,
                pid=pids.get(node.node_id),
                alive=self._alive(node.node_id, pids.get(node.node_id)),
                log_file=self.log_file(node.node_id),
            )
            for node in spec.nodes
        )
        return ClusterStatus(self.run_dir, spec.bootstrap, nodes, state.get("kafka_version"))

    def log_file(self, node_id: int = 1) -> Path:
        return self._node_dir(node_id) / "logs" / "server.log"

    def start(self, *, clean: bool = False) -> str:
        """Start (or find running) the cluster and return its bootstrap address once a
        transactional producer can initialise on it. `clean` discards a stopped cluster's data."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            status = self.status()
            if status.running and not clean:
                self._check_matches(_spec_from_state(self._require_state()), reusing_running=True)
                log.info("local Kafka already running at %s", status.bootstrap)
                return status.bootstrap or ""
            if any(node.alive for node in status.nodes):
                if clean:
                    self._stop_locked(timeout=30.0)
                else:
                    # Part of a multi-node cluster died: bring the missing nodes back.
                    spec = _spec_from_state(self._require_state())
                    java, classpath = self._runtime()
                    dead = [n for n in spec.nodes if not self._alive(n.node_id, _pid(self, n.node_id))]
                    self._launch(spec, dead, java, classpath)
                    return self._wait_ready(spec, dead)
            java, classpath = self._runtime()
            spec = None if clean else self._load_spec()
            if spec is not None:
                self._check_matches(spec, reusing_running=False)
                require_free_ports([p for n in spec.nodes for p in (n.port, n.controller_port)])
            else:
                self._wipe()
                spec = cluster_spec(
                    plan_ports(self.brokers, self.port), extra_properties=self.extra_properties
                )
            self._prepare(spec, java, classpath)
            self._launch(spec, list(spec.nodes), java, classpath)
            return self._wait_ready(spec, list(spec.nodes))

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node (a clean shutdown), SIGKILL what is left after `timeout` seconds.
        Data stays, so the next `start` resumes the same cluster."""
        if not self.run_dir.exists():
            return
        with self._lock():
            self._stop_locked(timeout)

    def kill_broker(self, node_id: int) -> None:
        """SIGKILL one node, as a crashed machine would die (for failure tests)."""
        self._signal_and_wait(node_id, signal.SIGKILL, timeout=10.0)

    def stop_broker(self, node_id: int, timeout: float = 30.0) -> None:
        """SIGTERM one node and wait for it to exit (SIGKILL after `timeout`)."""
        if not self._signal_and_wait(node_id, signal.SIGTERM, timeout):
            self._signal_and_wait(node_id, signal.SIGKILL, timeout=10.0)

    def restart_broker(self, node_id: int) -> None:
        """Start a stopped or killed node again with its ports and data; return once the whole
        cluster has it back and transactions work."""
        with self._lock():
            spec = _spec_from_state(self._require_state())
            node = spec.node(node_id)
            if self._alive(node_id, _pid(self, node_id)):
                raise DevKafkaError(f"node {node_id} of {self.run_dir} is still running; stop it first")
            require_free_ports([node.port, node.controller_port])
            java, classpath = self._runtime()
            self._launch(spec, [node], java, classpath)
            self._wait_ready(spec, [node])

    # ------------------------------------------------------------------------------ internals

    def _runtime(self) -> tuple[str, str]:
        java = find_java()  # first: a missing JVM should not cost a download to discover
        self.jars.ensure()
        return str(java.executable), self.jars.classpath()

    def _node_dir(self, node_id: int) -> Path:
        return self.run_dir / f"node-{node_id}"

    def _check_matches(self, spec: ClusterSpec, *, reusing_running: bool) -> None:
        wanted_port = self.port is None or spec.nodes[0].port == self.port
        if len(spec.nodes) == self.brokers and wanted_port:
            return
        what = "is running" if reusing_running else "holds a stopped cluster"
        raise DevKafkaError(
            f"{self.run_dir} {what} with {len(spec.nodes)} broker(s) at {spec.bootstrap}, not the "
            f"{self.brokers} broker(s)"
            + (f" on port {self.port}" if self.port is not None else "")
            + " asked for. Stop it and start again with --clean, or use another --dir."
        )

    def _wipe(self) -> None:
        for child in self.run_dir.glob("node-*"):
            shutil.rmtree(child, ignore_errors=True)
        (self.run_dir / _STATE_FILE).unlink(missing_ok=True)

    def _prepare(self, spec: ClusterSpec, java: str, classpath: str) -> None:
        """Write each node's config and format its storage unless it already holds a log."""
        log4j = resources.files("streamflow.dev").joinpath("log4j2.xml").read_text()
        formats: list[tuple[NodeSpec, subprocess.Popen[str]]] = []
        for node in spec.nodes:
            node_dir = self._node_dir(node.node_id)
            data_dir = node_dir / "data"
            (node_dir / "logs").mkdir(parents=True, exist_ok=True)
            data_dir.mkdir(parents=True, exist_ok=True)
            (node_dir / "log4j2.xml").write_text(log4j)
            props = broker_properties(spec, node, data_dir)
            (node_dir / "server.properties").write_text(render_properties(props))
            if (data_dir / "meta.properties").exists():
                continue
            quorum = (
                ["--standalone"]
                if len(spec.nodes) == 1
                else ["--initial-controllers", spec.initial_controllers()]
            )
            command = [
                java,
                "-Xmx256m",
                "-XX:TieredStopAtLevel=1",  # a short-lived tool: skip the optimising JIT
                *self._log_flags(node.node_id),
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                spec.cluster_id,
                "-c",
                str(node_dir / "server.properties"),
                "-g",
                *quorum,
            ]
            # Formatting costs a JVM start per node: run them side by side.
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            formats.append((node, proc))
        for node, proc in formats:
            output, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise DevKafkaError(
                    f"formatting the KRaft storage of node {node.node_id} in "
                    f"{self._node_dir(node.node_id)} failed (exit {proc.returncode}):\n"
                    f"{_tail_text(output)}\nStart again with --clean to begin from empty storage."
                )
        self._save_state(spec, pids={})

    def _log_flags(self, node_id: int) -> list[str]:
        node_dir = self._node_dir(node_id)
        return [
            f"-Dkafka.logs.dir={node_dir / 'logs'}",
            f"-Dlog4j2.configurationFile={node_dir / 'log4j2.xml'}",
        ]

    def _launch(self, spec: ClusterSpec, nodes: list[NodeSpec], java: str, classpath: str) -> None:
        pids = _pids_from_state(self._require_state())
        for node in nodes:
            node_dir = self._node_dir(node.node_id)
            command = [
                java,
                f"-Xms{min(256, _megabytes(self.heap))}m",
                f"-Xmx{self.heap}",
                # Kafka's own launch-script GC settings.
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:InitiatingHeapOccupancyPercent=35",
                "-XX:+ExplicitGCInvokesConcurrent",
                "-Djava.awt.headless=true",
                f"-D{_MARKER_PROPERTY}={self.run_dir}",
                *self._log_flags(node.node_id),
                "-cp",
                classpath,
                "kafka.Kafka",
                str(node_dir / "server.properties"),
            ]
            with open(node_dir / "logs" / "stdout.log", "ab") as stdout:
                # Own session: Ctrl-C in the shell that ran `start`, or make's process group
                # ending, must not take the broker down with it.
                proc = subprocess.Popen(
                    command,
                    cwd=node_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            self._children[node.node_id] = proc
            pids[node.node_id] = proc.pid
            (node_dir / "kafka.pid").write_text(f"{proc.pid}\n")
            log.info(
                "started Kafka node %d (pid %d) on %s:%d, log %s",
                node.node_id, proc.pid, HOST, node.port, self.log_file(node.node_id),
            )
        self._save_state(spec, pids)

    def _wait_ready(self, spec: ClusterSpec, started: list[NodeSpec]) -> str:
        """Block until every node is a registered broker and transactions work, or raise with the
        log of the node that died."""
        deadline = time.monotonic() + self.startup_timeout
        try:
            for node in spec.nodes:
                self._wait_listening(node, started, deadline)
            _wait_for_cluster(spec, deadline, lambda: self._check_started(started))
        except DevKafkaError:
            for node in started:
                self._signal_and_wait(node.node_id, signal.SIGKILL, timeout=10.0)
            raise
        log.info("local Kafka ready at %s", spec.bootstrap)
        return spec.bootstrap

    def _wait_listening(self, node: NodeSpec, started: list[NodeSpec], deadline: float) -> None:
        while True:
            self._check_started(started)
            try:
                with socket.create_connection((HOST, node.port), timeout=1.0):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise DevKafkaError(
                    f"Kafka node {node.node_id} did not listen on {HOST}:{node.port} within "
                    f"{self.startup_timeout:.0f} s. Its log ends with:\n"
                    f"{self._log_tail(node.node_id)}"
                )
            time.sleep(0.1)

    def _check_started(self, started: list[NodeSpec]) -> None:
        for node in started:
            proc = self._children.get(node.node_id)
            if proc is None or proc.poll() is None:
                continue
            tail = self._log_tail(node.node_id)
            if "Address already in use" in tail:
                raise DevKafkaError(
                    f"Kafka node {node.node_id} could not bind {HOST}:{node.port} or "
                    f"{HOST}:{node.controller_port}: address already in use. Another process took "
                    "the port; start again (with --clean to pick new free ports). Log tail:\n" + tail
                )
            raise DevKafkaError(
                f"Kafka node {node.node_id} exited with status {proc.returncode} while starting. "
                f"The last lines of {self.log_file(node.node_id)}:\n{tail}"
            )

    def _log_tail(self, node_id: int) -> str:
        logs = self._node_dir(node_id) / "logs"
        parts = []
        for name in ("server.log", "stdout.log"):
            path = logs / name
            if path.exists() and path.stat().st_size:
                parts.append(f"--- {path}\n" + _tail_text(path.read_text(errors="replace")))
        return "\n".join(parts) or "(the broker wrote no log)"

    def _stop_locked(self, timeout: float) -> None:
        state = self._load_state()
        if state is None:
            return
        pids = _pids_from_state(state)
        alive = {n: p for n, p in pids.items() if p is not None and self._alive(n, p)}
        for pid in alive.values():
            _send(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive and time.monotonic() < deadline:
            alive = {n: p for n, p in alive.items() if self._alive(n, p)}
            time.sleep(0.1)
        for node_id, pid in alive.items():
            log.warning("Kafka node %d (pid %d) ignored SIGTERM for %.0f s; killing it", node_id, pid, timeout)
            _send(pid, signal.SIGKILL)
        for node_id, pid in alive.items():
            self._wait_dead(node_id, pid, 10.0)
        self._save_state(_spec_from_state(state), pids={})
        log.info("local Kafka in %s stopped", self.run_dir)

    def _signal_and_wait(self, node_id: int, signum: signal.Signals, timeout: float) -> bool:
        state = self._require_state()
        spec = _spec_from_state(state)
        spec.node(node_id)  # a clear error for an unknown node
        pids = _pids_from_state(state)
        pid = pids.get(node_id)
        if pid is None or not self._alive(node_id, pid):
            return True
        _send(pid, signum)
        if not self._wait_dead(node_id, pid, timeout):
            return False
        pids[node_id] = None
        self._save_state(spec, pids)
        return True

    def _wait_dead(self, node_id: int, pid: int, timeout: float) -> bool:
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
            return child.poll() is None  # also reaps it, so it does not linger as a zombie
        return _is_our_broker(pid, str(self.run_dir))

    # --------------------------------------------------------------------------- state file

    def _load_state(self) -> dict[str, object] | None:
        path = self.run_dir / _STATE_FILE
        try:
            state = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DevKafkaError(
                f"{path} is unreadable ({exc}); stop any broker listed by `ps` and start with --clean"
            ) from exc
        if state.get("format") != _STATE_FORMAT:
            raise DevKafkaError(f"{path} was written by another streamflow version; start with --clean")
        return dict(state)

    def _require_state(self) -> dict[str, object]:
        state = self._load_state()
        if state is None:
            raise DevKafkaError(f"no local Kafka cluster in {self.run_dir}; start one first")
        return state

    def _load_spec(self) -> ClusterSpec | None:
        state = self._load_state()
        return None if state is None else _spec_from_state(state)

    def _save_state(self, spec: ClusterSpec, pids: Mapping[int, int | None]) -> None:
        state = {
            "format": _STATE_FORMAT,
            "kafka_version": self.jars.version,
            "cluster_id": spec.cluster_id,
            "bootstrap": spec.bootstrap,
            "extra_properties": dict(spec.extra_properties),
            "nodes": [
                {**asdict(node), "pid": pids.get(node.node_id), "log_file": str(self.log_file(node.node_id))}
                for node in spec.nodes
            ],
        }
        path = self.run_dir / _STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(path)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise start/stop/restart on one run dir across processes (make, pytest, a shell)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ module helpers


def _spec_from_state(state: Mapping[str, object]) -> ClusterSpec:
    nodes = state["nodes"]
    assert isinstance(nodes, list)
    extra = state.get("extra_properties") or {}
    assert isinstance(extra, dict)
    return ClusterSpec(
        cluster_id=str(state["cluster_id"]),
        nodes=tuple(
            NodeSpec(
                node_id=int(n["node_id"]),
                port=int(n["port"]),
                controller_port=int(n["controller_port"]),
                directory_id=str(n["directory_id"]),
            )
            for n in nodes
        ),
        extra_properties={str(k): str(v) for k, v in extra.items()},
    )


def _pids_from_state(state: Mapping[str, object]) -> dict[int, int | None]:
    nodes = state["nodes"]
    assert isinstance(nodes, list)
    return {int(n["node_id"]): (int(n["pid"]) if n.get("pid") else None) for n in nodes}


def _pid(kafka: LocalKafka, node_id: int) -> int | None:
    return _pids_from_state(kafka._require_state()).get(node_id)


def _is_our_broker(pid: int, run_dir: str) -> bool:
    """True if `pid` is a live (not zombie) JVM started for `run_dir`."""
    proc = Path(f"/proc/{pid}")
    if proc.parent.is_dir():  # Linux: check the process really is our broker
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return False
        return f"-D{_MARKER_PROPERTY}={run_dir}".encode() in cmdline
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _send(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _megabytes(heap: str) -> int:
    """`768m` → 768, `1g` → 1024 (JVM size syntax)."""
    text = heap.strip().lower()
    scale = {"k": 1 / 1024, "m": 1, "g": 1024}.get(text[-1:], 1 / (1024 * 1024))
    number = text[:-1] if text[-1:] in "kmg" else text
    try:
        return max(1, int(float(number) * scale))
    except ValueError as exc:
        raise DevKafkaError(f"heap size {heap!r} is not a JVM size like 768m or 1g") from exc


def _tail_text(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _wait_for_cluster(spec: ClusterSpec, deadline: float, check_alive: Callable[[], None]) -> None:
    """Every node registered, then a transaction coordinator and a group coordinator answer."""
    # Imported here: `streamflow dev kafka status/stop` should not pay for loading librdkafka.
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, Producer
    from confluent_kafka.admin import AdminClient

    quiet = {
        "bootstrap.servers": spec.bootstrap,
        "log_level": 0,  # the probes retry by design; librdkafka's warnings would only alarm
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
    }
    admin = AdminClient(quiet)
    expected = {node.node_id for node in spec.nodes}
    last_error = "no answer yet"

    def remaining() -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DevKafkaError(
                f"local Kafka at {spec.bootstrap} did not become ready (last: {last_error}); "
                "see the broker log named by `streamflow dev kafka status`"
            )
        return left

    while True:
        check_alive()
        try:
            metadata = admin.list_topics(timeout=min(2.0, remaining()))
            registered = set(metadata.brokers)
            if registered >= expected:
                break
            last_error = f"brokers {sorted(registered)} of {sorted(expected)} registered"
        except KafkaException as exc:
            last_error = str(exc)
        time.sleep(0.1)

    # The transaction coordinator loads __transaction_state (created on first use) before it
    # hands out producer ids; retry until it does.
    producer = Producer({**quiet, "transactional.id": f"streamflow-dev-probe-{uuid.uuid4().hex}"})
    while True:
        check_alive()
        try:
            producer.init_transactions(min(10.0, remaining()))
            producer.begin_transaction()
            producer.commit_transaction(min(10.0, remaining()))
            break
        except KafkaException as exc:
            last_error = f"transactions: {exc}"
            if not exc.args[0].retriable():
                producer = Producer({**quiet, "transactional.id": f"streamflow-dev-probe-{uuid.uuid4().hex}"})
            time.sleep(0.2)

    # Likewise the group coordinator and __consumer_offsets, so the first consumer group of a
    # test does not pay for creating it.
    while True:
        check_alive()
        try:
            futures = admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions("streamflow-dev-probe")], request_timeout=min(5.0, remaining())
            )
            for future in futures.values():
                future.result()
            return
        except KafkaException as exc:
            last_error = f"group coordinator: {exc}"
            time.sleep(0.2)
