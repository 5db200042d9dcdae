"""`streamflow dev …`: tools for working on a laptop, starting with a local Kafka cluster."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from streamflow.errors import DevKafkaError

if TYPE_CHECKING:
    from streamflow.dev import LocalKafka

_DIR_HELP = "Run directory holding the cluster's state, config, data and logs."
_DIR_DEFAULT_HELP = "[default: $STREAMFLOW_KAFKA_DIR or ./.cache/kafka-run]"


@click.group()
def dev() -> None:
    """Development tools (local Kafka cluster)."""
    # Progress of slow steps (jar download, broker start) goes to stderr; stdout stays parseable.
    logger = logging.getLogger("streamflow.dev")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@dev.group()
def kafka() -> None:
    """A real Apache Kafka cluster on 127.0.0.1 from Maven Central jars, without Docker."""


def _dir_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--dir",
        "run_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"{_DIR_HELP} {_DIR_DEFAULT_HELP}",
    )(fn)


@kafka.command()
@click.option(
    "--brokers",
    type=click.IntRange(1, 5),
    default=None,
    help="Combined broker+controller nodes; 3 for replication tests. [default: 1, or "
    "what --dir already holds]",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Client port of node 1 (node i listens on port+i-1). [default: a free port]",
)
@click.option("--clean", is_flag=True, help="Discard the data of a previous cluster in --dir.")
@click.option(
    "--secure",
    is_flag=True,
    help="TLS everywhere, SCRAM users (admin, app), a client-certificate listener and an "
    "authorizer that allows nothing without an ACL; prints the client settings files.",
)
@click.option(
    "--heap", default=None, help="JVM heap per node, e.g. 768m. [default: 768m, 512m for 3]"
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra broker property (repeatable), e.g. --set log.retention.ms=60000.",
)
@click.option(
    "--timeout",
    type=float,
    default=120.0,
    show_default=True,
    help="Seconds to wait for the cluster to become ready.",
)
@_dir_option
def start(
    brokers: int | None,
    port: int | None,
    clean: bool,
    secure: bool,
    heap: str | None,
    overrides: tuple[str, ...],
    timeout: float,
    run_dir: Path | None,
) -> None:
    """Start a local cluster (or find it running) and print its bootstrap address.

    The last line of stdout is `bootstrap=HOST:PORT[,…]`.
    """
    from streamflow.dev import LocalKafka
    from streamflow.dev.broker_config import parse_property_overrides

    try:
        cluster = LocalKafka(
            run_dir,
            brokers=brokers,
            port=port,
            heap=heap,
            extra_properties=parse_property_overrides(overrides),
            startup_timeout=timeout,
            secure=secure,
        )
        bootstrap = cluster.start(clean=clean)
        status = cluster.status()
    except DevKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    for node in status.nodes:
        click.echo(f"node {node.node_id}: pid {node.pid}, log {node.log_file}")
    if status.secure:
        _print_secure_settings(cluster)
    click.echo(f"bootstrap={bootstrap}")


def _print_secure_settings(cluster: LocalKafka) -> None:
    """Where the client settings are, and what they say (passwords stay in the files)."""
    from streamflow.dev.security import ADMIN_USER, APP_USER
    from streamflow.kafka.settings import is_secret

    files = cluster.security_files
    click.echo(
        f"secured: SASL_SSL with SCRAM on the bootstrap port, mutual TLS on "
        f"{_mtls_bootstrap(cluster)}; CA {files.ca_file}"
    )
    for name, why in (
        (ADMIN_USER, "super user: setup, and granting ACLs"),
        (
            APP_USER,
            "no ACLs yet: streamflow acls APP_FILE --principal User:app --apply "
            f"--config {files.settings_file(ADMIN_USER)}",
        ),
        (f"{APP_USER}-mtls", "the same principal User:app, by client certificate"),
    ):
        click.echo(f"  --config {files.settings_file(name)}   # {why}")
    for key, value in cluster.client_settings(APP_USER).items():
        click.echo(f"    {key}={'*** (in the file)' if is_secret(key) else value}")


def _mtls_bootstrap(cluster: LocalKafka) -> str:
    return cluster.mtls_settings()["bootstrap.servers"]


@kafka.command()
@click.option(
    "--timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for a clean shutdown before SIGKILL.",
)
@_dir_option
def stop(timeout: float, run_dir: Path | None) -> None:
    """Stop the local cluster (SIGTERM, then SIGKILL after --timeout). Its data is kept."""
    from streamflow.dev import LocalKafka

    cluster = LocalKafka(run_dir)
    try:
        was_running = any(node.alive for node in cluster.status().nodes)
        cluster.stop(timeout=timeout)
    except DevKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo("stopped" if was_running else f"not running ({cluster.run_dir})")


@kafka.command()
@_dir_option
def status(run_dir: Path | None) -> None:
    """Tell whether the local cluster runs, with bootstrap, pids and log files.

    Exit status 0 when every node runs, 3 otherwise (as `systemctl status` does).
    """
    from streamflow.dev import LocalKafka

    try:
        state = LocalKafka(run_dir).status()
    except DevKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
    if not state.nodes:
        click.echo(f"stopped: no cluster in {state.run_dir}")
        sys.exit(3)
    alive = sum(node.alive for node in state.nodes)
    word = "running" if state.running else ("degraded" if alive else "stopped")
    click.echo(
        f"{word}: Kafka {state.kafka_version}, {alive}/{len(state.nodes)} node(s) up, "
        f"run dir {state.run_dir}"
    )
    for node in state.nodes:
        pid = f"pid {node.pid}" if node.alive else "not running"
        click.echo(
            f"node {node.node_id}: {pid}, port {node.port}, controller port "
            f"{node.controller_port}, log {node.log_file}"
        )
    click.echo(f"bootstrap={state.bootstrap}")
    if not state.running:
        sys.exit(3)


@kafka.command()
def jars() -> None:
    """Download the pinned Kafka broker jars into the cache (once) and print their directory."""
    from streamflow.dev import KafkaJars

    try:
        click.echo(KafkaJars().ensure())
    except DevKafkaError as exc:
        raise click.ClickException(str(exc)) from exc
