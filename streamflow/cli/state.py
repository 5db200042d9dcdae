"""`streamflow state get|scan|rebuild`: read a store where it lives; rebuild local stores."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from streamflow.cli.kafka_options import app_cluster, cluster_options
from streamflow.errors import StreamflowError
from streamflow.operate.state_query import SCAN_LIMIT, StateQuery, as_json, parse_key
from streamflow.runtime.log_format import ProgressLine
from streamflow.workflow.instance_queries import read_journal


def _query(target: str, bootstrap: str | None) -> tuple[Any, StateQuery, dict[str, Any]]:
    cluster = app_cluster(target, bootstrap)
    return cluster.app, StateQuery(cluster.app, cluster.client), cluster.client


@click.group()
def state() -> None:
    """Read stores from the workers that own them (or their changelogs); rebuild them."""


@state.command()
@click.argument("target")
@click.argument("store")
@click.argument("key")
@cluster_options
def get(target: str, store: str, key: str, bootstrap: str | None) -> None:
    """Print KEY's committed value in STORE as JSON (exit status 1: no such key)."""
    _app, query, _ = _query(target, bootstrap)
    try:
        spec = query.spec(store)
        answer = query.get(store, parse_key(key, spec.key_serde), text=key)
    except StreamflowError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(as_json(answer))
    if not answer["found"]:
        sys.exit(1)


@state.command()
@click.argument("target")
@click.argument("store")
@click.option("--prefix", default="", help="Only keys whose encoded bytes start with this.")
@click.option("--limit", type=int, default=SCAN_LIMIT, show_default=True)
@cluster_options
def scan(target: str, store: str, prefix: str, limit: int, bootstrap: str | None) -> None:
    """Print STORE's committed entries (one JSON object per line), in key order."""
    _app, query, _ = _query(target, bootstrap)
    try:
        answer = query.scan(store, prefix, limit)
    except StreamflowError as exc:
        raise click.ClickException(str(exc)) from exc
    for entry in answer["entries"]:
        click.echo(as_json(entry))
    more = " (truncated: raise --limit)" if answer["truncated"] else ""
    click.echo(f"{len(answer['entries'])} entries from the {answer['source']}{more}", err=True)


@state.command()
@click.argument("target")
@click.argument("workflow")
@click.argument("instance_id")
@cluster_options
def journal(target: str, workflow: str, instance_id: str, bootstrap: str | None) -> None:
    """Print a workflow instance's header and journal (JSON), from the worker that owns it."""
    app, query, _ = _query(target, bootstrap)
    if workflow not in app.workflows.workflows:
        known = ", ".join(sorted(app.workflows.workflows)) or "none"
        raise click.ClickException(f"no workflow {workflow!r} in the app (workflows: {known})")
    try:
        answer = read_journal(query, workflow, instance_id)
    except StreamflowError as exc:
        raise click.ClickException(str(exc)) from exc
    if answer is None:
        raise click.ClickException(f"no instance {instance_id!r} of workflow {workflow!r}")
    click.echo(as_json(answer))


@state.command()
@click.argument("target")
@click.argument("store", required=False)
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="STREAMFLOW_STATE_DIR",
    required=True,
    help="The worker's state directory (the worker must be stopped).",
)
@click.option(
    "--partition",
    "partitions",
    type=int,
    multiple=True,
    help="Also rebuild this partition's task when its directory does not exist (repeatable).",
)
@cluster_options
def rebuild(
    target: str,
    store: str | None,
    state_dir: Path,
    partitions: tuple[int, ...],
    bootstrap: str | None,
) -> None:
    """Wipe and refill STORE (default: every store) of each task under --state-dir from its
    changelog, checkpointed at the changelog's end."""
    from streamflow.operate.rebuild import rebuild_store, task_dirs

    app, query, client = _query(target, bootstrap)
    if store is not None:
        query.spec(store)  # an unknown name fails here, naming the stores there are
    jobs = []
    for sub in app.topology.sub_topologies():
        dirs = task_dirs(state_dir, app.name, sub)
        for p in partitions:
            dirs.setdefault(p, state_dir / app.name / f"{sub.id}_{p}")
        for spec in sub.stores:
            if store is None or spec.name == store:
                jobs += [(spec, d, p) for p, d in sorted(dirs.items())]
    if not jobs:
        raise click.ClickException(
            f"no task of app {app.name!r} under {state_dir}"
            + (f" holds store {store!r}" if store else "")
            + ": give --partition N to rebuild one that is not there"
        )
    for spec, task_dir, partition in jobs:
        label = f"{task_dir.name}/{spec.name}"
        try:
            bar = ProgressLine(label)
            try:
                shown = bar.show if bar.enabled else None
                done = rebuild_store(client, app.name, spec, task_dir, partition, shown)
            finally:
                bar.done()
        except StreamflowError as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(
            f"rebuilt {done.store} of task {done.task}: {done.records:,} changelog records, "
            f"checkpoint {done.checkpoint}"
        )
