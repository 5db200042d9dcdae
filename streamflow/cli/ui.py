"""`streamflow ui`: serve the web console of an app (workflows, topology, workers, dead letters)."""

from __future__ import annotations

import click

from streamflow.cli.kafka_options import app_cluster, cluster_options


@click.command()
@click.argument("target")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; anything but loopback needs --token.",
)
@click.option(
    "--token",
    envvar="STREAMFLOW_UI_TOKEN",
    help="Every API request must carry it (Authorization: Bearer TOKEN).",
)
@cluster_options
def ui(target: str, port: int, host: str, token: str | None, bootstrap: str | None) -> None:
    """Serve TARGET's console: instances (filter, search, pages), one instance's journal as a
    timeline with signal / cancel / start again, the topology, workers and tasks, dead letters
    with replay. Live: the open page refreshes itself."""
    from streamflow.ui.server import Console, serve

    cluster = app_cluster(target, bootstrap, check=False)  # it may start before the cluster
    server = serve(Console(cluster.app, cluster.client, cluster.settings), host, port, token)
    address = f"http://{host}:{server.server_address[1]}/"
    click.echo(f"streamflow console of {cluster.app.name} on {address} (Ctrl-C stops it)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
