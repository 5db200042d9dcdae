"""`streamflow acls FILE`: the ACLs an app's principal needs, as `kafka-acls` lines or JSON, or
granted on the cluster with an administrator's settings (`--apply`)."""

from __future__ import annotations

import click
import orjson

from streamflow.cli.app_file import load_app
from streamflow.cli.kafka_options import kafka_options, kafka_settings, registry_settings
from streamflow.cluster.acls import Acl
from streamflow.errors import ConfigError


@click.command()
@click.argument("target")
@click.option(
    "--principal", help="The app's Kafka principal [default: User:<app name>].", default=None
)
@click.option(
    "--bootstrap",
    envvar="STREAMFLOW_BOOTSTRAP",
    default=None,
    help="The cluster (for --apply, and put into the kafka-acls lines) "
    "[default: $STREAMFLOW_BOOTSTRAP, or bootstrap.servers of --config].",
)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of kafka-acls lines.")
@click.option(
    "--apply",
    is_flag=True,
    help="Create the ACLs on the cluster, connecting with --config/--kafka (an administrator's "
    "settings, not the app's).",
)
@kafka_options
def acls(
    target: str, principal: str | None, bootstrap: str | None, as_json: bool, apply: bool
) -> None:
    """Print (or --apply) the ACLs TARGET (FILE[:APP]) needs on a cluster with an authorizer."""
    from streamflow.cluster.acls import app_acls, uses_kafka_registry

    app = load_app(target)
    try:
        uses_registry = uses_kafka_registry(app.topology, registry_settings())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    rules = app_acls(app.topology, principal or f"User:{app.name}", uses_registry)
    if apply:
        _apply(rules, bootstrap)
        return
    if as_json:
        click.echo(orjson.dumps([r.to_json() for r in rules], option=orjson.OPT_INDENT_2))
        return
    for rule in rules:
        click.echo(f"# {rule.why}")
        click.echo(rule.command(bootstrap or "BOOTSTRAP"))


def _apply(rules: list[Acl], bootstrap: str | None) -> None:
    from confluent_kafka import KafkaException

    from streamflow.cluster.access import AdminConnection
    from streamflow.errors import StreamflowError
    from streamflow.kafka.refusals import ACLS_HINT, denied, principal_of

    settings = kafka_settings()
    address = bootstrap or settings.values.get("bootstrap.servers")
    if not address:
        raise click.ClickException("--apply needs --bootstrap or bootstrap.servers in --config")
    try:
        connection = AdminConnection(settings, address)
        connection.list_topics(timeout=15)  # a wrong password says so here, not as a timeout
        for rule in rules:
            created = connection.admin.create_acls(rule.bindings(), request_timeout=30)
            for future in created.values():
                future.result()
            prefix = " (prefix)" if rule.pattern_type == "PREFIXED" else ""
            click.echo(
                f"allowed {rule.principal} {', '.join(rule.operations)} on "
                f"{rule.resource_type.lower().replace('_', ' ')} {rule.name!r}{prefix}"
            )
    except StreamflowError as exc:
        raise click.ClickException(str(exc)) from exc
    except KafkaException as exc:
        refusal = denied(exc.args[0], "ALTER", "cluster", None, principal_of(settings.values))
        raise click.ClickException(
            str(refusal).replace(
                f"grant the ACL ({ACLS_HINT})", "--apply needs an administrator's settings"
            )
            if refusal
            else f"creating the ACLs on {address} failed: {exc.args[0].str()}"
        ) from exc
