"""`streamflow status`: members, tasks and owners, lag, restores, dead letters, workflows."""

from __future__ import annotations

from collections import Counter

import click
import orjson

from streamflow.cli.kafka_options import app_cluster, cluster_options
from streamflow.errors import StreamflowError
from streamflow.operate.dead_letters import DeadLetters
from streamflow.operate.group_status import GroupStatus, group_status

COUNT_DEAD_LETTERS_UP_TO = 100_000
"""Below this many offsets the dead letters are read and counted exactly; above, the offsets
are shown as an upper bound (they include transaction markers)."""


@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="The whole status as one JSON object.")
@click.option(
    "--workflows/--no-workflows",
    "with_workflows",
    default=True,
    help="Count workflow instances by status (reads the instances' changelogs).",
)
@cluster_options
def status(target: str, as_json: bool, with_workflows: bool, bootstrap: str | None) -> None:
    """Show TARGET's consumer group: members and their tasks, lag per input partition,
    restores in progress, dead letters and workflow instances by status."""
    from confluent_kafka.admin import AdminClient

    cluster = app_cluster(target, bootstrap)
    app, settings, server, client = cluster.app, cluster.settings, cluster.bootstrap, cluster.client
    inputs = sorted({t.name for sub in app.topology.sub_topologies() for t in sub.sources})
    result = group_status(AdminClient(client), app.name, inputs, app.dead_letter_topic)
    if result.dead_letters is None and result.dead_letter_offsets <= COUNT_DEAD_LETTERS_UP_TO:
        result.dead_letters = sum(1 for _ in DeadLetters(app.name, server, client).list())
    workflows: dict[str, dict[str, int]] = {}
    if with_workflows and app.workflows.workflows:
        from dataclasses import replace

        from streamflow.operate.state_query import StateQuery

        query = StateQuery(app, client)
        app.config = replace(app.config, kafka=settings)
        wclient = None
        for name in sorted(app.workflows.workflows):
            # From the workers' counts stores when they serve an endpoint (no scan), else
            # from the instances' changelog.
            try:
                counted = query.counts(name) if result.members else None
            except StreamflowError:
                counted = None  # a task on the move, a worker without --http-port
            if counted is None:
                wclient = wclient or app.client(server)
                counted = dict(Counter(v.status for v in wclient.list(name)))
            workflows[name] = counted
    if as_json:
        click.echo(orjson.dumps({**result.to_json(), "workflows": workflows}).decode())
        return
    _print(result, workflows)


def _print(result: GroupStatus, workflows: dict[str, dict[str, int]]) -> None:
    click.echo(f"app {result.app}: group {result.state}, {result.protocol} protocol")
    click.echo(f"members ({len(result.members)}):")
    for m in result.members:
        where = f" http://{m.endpoint}" if m.endpoint else ""
        click.echo(f"  {m.client_id} on {m.host}{where}: {len(m.partitions)} partition(s)")
        worker = m.worker
        if worker is None:
            if m.endpoint:
                click.echo("    (its endpoint did not answer)")
            continue
        for t in worker.get("tasks", []):
            line = (
                f"    task {t['task']:<12} {t['state']:<12} {t['records_per_second']:>10,.0f} rec/s"
            )
            if t["state"] == "restoring" and t["restore_total"]:
                done = 100 * t["restore_done"] / max(1, t["restore_total"])
                line += f"  restore {t['restore_done']:,}/{t['restore_total']:,} ({done:.0f}%)"
            if t["dead_letters"]:
                line += f"  {t['dead_letters']} dead-lettered"
            click.echo(line)
        for standby in worker.get("standbys", []):
            click.echo(f"    standby {standby['task']:<9} lag {standby['lag']:,} changelog records")
        for hung in worker.get("hung_attempts", []):
            limit = hung["timeout_seconds"]
            why = f"past its {limit:g} s timeout" if hung["past_timeout"] else "long-running"
            click.echo(
                f"    step {hung['step']} instance {hung['instance_id']} seq {hung['seq']} "
                f"attempt {hung['attempt']}: running {hung['age_seconds']:,.0f} s ({why}"
                f"{', void' if hung['void'] else ''})"
            )
    click.echo("input partitions:")
    for p in result.partitions:
        committed = "-" if p.committed is None else f"{p.committed:,}"
        click.echo(
            f"  {p.topic}[{p.partition}]  committed {committed:>12}  end {p.high:>12,}  "
            f"lag {p.lag:>10,}  owner {p.owner or '-'}"
        )
    if result.dead_letters is not None:
        click.echo(f"dead letters: {result.dead_letters:,}")
    else:
        click.echo(f"dead letters: at most {result.dead_letter_offsets:,} (offsets)")
    for name, counts in workflows.items():
        shown = ", ".join(f"{n:,} {s}" for s, n in sorted(counts.items())) or "no instances"
        click.echo(f"workflow {name}: {shown}")
