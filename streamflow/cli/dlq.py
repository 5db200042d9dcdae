"""`streamflow dlq list|show|replay`: inspect dead letters and re-inject them after a fix."""

from __future__ import annotations

from datetime import UTC, datetime

import click
import orjson

from streamflow.cli.kafka_options import app_cluster, cluster_options
from streamflow.operate.dead_letter_format import HEADER_STAGE, HEADER_TRUNCATED
from streamflow.operate.dead_letters import DeadLetter, DeadLetterError, DeadLetters, parse_since
from streamflow.runtime.log_format import ProgressLine


def _dead_letters(target: str, bootstrap: str | None) -> DeadLetters:
    cluster = app_cluster(target, bootstrap)
    return DeadLetters(cluster.app.name, cluster.bootstrap, cluster.client)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _line(letter: DeadLetter, replayed: bool) -> str:
    source = letter.source
    where = f"{source[0]}[{source[1]}]@{source[2]}" if source else "?"
    reason = letter.error.replace("\n", " ")
    if len(reason) > 90:
        reason = reason[:87] + "..."
    mark = " (replayed)" if replayed else ""
    if letter.header(HEADER_TRUNCATED) is not None:
        mark += " (cut to fit)"
    stage = letter.header(HEADER_STAGE) or "?"
    return f"{letter.id:<10} {_when(letter.timestamp_ms)}  {stage:<11} {where:<28} {reason}{mark}"


_filters = [
    click.option("--error", "error_type", help="Only this error type (ValueError, LateRecord…)."),
    click.option("--since", help="Only dead letters since: epoch ms, ISO 8601, or 30m / 2h / 7d."),
]


def _with_filters(fn: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(_filters):
        fn = option(fn)
    return fn


@click.group()
def dlq() -> None:
    """Dead letters: list them with their reasons, show one, replay them after a fix."""


@dlq.command(name="list")
@click.argument("target")
@_with_filters
@click.option("--json", "as_json", is_flag=True, help="One JSON object per dead letter.")
@click.option("--limit", type=int, default=1000, show_default=True)
@cluster_options
def list_(
    target: str,
    error_type: str | None,
    since: str | None,
    as_json: bool,
    limit: int,
    bootstrap: str | None,
) -> None:
    """List TARGET's dead letters, oldest first per partition, with counts by error type."""
    letters = _dead_letters(target, bootstrap)
    try:
        since_ms = parse_since(since)
        marks = letters.replayed()
        by_type: dict[str, int] = {}
        shown = 0
        for letter in letters.list(error_type, since_ms):
            by_type[letter.error_type] = by_type.get(letter.error_type, 0) + 1
            if shown >= limit:
                continue
            shown += 1
            if as_json:
                click.echo(orjson.dumps({**letter.to_json(), "replayed": letter.id in marks}))
            else:
                click.echo(_line(letter, letter.id in marks))
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from exc
    if not as_json:
        total = sum(by_type.values())
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(by_type.items(), key=lambda x: -x[1]))
        more = f" (first {limit} shown)" if total > limit else ""
        click.echo(f"{total} dead letter(s){more}" + (f": {kinds}" if kinds else ""))


@dlq.command()
@click.argument("target")
@click.argument("letter_id", metavar="PARTITION:OFFSET")
@cluster_options
def show(target: str, letter_id: str, bootstrap: str | None) -> None:
    """Show one dead letter: reason, trace, source, key, value and headers (JSON)."""
    letters = _dead_letters(target, bootstrap)
    try:
        letter = letters.get(letter_id)
        replayed = letters.replayed().get(letter.id)
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from exc
    body = {**letter.to_json(), "replayed": replayed}
    click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    if body["truncated"] is not None:
        key_bytes, _, value_bytes = str(body["truncated"]).partition(",")
        click.echo(
            f"note: cut to fit the dead-letter topic (the record had a {key_bytes}-byte key "
            f"and a {value_bytes}-byte value): the key and value above are not the whole "
            "record, and it cannot be replayed",
            err=True,
        )


@dlq.command()
@click.argument("target")
@_with_filters
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; write nothing.")
@cluster_options
def replay(
    target: str, error_type: str | None, since: str | None, dry_run: bool, bootstrap: str | None
) -> None:
    """Write dead letters back to where they were read, each exactly once (after a fix)."""
    letters = _dead_letters(target, bootstrap)

    bar = ProgressLine("replaying dead letters")
    replayed = 0

    def report(letter: DeadLetter, outcome: str) -> None:
        nonlocal replayed
        if dry_run or outcome.startswith("skipped"):
            click.echo(f"{letter.id:<10} {outcome}: {letter.error_type}", err=not dry_run)
        else:
            replayed += 1
            if replayed % 100 == 0:
                bar.show(replayed)

    try:
        counts = letters.replay(error_type, parse_since(since), dry_run, report)
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        bar.done()
    verb = "would replay" if dry_run else "replayed"
    click.echo(
        f"{verb} {counts['replayed']} dead letter(s); {counts['already']} replayed before, "
        f"{counts['skipped']} not replayable"
    )
