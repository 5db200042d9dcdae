"""``streamflow produce APP_FILE TOPIC``: test records from JSON lines on stdin.

Each line is one record's value as JSON. Its key is the value's ``--key-field``, or the text
before a tab with ``--keyed`` (``KEY<TAB>JSON``), else none. Values and keys are encoded with
the topic's declared serdes (Avro through the registry, as a worker would), every line is
checked before the first record is sent, and the command returns once the broker has them all.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import click
import orjson

from streamflow.cli.kafka_options import app_cluster, cluster_options


@click.command()
@click.argument("target")
@click.argument("topic")
@click.option("--key-field", help="Take each record's key from this field of its value.")
@click.option("--keyed", is_flag=True, help="Each line is KEY<TAB>JSON.")
@cluster_options
def produce(
    target: str, topic: str, key_field: str | None, keyed: bool, bootstrap: str | None
) -> None:
    """Produce the JSON lines on stdin to TOPIC of the app in TARGET (FILE[:APP])."""
    from confluent_kafka import Producer

    from streamflow.cluster.client_errors import ErrorWatch
    from streamflow.serde.registry.binding import bind_schemas

    cluster = app_cluster(target, bootstrap)
    spec = cluster.app.topology.topics.get(topic)
    if spec is None:
        known = ", ".join(sorted(cluster.app.topology.topics)) or "none"
        raise click.ClickException(
            f"app {cluster.app.name!r} declares no topic {topic!r} ({known})"
        )
    if key_field and keyed:
        raise click.UsageError("--key-field and --keyed choose the key two ways: give one")
    # Avro serdes learn their schema ids from the registry this invocation reaches.
    config = replace(cluster.app.config, bootstrap=cluster.bootstrap, kafka=cluster.settings)
    bind_schemas(cluster.app.topology, config)
    records: list[tuple[bytes | None, bytes]] = []
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        records.append(_encoded(spec, line.rstrip("\n"), number, key_field, keyed))
    watch = ErrorWatch(cluster.settings, cluster.bootstrap)
    producer = Producer({**cluster.client, "enable.idempotence": True, **watch.client_config()})
    failed: list[str] = []

    def report(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(f"{msg.key()!r}: {err.str()}")

    for key, value in records:
        while True:
            try:
                producer.produce(spec.name, value, key, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.1)
    for _ in range(60):
        if producer.flush(0.5) == 0:
            break
        watch.raise_if_refused()
    else:
        raise click.ClickException(f"records to {topic!r} not acknowledged within 30 s")
    if failed:
        raise click.ClickException(f"{len(failed)} record(s) refused: {'; '.join(failed[:5])}")
    click.echo(f"produced {len(records)} record(s) to {topic}")


def _encoded(
    spec: Any, line: str, number: int, key_field: str | None, keyed: bool
) -> tuple[bytes | None, bytes]:
    where = f"line {number}"
    key: Any = None
    text = line
    if keyed:
        key, tab, text = line.partition("\t")
        if not tab:
            raise click.ClickException(f"{where}: --keyed wants KEY<TAB>JSON, found no tab")
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{where}: not JSON ({exc})") from None
    if key_field:
        if not isinstance(value, dict) or key_field not in value:
            raise click.ClickException(f"{where}: no field {key_field!r} to take the key from")
        key = value[key_field]
        key = key if isinstance(key, str) else orjson.dumps(key).decode()
    try:
        encoded_key = None if key is None else spec.key_serde.serialize(key)
        encoded_value = spec.value_serde.serialize(value)
    except Exception as exc:  # noqa: BLE001 - the serde says what did not fit
        raise click.ClickException(
            f"{where}: does not fit topic {spec.name!r}: {type(exc).__name__}: {exc}"
        ) from None
    return encoded_key, encoded_value
