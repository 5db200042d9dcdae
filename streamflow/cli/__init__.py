"""The `streamflow` command. Each command group lives in its own module of this package."""

from __future__ import annotations

import click


@click.group()
@click.version_option(package_name="streamflow")
def main() -> None:
    """streamflow: Kafka-native stream processing and durable workflows."""


def _register() -> None:
    # Imported here so the group modules stay independent of each other.
    from streamflow.cli import (
        acls,
        dev,
        dlq,
        engine,
        produce,
        replay,
        schemas,
        state,
        status,
        ui,
        workflows,
    )

    main.add_command(acls.acls)
    main.add_command(dev.dev)
    main.add_command(dlq.dlq)
    main.add_command(produce.produce)
    main.add_command(status.status)
    main.add_command(state.state)
    main.add_command(replay.replay)
    main.add_command(ui.ui)
    main.add_command(schemas.schemas)
    main.add_command(workflows.workflows)
    for command in engine.COMMANDS:
        main.add_command(command)


_register()
