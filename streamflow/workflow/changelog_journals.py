"""Instance journals read straight from a workflow's ``<workflow>-instances`` changelog.

What a client falls back on when no worker serves an endpoint (none runs yet, or none
advertises one): the changelog holds every committed journal value, keyed as the instances
store keys them (``<id>`` + ``HEADER`` for the header, ``<id>`` + ``ENTRY`` + seq for an entry),
so reading the partitions to their end and keeping the last value per key rebuilds what the
store held at the last commit. Slow (a whole partition is read), but it needs nothing but Kafka.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamflow.state.chunked_values import RESERVED, whole_values
from streamflow.workflow.commands import InstanceView
from streamflow.workflow.journal import ENTRY, HEADER


def read_journals(
    client: Mapping[str, Any],
    app_name: str,
    topic: str,
    partitions: Iterable[int],
    only: str | None,
) -> dict[str, InstanceView]:
    """The instances in ``partitions`` of changelog ``topic`` (only instance ``only``, if
    given), by id, as of the end of each partition when it was read. ``client``: the settings
    of the client's own consumers (bootstrap and security)."""
    consumer = Consumer(
        {
            **client,
            # Never joins (partitions are assigned); under the app's prefix for its ACLs.
            "group.id": f"{app_name}-query-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }
    )
    parts = list(partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    latest_raw: dict[bytes, bytes | None] = {}
    only_prefix = None if only is None else only.encode()
    eof: set[int] = set()
    try:
        while len(eof) < len(parts):
            for msg in consumer.consume(10_000, 1.0):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        eof.add(msg.partition() or 0)
                    continue
                raw_key = msg.key()
                if raw_key is None:
                    continue  # not an instance record: instances are keyed by workflow id
                if (
                    only_prefix is None
                    or raw_key.startswith(only_prefix)
                    or raw_key.startswith(RESERVED)  # chunks of big values
                ):
                    latest_raw[raw_key] = msg.value()
    finally:
        consumer.close()
    latest = {
        raw_key.decode(): None if raw is None else orjson.loads(raw)
        for raw_key, raw in whole_values(latest_raw).items()
    }
    views: dict[str, InstanceView] = {}
    for key, value in latest.items():
        if value is not None and key.endswith(HEADER):
            instance_id = key[:-1]
            if only is None or instance_id == only:
                views[instance_id] = InstanceView(instance_id, value, [])
    for key, value in sorted(latest.items()):
        if value is None or ENTRY not in key:
            continue
        instance_id = key.split(ENTRY)[0]
        if instance_id in views:
            views[instance_id].entries.append(value)
    return views
