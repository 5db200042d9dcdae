"""`streamflow acls FILE`: the ACLs an app's principal needs, as `kafka-acls` lines or JSON."""

from __future__ import annotations

import click
import orjson

from streamflow.cli.engine import load_app


@click.command()
@click.argument("target")
@click.option(
    "--principal", help="The app's Kafka principal [default: User:<app name>].", default=None
)
@click.option(
    "--bootstrap",
    envvar="STREAMFLOW_BOOTSTRAP",
    default="BOOTSTRAP",
    help="Put into the kafka-acls lines [default: $STREAMFLOW_BOOTSTRAP].",
)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of kafka-acls lines.")
def acls(target: str, principal: str | None, bootstrap: str, as_json: bool) -> None:
    """Print the ACLs TARGET (FILE[:APP]) needs on a cluster with an authorizer."""
    from streamflow.errors import ConfigError
    from streamflow.runtime.acls import app_acls
    from streamflow.serde.registry.binding import schema_uses
    from streamflow.serde.registry.settings import resolve as resolve_registry_settings

    app = load_app(target)
    try:
        external = resolve_registry_settings().url is not None  # then no registry topic
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    uses_registry = bool(schema_uses(app.topology)) and not external
    rules = app_acls(app.topology, principal or f"User:{app.name}", uses_registry)
    if as_json:
        click.echo(orjson.dumps([r.to_json() for r in rules], option=orjson.OPT_INDENT_2))
        return
    for rule in rules:
        click.echo(f"# {rule.why}")
        click.echo(rule.command(bootstrap))
