"""`streamflow replay`: move an app's input offsets back and reprocess (after a bug fix)."""

from __future__ import annotations

import click
from confluent_kafka import KafkaException

from streamflow.cli.kafka_options import app_cluster, cluster_options
from streamflow.errors import StreamflowError


@click.command()
@click.argument("target")
@click.option(
    "--from",
    "start",
    required=True,
    help="earliest, latest, a time (epoch ms, ISO 8601, or an age: 2h, 7d), "
    "or TOPIC:PARTITION=OFFSET,...",
)
@click.option(
    "--to-app",
    help="Replay under this new app name: its own group, changelogs and DLQ (then run the "
    "workers with `streamflow run FILE --app-name NEW`).",
)
@click.option(
    "--reset-state",
    is_flag=True,
    help="Same app name: delete its changelog and repartition topics so state is rebuilt "
    "from the replayed input.",
)
@click.option("--dry-run", is_flag=True, help="Print the new offsets; change nothing.")
@cluster_options
def replay(
    target: str,
    start: str,
    to_app: str | None,
    reset_state: bool,
    dry_run: bool,
    bootstrap: str | None,
) -> None:
    """Reset TARGET's input offsets to --from so its workers reprocess from there. Refuses
    while the group has members."""
    from confluent_kafka.admin import AdminClient

    from streamflow.operate.replay import apply_replay, describe_plan, plan_replay

    cluster = app_cluster(target, bootstrap)
    app, server = cluster.app, cluster.bootstrap
    admin = AdminClient(cluster.client)
    try:
        plan = plan_replay(admin, app.name, app.topology, start, to_app, reset_state)
        for line in describe_plan(plan):
            click.echo(line)
        if dry_run:
            click.echo("dry run: nothing changed")
            return
        apply_replay(admin, plan)
    except StreamflowError as exc:
        raise click.ClickException(str(exc)) from exc
    except KafkaException as exc:
        raise click.ClickException(f"Kafka at {server}: {exc.args[0].str()}") from exc
    name = f" --app-name {to_app}" if to_app else ""
    if plan.deleted_topics:
        click.echo(
            "state topics deleted: wipe every worker's --state-dir of this app before starting "
            "it (a local store from before the reset must not be replayed onto the new "
            "changelogs)"
        )
    click.echo(f"offsets moved; now start the workers: streamflow run {target}{name}")
