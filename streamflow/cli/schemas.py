"""`streamflow schemas`: check and compare Avro schema versions before they reach a registry,
and look at and change what a registry holds.

Made for CI: `compat` and `check` exit 0 when the new versions are compatible, 1 when they are not
(one reason per line: kind, path, message), 2 when the input itself is bad or the registry cannot
be reached, so a pipeline can tell "this change breaks readers" from "this job is misconfigured".

The registry is the Kafka-native one on `--bootstrap` (topic `_streamflow_schemas`), or an
external Confluent-compatible one when its url is configured (`--registry-url`,
`$STREAMFLOW_SCHEMA_REGISTRY_URL`, or the `[schema_registry]` table of `--config`, which also
holds its credentials and TLS files: `serde/registry/settings.py`), the same choice a worker
makes.

What `diff` prints is worked out in `serde/avro/schema_diff.py`; this module only reads the
files, prints and picks the exit code.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from streamflow.cli.kafka_options import kafka_options, kafka_settings, registry_settings
from streamflow.errors import SchemaError, SchemaIncompatible, StreamflowError
from streamflow.serde.avro.schema import Schema, load_schema_dir, load_schema_file
from streamflow.serde.avro.schema_diff import schema_diff
from streamflow.serde.registry.base import SchemaRegistry
from streamflow.serde.registry.compatibility import (
    CompatibilityMode,
    Incompatibility,
    check_compatibility,
)

_MODES = ", ".join(m.value for m in CompatibilityMode)


@click.group()
def schemas() -> None:
    """Avro schemas: compatibility, differences, the registry's subjects, generated classes."""


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _load(paths: Sequence[str], schema_dir: str | None) -> list[Schema]:
    try:
        named: Mapping[str, Schema] = load_schema_dir(schema_dir) if schema_dir else {}
        return [load_schema_file(path, named) for path in paths]
    except SchemaError as exc:
        _fail(str(exc))


_DIR_HELP = "Directory of .avsc files defining named types the given files reference."


@schemas.command()
@click.option("--mode", "mode_text", required=True, metavar="MODE", help=f"One of {_MODES}.")
@click.option("--schema-dir", type=click.Path(file_okay=False), help=_DIR_HELP)
@click.argument("files", nargs=-1, metavar="V1.avsc [V2.avsc ...] NEW.avsc")
def compat(mode_text: str, schema_dir: str | None, files: tuple[str, ...]) -> None:
    """Check NEW.avsc against the existing versions (oldest first) under MODE.

    Non-transitive modes compare with the newest existing version only. Exit 0: compatible;
    1: incompatible, one reason per line; 2: bad input.
    """
    try:
        mode = CompatibilityMode.parse(mode_text)
    except SchemaError as exc:
        _fail(str(exc))
    if len(files) < 2:
        _fail(
            "give at least two schema files: the existing version(s), oldest first, then the new"
            " one"
        )
    *existing, candidate = _load(files, schema_dir)
    try:
        problems = check_compatibility(mode, existing, candidate)
    except SchemaError as exc:
        _fail(str(exc))
    if not problems:
        click.echo("compatible")
        return
    for problem in problems:
        context = f" ({problem.context})" if problem.context else ""
        click.echo(f"{problem.kind}\t{problem.path}\t{problem.message}{context}")
    sys.exit(1)


@schemas.command()
@click.option("--schema-dir", type=click.Path(file_okay=False), help=_DIR_HELP)
@click.argument("old_file", metavar="OLD.avsc")
@click.argument("new_file", metavar="NEW.avsc")
def diff(old_file: str, new_file: str, schema_dir: str | None) -> None:
    """List what changed from OLD.avsc to NEW.avsc: '+' added, '-' removed, '~' changed.

    Exit 0 when nothing changed, 1 when something did (like diff(1)), 2 on bad input.
    """
    old, new = _load([old_file, new_file], schema_dir)
    lines = schema_diff(old, new)
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo("no differences")
    sys.exit(1 if lines else 0)


# -- the registry --------------------------------------------------------------------------------

_SCHEMA_DIR_HELP = "Directory of the .avsc files (default: $STREAMFLOW_SCHEMA_DIR or ./schemas)."


def registry_options(fn: Any) -> Any:
    fn = kafka_options(fn)
    fn = click.option(
        "--registry-url",
        help="An external Confluent-compatible Schema Registry instead of Kafka's (also "
        "$STREAMFLOW_SCHEMA_REGISTRY_URL, or url in the [schema_registry] table of --config).",
    )(fn)
    return click.option(
        "--bootstrap",
        envvar="STREAMFLOW_BOOTSTRAP",
        help="Kafka bootstrap servers of the registry topic.",
    )(fn)


def _registry(bootstrap: str | None, registry_url: str | None) -> SchemaRegistry:
    """The registry a worker with the same settings would use."""
    try:
        settings = registry_settings(registry_url)
    except click.ClickException as exc:  # exit 2, not 1: `check` exits 1 for "incompatible"
        _fail(exc.message)
    if settings.url:
        from streamflow.serde.registry.confluent import ConfluentSchemaRegistry

        return ConfluentSchemaRegistry.from_settings(settings)
    if not bootstrap:
        _fail("give --bootstrap (or set STREAMFLOW_BOOTSTRAP), or --registry-url")
    from streamflow.serde.registry.kafka import KafkaSchemaRegistry

    return KafkaSchemaRegistry(bootstrap, timeout=15.0, client_config=kafka_settings().values)


def _schema_dir(path: str | None) -> dict[str, Schema]:
    from streamflow.serde.avro.serde import schema_directory

    try:
        return load_schema_dir(schema_directory(path))
    except SchemaError as exc:
        _fail(str(exc))


def _top_name(text: str) -> str | None:
    try:
        node = json.loads(text)
    except ValueError:
        return None
    return node.get("name") if isinstance(node, dict) else None


def _print_problems(problems: Sequence[Incompatibility], indent: str = "  ") -> None:
    for problem in problems:
        context = f" ({problem.context})" if problem.context else ""
        click.echo(f"{indent}{problem.kind}\t{problem.path}\t{problem.message}{context}")


@schemas.command()
@click.option("--schema-dir", type=click.Path(file_okay=False), help=_SCHEMA_DIR_HELP)
@click.option(
    "--app",
    "app_target",
    metavar="FILE[:APP]",
    help="Check exactly the subjects this app uses (new ones included).",
)
@registry_options
def check(
    schema_dir: str | None, app_target: str | None, bootstrap: str | None, registry_url: str | None
) -> None:
    """Check every schema of the schema directory against the registry, as a worker would.

    Without --app, each subject is checked against the directory's type of the same name as its
    latest version, under the subject's mode. Exit 0: all compatible; 1: some are not (reasons
    per subject); 2: bad input or registry unreachable.
    """
    try:
        if app_target is not None:
            failed = _check_app(app_target, bootstrap, registry_url)
        else:
            failed = _check_dir(_schema_dir(schema_dir), _registry(bootstrap, registry_url))
    except StreamflowError as exc:
        _fail(str(exc))
    sys.exit(1 if failed else 0)


def _check_dir(types: Mapping[str, Schema], registry: SchemaRegistry) -> int:
    failed = 0
    used: set[str] = set()
    for subject in registry.subjects():
        versions = registry.versions(subject)
        name = _top_name(versions[-1].schema) if versions else None
        if name is None or name not in types:
            continue
        used.add(name)
        mode = registry.mode(subject) or CompatibilityMode.BACKWARD
        problems = registry.check(subject, types[name], default_mode=mode)
        if problems:
            failed += 1
            click.echo(f"INCOMPATIBLE {subject} ({name}, {mode.value}):")
            _print_problems(problems)
        else:
            click.echo(f"ok {subject} ({name}, {mode.value}, {len(versions)} versions)")
    for name in sorted(set(types) - used):
        if isinstance(types[name], dict) and types[name].get("type") == "record":  # type: ignore[union-attr]
            click.echo(f"unregistered {name}")
    return failed


def _check_app(target: str, bootstrap: str | None, registry_url: str | None) -> int:
    from streamflow.cli.app_file import load_app
    from streamflow.serde.registry.binding import schema_uses

    app = load_app(target)
    registry = _registry(bootstrap or app.config.bootstrap, registry_url)
    failed = 0
    for use in schema_uses(app.topology):
        mode = registry.mode(use.subject) or use.default_mode
        problems = registry.check(use.subject, use.serde.schema_text, default_mode=mode)
        label = f"{use.subject} ({use.what}: {use.serde.schema_name}, {mode.value})"
        if problems:
            failed += 1
            click.echo(f"INCOMPATIBLE {label}:")
            _print_problems(problems)
        else:
            click.echo(f"ok {label}")
    return failed


@schemas.command()
@click.argument("subject")
@click.argument("type_name", metavar="TYPE")
@click.option(
    "--mode",
    "mode_text",
    metavar="MODE",
    help=f"Mode of a new subject (default BACKWARD): one of {_MODES}.",
)
@click.option("--schema-dir", type=click.Path(file_okay=False), help=_SCHEMA_DIR_HELP)
@registry_options
def register(
    subject: str,
    type_name: str,
    mode_text: str | None,
    schema_dir: str | None,
    bootstrap: str | None,
    registry_url: str | None,
) -> None:
    """Register the directory's TYPE (a full name) as the next version of SUBJECT.

    A no-op when SUBJECT already has it. Exit 1 when the subject's mode refuses it.
    """
    try:
        mode = CompatibilityMode.parse(mode_text or "BACKWARD")
    except SchemaError as exc:
        _fail(str(exc))
    types = _schema_dir(schema_dir)
    if type_name not in types:
        _fail(
            f"no named type {type_name!r} in the schema directory; defined: "
            f"{', '.join(sorted(types))}"
        )
    try:
        registered = _registry(bootstrap, registry_url).register(
            subject, types[type_name], default_mode=mode
        )
    except SchemaIncompatible as exc:
        click.echo(str(exc))
        sys.exit(1)
    except StreamflowError as exc:
        _fail(str(exc))
    click.echo(f"{subject} version {registered.version}: schema id {registered.id}")


@schemas.command(name="list")
@registry_options
def list_subjects(bootstrap: str | None, registry_url: str | None) -> None:
    """Every subject: latest version, its schema id and type, and the subject's mode."""
    try:
        registry = _registry(bootstrap, registry_url)
        rows = []
        for subject in registry.subjects():
            versions = registry.versions(subject)
            latest = versions[-1]
            mode = registry.mode(subject)
            rows.append(
                (
                    subject,
                    str(latest.version),
                    str(latest.id),
                    _top_name(latest.schema) or "?",
                    mode.value if mode else "-",
                )
            )
    except StreamflowError as exc:
        _fail(str(exc))
    if not rows:
        click.echo("no subjects")
        return
    header = ("SUBJECT", "VERSION", "ID", "TYPE", "MODE")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@schemas.command()
@click.argument("subject", required=False)
@click.option(
    "--version",
    "version_text",
    default="latest",
    show_default=True,
    help="A version number, 'latest', or 'all'.",
)
@click.option("--id", "schema_id", type=int, help="Show the schema with this id instead.")
@registry_options
def show(
    subject: str | None,
    version_text: str,
    schema_id: int | None,
    bootstrap: str | None,
    registry_url: str | None,
) -> None:
    """Print a version of SUBJECT (or the schema with --id) as indented JSON."""
    if (subject is None) == (schema_id is None):
        _fail("give a SUBJECT or --id ID")
    try:
        registry = _registry(bootstrap, registry_url)
        if schema_id is not None:
            click.echo(_pretty(registry.schema(schema_id)))
            return
        assert subject is not None
        versions = registry.versions(subject)
    except StreamflowError as exc:
        _fail(str(exc))
    if not versions:
        _fail(f"no subject {subject!r} in the registry")
    if version_text == "all":
        chosen = versions
    elif version_text == "latest":
        chosen = versions[-1:]
    else:
        chosen = [v for v in versions if str(v.version) == version_text]
        if not chosen:
            _fail(
                f"subject {subject!r} has versions {[v.version for v in versions]}, "
                f"not {version_text!r}"
            )
    for v in chosen:
        click.echo(f"# {v.subject} version {v.version}, schema id {v.id}")
        click.echo(_pretty(v.schema))


def _pretty(text: str) -> str:
    try:
        return json.dumps(json.loads(text), indent=2)
    except ValueError:
        return text


@schemas.command()
@click.argument("subject")
@click.argument("mode_text", metavar="[MODE]", required=False)
@registry_options
def mode(
    subject: str, mode_text: str | None, bootstrap: str | None, registry_url: str | None
) -> None:
    """Print SUBJECT's compatibility mode, or set it to MODE."""
    try:
        registry = _registry(bootstrap, registry_url)
        if mode_text is None:
            current = registry.mode(subject)
            click.echo(current.value if current else "(not set: its user's default applies)")
            return
        new = CompatibilityMode.parse(mode_text)
        registry.set_mode(subject, new)
    except StreamflowError as exc:
        _fail(str(exc))
    click.echo(f"{subject}: {new.value}")


@schemas.command()
@click.argument("type_names", nargs=-1, metavar="[TYPE ...]")
@click.option("--schema-dir", type=click.Path(file_okay=False), help=_SCHEMA_DIR_HELP)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write here, not stdout.")
def codegen(type_names: tuple[str, ...], schema_dir: str | None, output: str | None) -> None:
    """Generate Python dataclasses for the records of the schema directory (or TYPEs and what
    they use), for `avro(Class)`. Regenerate whenever a schema changes."""
    from streamflow.serde.avro.python_types import generate_module
    from streamflow.serde.avro.serde import schema_directory

    types = _schema_dir(schema_dir)
    try:
        source = generate_module(
            types, type_names or None, origin=f"{schema_directory(schema_dir)}/"
        )
    except SchemaError as exc:
        _fail(str(exc))
    if output is None:
        click.echo(source, nl=False)
    else:
        Path(output).write_text(source, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)
