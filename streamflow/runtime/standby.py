"""Standby replicas: warm copies of other workers' stores, so a failover restores only a tail.

With ``num_standbys=N`` each task's stores are also kept, read-only, by N workers that do not
own it. A standby is a restore that never ends: a consumer outside the group reads the task's
changelog partitions (``read_committed``) from the replica's checkpoint on and writes the raw
bytes into the replica's RocksDB with the checkpoint, in the same directory a task of this
worker would use. When the group gives the task to this worker, the replica is closed and the
task's ordinary restore starts from its checkpoint: seconds of changelog, not the whole store.
Nothing about exactly-once changes: a replica holds committed changelog records only, and
a task restored from it is a task restored from a checkpoint, as after any restart.

Who keeps which standby: the members of the group sorted by member id form a ring; the N
members after a task's owner keep its standbys. Every worker computes the same answer from the
group's description (refreshed after each rebalance and every few seconds), so no assignor of
our own is needed. A worker never keeps a standby of a task it owns.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from streamflow.runtime.restore import Restorer
from streamflow.state.store import KeyValueStore
from streamflow.topology.specs import SubTopology

log = logging.getLogger(__name__)


class Replica:
    """The stores of one task this worker does not own: what ``Restorer.add`` needs of a task."""

    def __init__(self, sub: SubTopology, partition: int, state_dir: Path) -> None:
        self.id = f"{sub.id}_{partition}"
        self.sub = sub
        self.partition = partition
        self.state_dir = state_dir / self.id
        self.stores: dict[str, KeyValueStore] = {}

    def store(self, name: str) -> KeyValueStore:
        store = self.stores.get(name)
        if store is None:
            spec = next(s for s in self.sub.stores if s.name == name)
            # Raw bytes only ever go in (restore_write): the serdes are never used here.
            store = KeyValueStore(name, self.state_dir / name, spec.key_serde, spec.value_serde)
            self.stores[name] = store
        return store

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        self.stores.clear()


class StandbyReplicas(Restorer):
    """This worker's replicas, kept up to date by one consumer of their changelogs."""

    def __init__(
        self,
        bootstrap: str,
        app_name: str,
        settings: Mapping[str, str] | None,
        state_dir: Path,
        subs: list[SubTopology],
    ) -> None:
        super().__init__(bootstrap, f"{app_name}-standby", settings, batch_size=5_000)
        self.state_dir = state_dir
        self.all_subs = list(subs)
        self.subs = {sub.id: sub for sub in subs if sub.stores}
        self.replicas: dict[str, Replica] = {}

    def _finished(self) -> list[Any]:
        return []  # a standby never finishes: it follows its changelogs until released

    def refresh(
        self, admin: Any, group: str, mine: str, count: int, owned: Collection[str]
    ) -> None:
        """Keep the standbys the ring gives member ``mine`` now (``standby_tasks``), never one
        of the tasks this worker ``owned``. The group's description is a network call: a
        cluster that does not answer within 2 s leaves the standbys as they are until the next
        refresh."""
        try:
            described = admin.describe_consumer_groups([group])[group].result(2)
        except (KafkaException, RuntimeError, TimeoutError) as exc:
            log.debug("standbys not refreshed: %s", exc)
            return
        sub_of_topic = {t.name: sub.id for sub in self.all_subs for t in sub.sources}
        owners: dict[str, str] = {}
        for member in described.members:
            for tp in member.assignment.topic_partitions or []:
                sub_id = sub_of_topic.get(tp.topic)
                if sub_id is not None:
                    owners[f"{sub_id}_{tp.partition}"] = member.member_id
        members = [m.member_id for m in described.members]
        self.keep(standby_tasks(mine, members, owners, count) - set(owned))

    def keep(self, wanted: set[str]) -> None:
        """Keep replicas of exactly the tasks ``wanted`` (ids ``<sub>_<partition>``). A standby
        is an optimization: one that cannot be opened or followed now (a disk error, a broker
        away) is logged and tried again on the next refresh, never a reason to stop."""
        for task_id in sorted(set(self.replicas) - wanted):
            self.release(task_id)
        for task_id in sorted(wanted - set(self.replicas)):
            sub_id, _, partition = task_id.partition("_")
            sub = self.subs.get(int(sub_id))
            if sub is None:
                continue  # no stores: nothing to keep warm
            replica = Replica(sub, int(partition), self.state_dir)
            try:
                self.add(replica)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                replica.close()
                log.warning("no standby of task %s for now: %s", task_id, exc)
                continue
            self.replicas[task_id] = replica
            log.info("keeping a standby of task %s", task_id)

    def release(self, task_id: str) -> None:
        """Stop following ``task_id`` and close its stores (its task is about to open them)."""
        replica = self.replicas.pop(task_id, None)
        if replica is None:
            return
        try:
            self.remove(replica)
        finally:
            replica.close()  # the RocksDB locks go whatever the consumer said
        log.info("standby of task %s released", task_id)

    def lag(self) -> dict[str, int]:
        """Changelog records each replica is behind (as of the last fetch, no request)."""
        out: dict[str, int] = {}
        for (topic, partition), progress in self._active.items():
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except Exception:  # noqa: BLE001 - a figure for the status, never a failure
                continue
            if high < 0:
                continue
            position = max(progress.position, progress.start)
            task_id = progress.task.id
            out[task_id] = out.get(task_id, 0) + max(0, high - position)
        return out

    def close(self) -> None:
        for task_id in list(self.replicas):
            self.release(task_id)
        super().close()


def standby_tasks(
    mine: str,
    members: list[str],
    owners: Mapping[str, str],
    count: int,
) -> set[str]:
    """The tasks whose standbys member ``mine`` keeps: for each task owned by ``owners[task]``,
    the ``count`` members after its owner in the ring of sorted member ids."""
    ring = sorted(members)
    if mine not in ring or count <= 0 or len(ring) < 2:
        return set()
    keep = set()
    for task_id, owner in owners.items():
        if owner == mine or owner not in ring:
            continue
        at = ring.index(owner)
        followers = [ring[(at + i) % len(ring)] for i in range(1, min(count, len(ring) - 1) + 1)]
        if mine in followers:
            keep.add(task_id)
    return keep
