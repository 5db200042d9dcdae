"""``streamflow state rebuild``: a worker's local stores made again from their changelogs.

For when a state directory is suspect (a disk error, a bad copy, a RocksDB upgrade): each
chosen store of each task under the state directory is wiped and refilled from its changelog
partition, committed records only, in large ``WriteBatch``es, and checkpointed at the
changelog's end, so the next worker start has nothing left to restore. A worker that has the
store open holds its RocksDB lock: the rebuild then stops with an error naming the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from streamflow.cluster.topic_reader import read_to_end, reader_consumer
from streamflow.state.store import KeyValueStore
from streamflow.topology.specs import StoreSpec, SubTopology

BATCH = 50_000


@dataclass
class Rebuilt:
    store: str
    task: str
    records: int
    checkpoint: int


def task_dirs(state_dir: Path, app: str, sub: SubTopology) -> dict[int, Path]:
    """The partitions of ``sub`` whose task directory exists under ``state_dir``."""
    root = state_dir / app
    found = {}
    if root.is_dir():
        for child in root.iterdir():
            sub_id, _, partition = child.name.partition("_")
            if child.is_dir() and sub_id == str(sub.id) and partition.isdigit():
                found[int(partition)] = child
    return found


def rebuild_store(
    client: Mapping[str, Any],
    app: str,
    spec: StoreSpec,
    task_dir: Path,
    partition: int,
    progress: Callable[[int, int], None] | None = None,
) -> Rebuilt:
    """Wipe ``spec``'s store in ``task_dir`` and refill it from changelog ``partition``;
    ``progress(records, estimate)`` after each batch (estimate: the partition's offsets)."""
    consumer = reader_consumer(client, f"{app}.rebuild")
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(spec.changelog, partition), timeout=15
        )
    finally:
        consumer.close()
    store = KeyValueStore(spec.name, task_dir / spec.name, spec.key_serde, spec.value_serde)
    try:
        store.wipe()
        batch: list[tuple[bytes, bytes | None]] = []
        records = 0
        for msg in read_to_end(client, spec.changelog, f"{app}.rebuild", partitions=[partition]):
            if msg.offset() >= high:
                break
            batch.append((msg.key(), msg.value()))
            if len(batch) >= BATCH:
                store.restore_batch(batch, msg.offset() + 1)
                records += len(batch)
                if progress:
                    progress(records, high - low)
                batch = []
        store.restore_batch(batch, high)
        records += len(batch)
        if progress:
            progress(records, high - low)
    finally:
        store.close()
    return Rebuilt(spec.name, task_dir.name, records, high)
