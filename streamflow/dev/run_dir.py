"""What a local cluster's run directory holds, and its `state.json`.

```
<run dir>/state.json           cluster id, ports, directory ids, pids (this module)
<run dir>/.lock                serialises start/stop across processes
<run dir>/node-<id>/server.properties, log4j2.xml, kafka.pid
<run dir>/node-<id>/data/      KRaft metadata and topic partitions
<run dir>/node-<id>/logs/server.log, stdout.log
<run dir>/security/            secured clusters: CA, certificates, SCRAM users, client settings
```

The state file is the only link between the shell that ran `start` and the one that runs
`stop`, `status` or the tests, so it is replaced atomically.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from streamflow.dev.broker_config import ClusterSpec, NodeSpec
from streamflow.errors import DevKafkaError

_STATE_FILE = "state.json"
_STATE_FORMAT = 1


@dataclass(frozen=True)
class NodePaths:
    """Where one node's files live."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def stdout_file(self) -> Path:
        """The JVM's own stdout/stderr: crashes before log4j starts (bad flags, OOM) land here."""
        return self.logs_dir / "stdout.log"

    @property
    def properties_file(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.root / "log4j2.xml"

    @property
    def pid_file(self) -> Path:
        return self.root / "kafka.pid"

    def is_formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()


@dataclass(frozen=True)
class RunState:
    """The cluster a run directory holds and the pid of each running node (None: not started)."""

    kafka_version: str
    cluster: ClusterSpec
    pids: Mapping[int, int | None] = field(default_factory=dict)

    def with_pids(self, pids: Mapping[int, int | None]) -> RunState:
        return replace(self, pids={**self.pids, **pids})


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def node(self, node_id: int) -> NodePaths:
        return NodePaths(self.path / f"node-{node_id}")

    @property
    def security_dir(self) -> Path:
        return self.path / "security"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def load(self) -> RunState | None:
        path = self.path / _STATE_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DevKafkaError(
                f"{path} is unreadable ({exc}); stop any broker of it that `ps` shows and start "
                "again with --clean"
            ) from exc
        if not isinstance(raw, dict) or raw.get("format") != _STATE_FORMAT:
            raise DevKafkaError(
                f"{path} was written by another streamflow version; start again with --clean"
            )
        try:
            nodes = tuple(
                NodeSpec(
                    node_id=int(n["node_id"]),
                    port=int(n["port"]),
                    controller_port=int(n["controller_port"]),
                    directory_id=str(n["directory_id"]),
                    proxied_port=int(n["proxied_port"]) if n.get("proxied_port") else None,
                    proxy_port=int(n["proxy_port"]) if n.get("proxy_port") else None,
                    internal_port=int(n["internal_port"]) if n.get("internal_port") else None,
                    mtls_port=int(n["mtls_port"]) if n.get("mtls_port") else None,
                )
                for n in raw["nodes"]
            )
            pids = {
                int(n["node_id"]): (int(n["pid"]) if n.get("pid") else None) for n in raw["nodes"]
            }
            cluster = ClusterSpec(
                cluster_id=str(raw["cluster_id"]),
                nodes=nodes,
                extra_properties={
                    str(k): str(v) for k, v in raw.get("extra_properties", {}).items()
                },
                secure=bool(raw.get("secure", False)),
            )
            return RunState(kafka_version=str(raw["kafka_version"]), cluster=cluster, pids=pids)
        except (KeyError, TypeError, ValueError) as exc:
            raise DevKafkaError(
                f"{path} is incomplete ({exc!r}); start again with --clean"
            ) from exc

    def require(self) -> RunState:
        state = self.load()
        if state is None:
            raise DevKafkaError(f"no local Kafka cluster in {self.path}; start one first")
        return state

    def save(self, state: RunState) -> None:
        raw = {
            "format": _STATE_FORMAT,
            "kafka_version": state.kafka_version,
            "cluster_id": state.cluster.cluster_id,
            "bootstrap": state.cluster.bootstrap,
            "extra_properties": dict(state.cluster.extra_properties),
            "secure": state.cluster.secure,
            "nodes": [
                {
                    "node_id": node.node_id,
                    "port": node.port,
                    "controller_port": node.controller_port,
                    "directory_id": node.directory_id,
                    "proxied_port": node.proxied_port,
                    "proxy_port": node.proxy_port,
                    "internal_port": node.internal_port,
                    "mtls_port": node.mtls_port,
                    "pid": state.pids.get(node.node_id),
                    "log_file": str(self.node(node.node_id).log_file),
                }
                for node in state.cluster.nodes
            ],
        }
        self.path.mkdir(parents=True, exist_ok=True)
        path = self.path / _STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(raw, indent=2) + "\n")
        tmp.replace(path)

    def wipe(self) -> None:
        """Forget the cluster: state file and every node's data and logs."""
        for child in self.path.glob("node-*"):
            shutil.rmtree(child, ignore_errors=True)
        shutil.rmtree(self.security_dir, ignore_errors=True)
        (self.path / _STATE_FILE).unlink(missing_ok=True)
