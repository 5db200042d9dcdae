"""The broker JVMs as operating-system processes: their command lines, launch, liveness, signals."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

from streamflow.dev.broker_config import ClusterSpec, NodeSpec
from streamflow.dev.run_dir import NodePaths
from streamflow.errors import DevKafkaError

# Marks our JVMs on their command line, so a recycled pid is never mistaken for a broker and
# two run dirs never signal each other's brokers.
MARKER_PROPERTY = "streamflow.dev.kafka.run"
LOG_TAIL_LINES = 30
_STACK_FRAME = re.compile(r"^\s+(at |\.\.\. \d+ more)")


def _log_flags(paths: NodePaths) -> list[str]:
    return [
        f"-Dkafka.logs.dir={paths.logs_dir}",
        f"-Dlog4j2.configurationFile={paths.log4j_file}",
    ]


def format_command(
    java: str,
    classpath: str,
    cluster: ClusterSpec,
    paths: NodePaths,
    extra_args: list[str] | None = None,
) -> list[str]:
    """`StorageTool format` for one node: `--standalone` for a single node (it derives the one
    voter from its controller listener), `--initial-controllers` with every voter otherwise;
    `extra_args` such as `--add-scram` users."""
    quorum = (
        ["--standalone"]
        if len(cluster.nodes) == 1
        else ["--initial-controllers", cluster.initial_controllers()]
    )
    return [
        java,
        "-Xmx256m",
        "-XX:TieredStopAtLevel=1",  # a short-lived tool: the optimising JIT only costs time
        *_log_flags(paths),
        "-cp",
        classpath,
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster.cluster_id,
        "-c",
        str(paths.properties_file),
        "-g",
        *quorum,
        *(extra_args or []),
    ]


def broker_command(
    java: str, classpath: str, heap: str, run_dir: Path, paths: NodePaths
) -> list[str]:
    """`kafka.Kafka server.properties` with the GC flags of Kafka's launch scripts."""
    return [
        java,
        f"-Xms{min(256, heap_megabytes(heap))}m",
        f"-Xmx{heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-D{MARKER_PROPERTY}={run_dir}",
        *_log_flags(paths),
        "-cp",
        classpath,
        "kafka.Kafka",
        str(paths.properties_file),
    ]


def run_formats(commands: list[tuple[NodeSpec, NodePaths, list[str]]]) -> None:
    """Format several nodes side by side (each is a JVM start) and report the first failure."""
    running = [
        (
            node,
            paths,
            subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            ),
        )
        for node, paths, command in commands
    ]
    failures = []
    for node, paths, proc in running:
        output, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            failures.append(
                f"formatting the KRaft storage of node {node.node_id} in {paths.data_dir} failed "
                f"(exit {proc.returncode}):\n{tail_text(output)}"
            )
    if failures:
        raise DevKafkaError(
            "\n".join(failures) + "\nFix the cause above and start again (--clean also "
            "discards the storage of an earlier cluster in this run dir)."
        )


def launch(command: list[str], paths: NodePaths) -> subprocess.Popen[bytes]:
    """Start a broker detached: its own session, so Ctrl-C in the shell that ran `start`, or the
    end of make's process group, does not take it down; output to the node's stdout.log."""
    with open(paths.stdout_file, "ab") as stdout:
        proc = subprocess.Popen(
            command,
            cwd=paths.root,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    paths.pid_file.write_text(f"{proc.pid}\n")
    return proc


def is_our_broker(pid: int, run_dir: Path) -> bool:
    """True if `pid` is a live (not zombie) broker JVM started for `run_dir`."""
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").is_dir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
            return False
        return f"-D{MARKER_PROPERTY}={run_dir}".encode() in cmdline
    # No /proc (macOS): trust the pid file.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def send_signal(pid: int, signum: signal.Signals) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def heap_megabytes(heap: str) -> int:
    """`768m` → 768, `1g` → 1024, in the JVM's size syntax."""
    text = heap.strip().lower()
    units = {"k": 1 / 1024, "m": 1.0, "g": 1024.0}
    unit = text[-1:]
    number = text[:-1] if unit in units else text
    scale = units.get(unit, 1 / (1024 * 1024))
    try:
        return max(1, int(float(number) * scale))
    except ValueError as exc:
        raise DevKafkaError(f"heap size {heap!r} is not a JVM size like 768m or 1g") from exc


def tail_text(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines without Java stack frames, which would push the one line that says
    what went wrong (the exception message) out of the tail."""
    kept = [line for line in text.rstrip().splitlines() if not _STACK_FRAME.match(line)]
    return "\n".join(kept[-lines:])


def log_tail(paths: NodePaths) -> str:
    """The last lines of the node's server.log and of its JVM stdout, if either has any."""
    parts = []
    for path in (paths.log_file, paths.stdout_file):
        if path.exists() and path.stat().st_size:
            parts.append(f"--- {path}\n" + tail_text(path.read_text(errors="replace")))
    return "\n".join(parts) or "(the broker wrote no log)"
