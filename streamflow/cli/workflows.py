"""`streamflow workflows …`: start, signal, cancel, show and list workflow instances."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import orjson

from streamflow.cli.kafka_options import app_cluster, cluster_options, registry_settings
from streamflow.errors import StreamflowError
from streamflow.workflow.journal import COMPENSATION_BASE, STATUSES, TERMINAL

EXIT_ENDED_BADLY = 1
"""``start --wait``, ``wait``: the instance failed, was compensated or was cancelled."""
EXIT_TIMED_OUT = 3
"""``start --wait``, ``wait``: the instance had not ended within ``--timeout``."""
EXIT_NO_SUCH_INSTANCE = 4
"""``signal``/``cancel``/``wait``/``show``: no instance has that id (nothing was sent)."""
EXIT_ALREADY_ENDED = 5
"""``signal``/``cancel``: the instance has ended (nothing was sent)."""

_bootstrap = cluster_options
"""``--bootstrap`` with ``--config`` / ``--kafka``: what every command here needs."""


def _client(target: str, bootstrap: str | None) -> tuple[Any, Any]:
    """The app and a workflow client of the cluster this invocation names (checked once, as
    every cluster command's is: ``app_cluster``)."""
    try:
        cluster = app_cluster(target, bootstrap)
    except StreamflowError as exc:  # refused, unreachable: the one line `run` prints
        raise click.ClickException(str(exc)) from None
    app = cluster.app
    app.config = replace(app.config, kafka=cluster.settings, schema_registry=registry_settings())
    return app, app.client(cluster.bootstrap)


def _json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from exc


@click.group()
def workflows() -> None:
    """Start, signal, cancel and inspect durable workflow instances."""


@workflows.command()
@click.argument("target")
@click.argument("workflow")
@click.argument("instance_id")
@click.argument("input_json", required=False)
@click.option("--version", type=int, help="Pin a version (default: the newest registered).")
@click.option("--wait", is_flag=True, help="Wait for the instance to finish and print its result.")
@click.option(
    "--timeout", type=float, default=300.0, show_default=True, help="Seconds --wait waits."
)
@_bootstrap
def start(
    target: str,
    workflow: str,
    instance_id: str,
    input_json: str | None,
    version: int | None,
    wait: bool,
    timeout: float,
    bootstrap: str | None,
) -> None:
    """Start WORKFLOW as INSTANCE_ID (idempotent: an existing instance is left as it is).

    With --wait, the exit status says how it ended: 0 completed; 1 failed, compensated or
    cancelled (the error is printed); 3 not ended within --timeout."""
    _, client = _client(target, bootstrap)
    try:
        client.start(workflow, id=instance_id, input=_json(input_json), version=version)
    except (TypeError, StreamflowError) as exc:  # ValueMismatch names the field at fault
        raise click.ClickException(str(exc)) from None
    click.echo(f"started {workflow} {instance_id}")
    if wait:
        _wait_and_report(client, workflow, instance_id, timeout)


@workflows.command(name="wait")
@click.argument("target")
@click.argument("workflow")
@click.argument("instance_id")
@click.option(
    "--timeout", type=float, default=300.0, show_default=True, help="Seconds to wait at most."
)
@_bootstrap
def wait_(
    target: str, workflow: str, instance_id: str, timeout: float, bootstrap: str | None
) -> None:
    """Wait for an instance to end and print its result (or its error).

    Exit status: 0 completed; 1 failed, compensated or cancelled; 3 not ended within
    --timeout; 4 no such instance."""
    _, client = _client(target, bootstrap)
    if client.get(workflow, instance_id) is None:
        click.echo(f"no instance {instance_id!r} of workflow {workflow!r}", err=True)
        sys.exit(EXIT_NO_SUCH_INSTANCE)
    _wait_and_report(client, workflow, instance_id, timeout)


def _wait_and_report(client: Any, workflow: str, instance_id: str, timeout: float) -> None:
    """Print how the instance ended; the exit status says it too (see ``wait``)."""
    try:
        view = client.wait(workflow, instance_id, timeout=timeout)
    except TimeoutError as exc:
        click.echo(f"timed out: {exc}", err=True)
        sys.exit(EXIT_TIMED_OUT)
    if view.status == "completed":
        click.echo(f"completed: {orjson.dumps(view.result).decode()}")
        return
    error = view.header.get("error") or {}
    reason = f"{error.get('type', '')}: {error.get('message', '')}" if error else ""
    click.echo(f"{view.status}" + (f": {reason}" if reason else ""), err=True)
    sys.exit(EXIT_ENDED_BADLY)


@workflows.command()
@click.argument("target")
@click.argument("workflow")
@click.argument("instance_id")
@click.argument("name")
@click.argument("payload_json", required=False)
@_bootstrap
def signal(
    target: str,
    workflow: str,
    instance_id: str,
    name: str,
    payload_json: str | None,
    bootstrap: str | None,
) -> None:
    """Send signal NAME (with an optional JSON payload) to an instance.

    Exit status 4: no such instance; 5: it has ended (nothing is sent either way)."""
    _, client = _client(target, bootstrap)
    _must_be_running(client, workflow, instance_id, f"signal {name!r}")
    client.signal(workflow, instance_id, name, _json(payload_json))
    click.echo(f"signalled {name} to {workflow} {instance_id}")


@workflows.command()
@click.argument("target")
@click.argument("workflow")
@click.argument("instance_id")
@_bootstrap
def cancel(target: str, workflow: str, instance_id: str, bootstrap: str | None) -> None:
    """Cancel an instance: its timers are deleted, its running attempts cancelled, Cancelled
    is raised at its current await, and its compensations run, newest first.

    Exit status 4: no such instance; 5: it has ended (nothing is sent either way)."""
    _, client = _client(target, bootstrap)
    _must_be_running(client, workflow, instance_id, "cancel")
    client.cancel(workflow, instance_id)
    click.echo(f"cancel requested for {workflow} {instance_id}")


@workflows.command()
@click.argument("target")
@click.argument("workflow")
@click.argument("instance_id")
@_bootstrap
def resume(target: str, workflow: str, instance_id: str, bootstrap: str | None) -> None:
    """Run a suspended instance's code again (after a fix was deployed, or its cause passed).

    A worker that takes the partition with code that differs from what the instance failed in
    does this by itself; this command is for the other cases."""
    _, client = _client(target, bootstrap)
    client.resume(workflow, instance_id)
    click.echo(f"resume requested for {workflow} {instance_id}")


@workflows.command(name="fail")
@click.argument("target")
@click.argument("workflow")
@click.argument("instance_id")
@click.option("--reason", default="", help="Why, kept in the instance's error.")
@_bootstrap
def fail_(target: str, workflow: str, instance_id: str, reason: str, bootstrap: str | None) -> None:
    """End an instance for good as failed, without compensations (e.g. a suspended one
    nobody will fix). Attempts in flight are cancelled and waited for first."""
    _, client = _client(target, bootstrap)
    client.fail(workflow, instance_id, reason)
    click.echo(f"fail requested for {workflow} {instance_id}")


def _must_be_running(client: Any, workflow: str, instance_id: str, what: str) -> None:
    """Refuse, before sending, a command the instance would drop: the owning worker says
    whether it exists and whether it has ended. (The Python client sends regardless: a signal
    may rightly arrive before its start is processed.)"""
    view = client.get(workflow, instance_id)
    if view is None:
        click.echo(
            f"no instance {instance_id!r} of workflow {workflow!r}: {what} not sent", err=True
        )
        sys.exit(EXIT_NO_SUCH_INSTANCE)
    if view.done:
        click.echo(
            f"instance {instance_id!r} of {workflow!r} already ended ({view.status}): "
            f"{what} not sent",
            err=True,
        )
        sys.exit(EXIT_ALREADY_ENDED)


def _time(ms: int | None) -> str:
    if not ms:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _describe_entry(entry: dict[str, Any]) -> str:
    kind, name, status = entry["kind"], entry["name"], entry["status"]
    if status == "cancelled":
        what = {"signal": f"wait for signal {name!r}", "sleep": "sleep"}.get(kind, f"{kind} {name}")
        return f"{what} cancelled"
    if kind == "step":
        what = f"step {name}({', '.join(orjson.dumps(a).decode() for a in entry.get('args', []))})"
        if status == "done":
            result = orjson.dumps(entry.get("result")).decode()
            return f"{what} → {result}  (attempt {entry['attempt']})"
        if status == "failed":
            error = entry["error"]
            return (
                f"{what} FAILED after {entry['attempt']} attempt(s): "
                f"{error['type']}: {error['message']}"
            )
        last = entry.get("last_error")
        return f"{what} … attempt {entry['attempt']}" + (
            f" (last error: {last['message']})" if last else ""
        )
    if kind == "sleep":
        return f"sleep until {_time(entry.get('due_ms'))}" + (" (done)" if status == "done" else "")
    if kind == "signal":
        if status != "done":
            return f"waiting for signal {name!r}"
        return (
            f"signal {name!r} timed out"
            if entry.get("timed_out")
            else f"signal {name!r} → {orjson.dumps(entry.get('result')).decode()}"
        )
    if kind == "compensate":
        args = ", ".join(orjson.dumps(a).decode() for a in entry.get("args", []))
        return f"registered compensation {name}({args})"
    if kind == "emit":
        return f"emitted to {name}"
    return f"{kind} → {orjson.dumps(entry.get('result')).decode()}"


@workflows.command()
@click.argument("target")
@click.argument("workflow")
@click.argument("instance_id")
@click.option("--json", "as_json", is_flag=True, help="The header and entries as JSON.")
@_bootstrap
def show(
    target: str, workflow: str, instance_id: str, as_json: bool, bootstrap: str | None
) -> None:
    """Print an instance's status and its journal as a timeline (exit 4: no such instance)."""
    _, client = _client(target, bootstrap)
    view = client.get(workflow, instance_id)
    if view is None:
        click.echo(f"no instance {instance_id!r} of workflow {workflow!r}", err=True)
        sys.exit(EXIT_NO_SUCH_INSTANCE)
    if as_json:
        body = {"id": view.id, "header": view.header, "entries": view.entries}
        click.echo(orjson.dumps(body).decode())
        return
    for line in timeline(workflow, view):
        click.echo(line)


def timeline(workflow: str, view: Any) -> list[str]:
    """An instance as ``workflows show`` prints it: header, then one line per journal entry
    (failed attempts under their step, compensations numbered C1, C2, … as they ran)."""
    h = view.header
    lines = [
        f"{workflow} {view.id}  v{h['version']} run {h['run']}  status: {h['status']}",
        f"  input:   {orjson.dumps(h.get('input')).decode()}",
        f"  started: {_time(h.get('started_ms'))}   updated: {_time(h.get('updated_ms'))}",
    ]
    for entry in view.entries:
        stamp = _time(entry.get("started_ms") or entry.get("finished_ms"))
        seq = entry["seq"]
        if seq >= COMPENSATION_BASE:  # compensations run newest first: numbered as they ran
            number, label = f"C{seq - COMPENSATION_BASE + 1}", "compensation: "
        else:
            number, label = str(seq), ""
        lines.append(f"  #{number:<4} {stamp}  {label}{_describe_entry(entry)}")
        for tried in entry.get("attempts") or []:
            if tried.get("outcome") == "failed":
                error = tried.get("error") or {}
                lines.append(
                    f"         {_time(tried.get('finished_ms'))}  attempt {tried['attempt']} "
                    f"failed: {error.get('type', '?')}: {error.get('message', '')}"
                )
    if h.get("error"):
        lines.append(f"  error:   {h['error']['type']}: {h['error']['message']}")
    if "result" in h:
        lines.append(f"  result:  {orjson.dumps(h['result']).decode()}")
    inbox = {k: v for k, v in (h.get("signals") or {}).items() if v}
    if inbox:
        lines.append(f"  unconsumed signals: {orjson.dumps(inbox).decode()}")
    return lines


@workflows.command(name="list")
@click.argument("target")
@click.option("--workflow", "workflow_filter", help="Only this workflow.")
@click.option("--status", type=click.Choice(STATUSES), help="Only instances in this status.")
@click.option("--version", type=int, help="Only instances pinned to this version.")
@click.option("--since", type=float, help="Only instances started in the last SINCE hours.")
@click.option(
    "--attribute",
    "attributes",
    multiple=True,
    metavar="NAME=VALUE",
    help="Only instances whose search attribute NAME is VALUE (JSON, else text); repeatable.",
)
@click.option("--limit", type=int, default=1000, show_default=True, help="Rows at most.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per instance.")
@_bootstrap
def list_(
    target: str,
    workflow_filter: str | None,
    status: str | None,
    version: int | None,
    since: float | None,
    attributes: tuple[str, ...],
    limit: int,
    as_json: bool,
    bootstrap: str | None,
) -> None:
    """List instances with their workflow, version and status, a page at a time from the
    workers (which filter as they page)."""
    app, client = _client(target, bootstrap)
    names = [workflow_filter] if workflow_filter else sorted(app.workflows.workflows)
    wanted: dict[str, Any] = {}
    for pair in attributes:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--attribute")
        try:
            wanted[name] = orjson.loads(text)
        except orjson.JSONDecodeError:
            wanted[name] = text  # --attribute customer=c-1: plain text
    started_after = None if since is None else datetime.now(UTC) - timedelta(hours=since)
    rows = 0
    for name in names:
        for view in client.list(
            name,
            status=status,
            version=version,
            started_after=started_after,
            attributes=wanted or None,
        ):
            h = view.header
            rows += 1
            if as_json:
                click.echo(orjson.dumps({"id": view.id, **h}).decode())
                if rows >= limit:
                    return
                continue
            shown = " ".join(
                f"{k}={orjson.dumps(v).decode()}" for k, v in (h.get("attributes") or {}).items()
            )
            click.echo(
                f"{name:<20} {view.id:<24} v{h['version']:<3} {h['status']:<13} "
                f"{_time(h.get('started_ms'))}  {shown}".rstrip()
            )
            if rows >= limit:
                click.echo(f"(first {limit} rows; --limit for more)", err=True)
                return
    if not rows:
        click.echo("no instances match", err=True)


@workflows.command()
@click.argument("target")
@click.argument("workflow")
@click.argument("instance_ids", nargs=-1)
@click.option(
    "--status",
    type=click.Choice(sorted(TERMINAL)),
    help="Every finished instance in this status (with --older-than: that long finished).",
)
@click.option(
    "--older-than",
    type=float,
    default=0.0,
    help="Hours since the instance finished (with --status).",
)
@_bootstrap
def purge(
    target: str,
    workflow: str,
    instance_ids: tuple[str, ...],
    status: str | None,
    older_than: float,
    bootstrap: str | None,
) -> None:
    """Delete finished instances now instead of after their retention: INSTANCE_IDS, or every
    instance in --status finished more than --older-than hours ago. Instances that have not
    ended are left alone."""
    if not instance_ids and status is None:
        raise click.UsageError("name instances to purge, or select them with --status")
    _, client = _client(target, bootstrap)
    chosen = list(instance_ids)
    if status is not None:
        cutoff = datetime.now(UTC).timestamp() * 1000 - older_than * 3_600_000
        chosen += [
            view.id
            for view in client.list(workflow, status=status)
            if (view.header.get("finished_ms") or 0) <= cutoff
        ]
    for instance_id in chosen:
        client.purge(workflow, instance_id)
    click.echo(f"purge requested for {len(chosen)} instance(s) of {workflow}")
