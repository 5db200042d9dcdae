"""``--config`` and ``--kafka key=value``, the same on every command that talks to Kafka.

The options store what they were given in the click context instead of becoming parameters,
so a command opts in with one decorator and reads the resolved settings with
``kafka_settings()`` (``kafka/settings.py`` has the order of the sources).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from streamflow.cli.app_file import load_app
from streamflow.errors import ConfigError
from streamflow.kafka.settings import CONFIG_ENV, KafkaSettings, resolve
from streamflow.serde.registry.settings import RegistrySettings
from streamflow.serde.registry.settings import resolve as resolve_registry

F = TypeVar("F", bound=Callable[..., Any])

_FILE = "streamflow.kafka.config"
_PAIRS = "streamflow.kafka.pairs"


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def store(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value:
            ctx.meta[key] = value

    return store


def kafka_options(fn: F) -> F:
    """Add ``--config`` and ``--kafka`` to a command."""
    fn = click.option(
        "--kafka",
        multiple=True,
        metavar="KEY=VALUE",
        expose_value=False,
        callback=_remember(_PAIRS),
        help="A librdkafka setting for every client (repeatable), e.g. security.protocol=SSL.",
    )(fn)
    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        envvar=CONFIG_ENV,
        expose_value=False,
        callback=_remember(_FILE),
        help="Client settings: a streamflow.toml ([kafka] table) or a librdkafka .properties file.",
    )(fn)


def kafka_settings(app_kafka: Mapping[str, object] | None = None) -> KafkaSettings:
    """The settings of this invocation: App(kafka=...), --config, --kafka, environment."""
    meta = click.get_current_context().meta
    try:
        return resolve(app=app_kafka, config_file=meta.get(_FILE), cli=meta.get(_PAIRS, ()))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def registry_settings(url: str | None = None) -> RegistrySettings:
    """The external Schema Registry's settings of this invocation: the ``[schema_registry]``
    table of ``--config``, ``--registry-url`` (``url``), environment."""
    meta = click.get_current_context().meta
    try:
        return resolve_registry(config_file=meta.get(_FILE), cli={"url": url})
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def cluster_errors(fn: F) -> F:
    """Errors from the cluster (refused, unreachable, timed out) and streamflow's own become
    one line naming what failed, not a traceback."""
    import functools

    from confluent_kafka import KafkaException

    from streamflow.errors import StreamflowError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StreamflowError as exc:
            raise click.ClickException(str(exc)) from exc
        except KafkaException as exc:
            err = exc.args[0]
            text = err.str() if hasattr(err, "str") else str(err)
            raise click.ClickException(f"Kafka refused or failed: {text}") from exc
        except TimeoutError as exc:
            raise click.ClickException(
                "Kafka did not answer in time: is the cluster up and --bootstrap right?"
            ) from exc

    return wrapper  # type: ignore[return-value]


def cluster_options(fn: F) -> F:
    """``--bootstrap`` with ``--config`` / ``--kafka``, and cluster errors as one line: what
    every command that talks to an app's cluster takes."""
    fn = cluster_errors(fn)
    fn = kafka_options(fn)
    return click.option(
        "--bootstrap", envvar="STREAMFLOW_BOOTSTRAP", help="Kafka bootstrap servers."
    )(fn)


@dataclass
class AppCluster:
    """An app loaded from its file and how to reach its cluster, as this invocation says."""

    app: Any
    settings: KafkaSettings
    bootstrap: str
    client: dict[str, Any]
    """Settings for a client of the cluster: ``bootstrap.servers`` and the shared ones."""


def app_cluster(target: str, bootstrap: str | None, check: bool = True) -> AppCluster:
    """Load TARGET and resolve its cluster: ``--bootstrap``, else the settings' own
    ``bootstrap.servers``, else the app's. ``check``: ask the cluster once first, so a wrong
    password, an untrusted certificate or nothing listening is the one line ``run`` prints,
    within seconds, instead of librdkafka's log lines and a timeout later."""
    app = load_app(target)
    settings = kafka_settings(dict(app.config.kafka_from_app))
    server = str(bootstrap or settings.values.get("bootstrap.servers") or app.config.bootstrap)
    if check:
        from streamflow.cluster.client_errors import check_cluster

        check_cluster(settings, server)
    return AppCluster(app, settings, server, dict(settings.client(server)))
