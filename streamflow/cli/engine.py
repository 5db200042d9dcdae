"""`streamflow run` and `streamflow describe`: load an App from a Python file, run or print it."""

from __future__ import annotations

import faulthandler
import logging
import signal
from pathlib import Path

import click
from confluent_kafka import KafkaException

from streamflow.cli.app_file import load_app
from streamflow.cli.kafka_options import kafka_options, kafka_settings, registry_settings
from streamflow.errors import StreamflowError
from streamflow.runtime import log_format as log_format_module


def _configure_logging(verbose: int, log_format: str = "text") -> None:
    level = logging.WARNING if verbose < 0 else logging.INFO if verbose == 0 else logging.DEBUG
    log_format_module.configure(level, log_format)


@click.command()
@click.argument("target")
@click.option("--bootstrap", envvar="STREAMFLOW_BOOTSTRAP", help="Kafka bootstrap servers.")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    envvar="STREAMFLOW_STATE_DIR",
    help="Where this worker keeps its RocksDB stores (one per worker).",
)
@click.option("--guarantee", type=click.Choice(["exactly_once", "at_least_once"]))
@click.option("--commit-interval", type=float, help="Seconds between commits under load.")
@click.option(
    "--http-port",
    type=int,
    envvar="STREAMFLOW_HTTP_PORT",
    help="Serve /metrics (Prometheus), /status and queries on this port (default: any free).",
)
@click.option(
    "--no-http",
    is_flag=True,
    envvar="STREAMFLOW_NO_HTTP",
    help="Serve no HTTP endpoint (clients then read instances from the changelogs: slower).",
)
@click.option(
    "--http-host",
    default="127.0.0.1",
    envvar="STREAMFLOW_HTTP_HOST",
    show_default=True,
    help="Address the HTTP endpoint binds (0.0.0.0 exposes it to the network).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="STREAMFLOW_LOG_FORMAT",
    show_default=True,
    help="One line per event: plain text, or one JSON object per line.",
)
@click.option(
    "--group-protocol",
    type=click.Choice(["auto", "classic", "consumer"]),
    envvar="STREAMFLOW_GROUP_PROTOCOL",
    help="consumer: Kafka 4's rebalance protocol (KIP-848, incremental, assignment on the "
    "broker); classic: the protocol every Kafka speaks; auto (the default): consumer where the "
    "brokers offer it, else classic.",
)
@click.option(
    "--num-standbys",
    type=int,
    envvar="STREAMFLOW_NUM_STANDBYS",
    help="Keep warm copies of other workers' stores on this many workers per task.",
)
@click.option(
    "--app-name",
    envvar="STREAMFLOW_APP_NAME",
    help="Run the app under this name (its group, changelogs and DLQ): after "
    "`streamflow replay --to-app NAME`.",
)
@click.option("-v", "--verbose", count=True)
@click.option("-q", "--quiet", is_flag=True)
@kafka_options
def run(
    target: str,
    bootstrap: str | None,
    state_dir: Path | None,
    guarantee: str | None,
    commit_interval: float | None,
    http_port: int | None,
    no_http: bool,
    http_host: str,
    log_format: str,
    group_protocol: str | None,
    num_standbys: int | None,
    app_name: str | None,
    verbose: int,
    quiet: bool,
) -> None:
    """Run TARGET (FILE[:APP]) as one worker of its consumer group. SIGTERM drains and leaves."""
    from dataclasses import replace

    from streamflow.runtime.worker import Worker

    _configure_logging(-1 if quiet else verbose, log_format)
    # `kill -USR1 <pid>` prints every thread's stack to stderr: how a worker that seems stuck
    # shows where, without stopping it.
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (OSError, ValueError):  # stderr is no file (an embedding test runner): no dump
        pass
    if app_name:
        import os

        os.environ["STREAMFLOW_APP_NAME"] = app_name  # read by App() as the file is loaded
    app = load_app(target)
    settings = kafka_settings(dict(app.config.kafka_from_app))
    changes: dict[str, object] = {"kafka": settings, "schema_registry": registry_settings()}
    if bootstrap:
        changes["bootstrap"] = bootstrap
    elif "bootstrap.servers" in settings.values:
        changes["bootstrap"] = settings.values["bootstrap.servers"]
    if state_dir:
        changes["state_dir"] = state_dir
    if guarantee:
        changes["guarantee"] = guarantee
    if commit_interval is not None:
        changes["commit_interval"] = commit_interval
    if num_standbys is not None:
        changes["num_standbys"] = num_standbys
    if group_protocol is not None:
        changes["group_protocol"] = group_protocol
    changes["http_host"] = http_host
    if no_http:
        changes["http_port"] = None
    elif http_port is not None:
        changes["http_port"] = http_port
    config = replace(app.config, **changes)  # type: ignore[arg-type]
    try:
        Worker(app.topology, config, app.dead_letter_topic).run()
    except StreamflowError as exc:
        raise click.ClickException(str(exc)) from exc
    except KafkaException as exc:
        # Fenced by a newer incarnation, or the cluster refused us for good: nothing committed
        # is lost, and a restarted worker resumes from the last committed cycle.
        raise click.ClickException(
            f"worker stopped by a Kafka error: {exc.args[0].str()}; "
            "restart it to resume from the last commit"
        ) from exc


@click.command()
@click.argument("target")
def describe(target: str) -> None:
    """Print TARGET's topology: sub-topologies, processors, stores and topics."""
    click.echo(load_app(target).describe())


COMMANDS = [run, describe]
