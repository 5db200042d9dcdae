"""The `streamflow` command. Each command group lives in its own module of this package."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="streamflow")
def main() -> None:
    """streamflow: Kafka-native stream processing and durable workflows."""


def _register() -> None:
    # Imported here so `streamflow --help` stays fast and one broken group cannot hide the others.
    from streamflow.cli import dev

    main.add_command(dev.dev)
    try:
        from streamflow.cli import schemas
    except ImportError:  # pragma: no cover - group not present yet
        pass
    else:
        main.add_command(schemas.schemas)
    try:
        from streamflow.cli import engine
    except ImportError:  # pragma: no cover
        pass
    else:
        for command in engine.COMMANDS:
            main.add_command(command)


_register()
