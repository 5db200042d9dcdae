"""``streamflow replay``: reprocess an app's input from a point in time, after a bug fix.

Replaying means moving the consumer group's committed offsets on the app's *input* topics (the
user topics its sources read; internal repartition and workflow topics follow by themselves)
back to a point, then starting workers as usual. Three things make it safe:

- **Never under a running group.** Offsets of a group with members cannot be moved (the broker
  refuses), and a worker that committed a moment later would undo the reset. The command
  refuses while the group has members, naming them.
- **State must match the point.** Stores hold the state after everything processed so far;
  reprocessing older input into them would count it twice. So an app with stores is replayed
  either under a **new app name** (``--to-app``: a new group, new changelogs and DLQ, state
  built from nothing — what a comparison run wants), or with ``--reset-state``, which deletes
  the app's changelog and repartition topics (workers find their local stores ahead of the
  recreated changelogs and wipe them: ``restore.py``).
- **The same code path.** Workers then run ``streamflow run FILE --app-name NEW`` (or with the
  old name): the replay is ordinary processing, exactly-once like the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from streamflow.errors import StreamflowError
from streamflow.operate.dead_letters import parse_since
from streamflow.topology.specs import TopicKind

log = logging.getLogger(__name__)


class ReplayRefused(StreamflowError):
    """The replay cannot be done safely as asked (the message says what to do)."""


@dataclass
class ReplayPlan:
    group: str
    offsets: list[TopicPartition]
    deleted_topics: list[str]


def input_topics(topology: Any) -> list[str]:
    """The user topics the app's sources read (not its internal ones)."""
    names = set()
    for sub in topology.sub_topologies():
        for spec in sub.sources:
            if spec.kind == TopicKind.USER:
                names.add(spec.name)
    return sorted(names)


def internal_state_topics(topology: Any, existing: set[str]) -> list[str]:
    """The changelog and repartition topics of the app that exist now."""
    names = {s.changelog for sub in topology.sub_topologies() for s in sub.stores}
    names |= {
        spec.name
        for sub in topology.sub_topologies()
        for spec in sub.sources
        if spec.kind == TopicKind.REPARTITION
    }
    return sorted(n for n in names if n in existing)


def _members(admin: AdminClient, group: str) -> list[str]:
    described = admin.describe_consumer_groups([group])[group].result(15)
    return [f"{m.client_id} on {m.host}" for m in described.members]


def _resolve(admin: AdminClient, parts: list[TopicPartition], start: str) -> list[TopicPartition]:
    """``earliest``, ``latest``, a time (epoch ms, ISO 8601, or an age like ``2h``), or
    explicit ``TOPIC:PARTITION=OFFSET,...`` (partitions not named are left as the group has
    them)."""
    if "=" in start:
        wanted: dict[tuple[str, int], int] = {}
        for item in start.split(","):
            where, _, offset = item.strip().rpartition("=")
            topic, _, partition = where.rpartition(":")
            if not topic or not partition.isdigit() or not offset.lstrip("-").isdigit():
                raise ReplayRefused(f"--from {item!r}: give TOPIC:PARTITION=OFFSET")
            wanted[topic, int(partition)] = int(offset)
        known = {(tp.topic, tp.partition) for tp in parts}
        unknown = sorted(set(wanted) - known)
        if unknown:
            raise ReplayRefused(
                f"--from names {', '.join(f'{t}:{p}' for t, p in unknown)}, which the app does "
                "not read"
            )
        return [TopicPartition(t, p, o) for (t, p), o in sorted(wanted.items())]
    if start.isdigit() and int(start) < 100_000_000_000:
        raise ReplayRefused(
            f"--from {start}: epoch milliseconds expected (that would be "
            f"{int(start) / 1000:.0f} s after 1970); seconds? add three zeros"
        )
    if start in ("earliest", "latest"):
        spec = OffsetSpec.earliest() if start == "earliest" else OffsetSpec.latest()  # type: ignore[no-untyped-call]
    else:
        try:
            since = parse_since(start)
        except StreamflowError:
            raise ReplayRefused(
                f"--from {start!r}: give earliest, latest, epoch milliseconds, an ISO 8601 time, "
                "an age (30m, 2h, 7d) or TOPIC:PARTITION=OFFSET,..."
            ) from None
        assert since is not None
        spec = OffsetSpec.for_timestamp(since)
    answers = admin.list_offsets({tp: spec for tp in parts})
    resolved = []
    for tp, future in answers.items():
        offset = future.result(15).offset
        if offset < 0:  # no record at or after that time: start at the end
            offset = admin.list_offsets({tp: OffsetSpec.latest()})[tp].result(15).offset  # type: ignore[no-untyped-call]
        resolved.append(TopicPartition(tp.topic, tp.partition, offset))
    return sorted(resolved, key=lambda tp: (tp.topic, tp.partition))


def plan_replay(
    admin: AdminClient,
    app_name: str,
    topology: Any,
    start: str,
    to_app: str | None = None,
    reset_state: bool = False,
) -> ReplayPlan:
    group = to_app or app_name
    for name in {app_name, group}:
        members = _members(admin, name)
        if members:
            raise ReplayRefused(
                f"group {name!r} has {len(members)} member(s) ({', '.join(members)}): stop "
                "its workers first (a running group's offsets cannot be moved)"
            )
    metadata = admin.list_topics(timeout=15).topics
    topics = input_topics(topology)
    missing = [t for t in topics if t not in metadata]
    if missing:
        raise ReplayRefused(f"input topic(s) {', '.join(missing)} do not exist")
    parts = [TopicPartition(t, p) for t in topics for p in sorted(metadata[t].partitions)]
    offsets = _resolve(admin, parts, start)
    has_state = any(sub.stores for sub in topology.sub_topologies())
    deleted: list[str] = []
    if to_app is not None:
        if reset_state:
            raise ReplayRefused(
                "--reset-state is for replays under the same name; a new app has no state"
            )
        taken = [t for t in metadata if t.startswith(f"{to_app}-") or t == f"{to_app}.dlq"]
        if taken:
            raise ReplayRefused(
                f"app {to_app!r} already has topics ({', '.join(sorted(taken)[:5])}): pick a "
                "fresh name, so the replay starts from empty state"
            )
    elif has_state:
        if reset_state and getattr(topology, "workflows", None) and topology.workflows.workflows:
            raise ReplayRefused(
                f"app {app_name!r} runs workflows: --reset-state would start their step and "
                "event topics over without the journals that say what already ran (steps would "
                "run again); replay under a new name (--to-app NEW) instead"
            )
        if not reset_state:
            raise ReplayRefused(
                f"app {app_name!r} has stores, which hold what was processed after that point: "
                "replay under a new name (--to-app NEW) or drop the state (--reset-state)"
            )
        deleted = internal_state_topics(topology, set(metadata))
    return ReplayPlan(group, offsets, deleted)


def apply_replay(admin: AdminClient, plan: ReplayPlan) -> None:
    if plan.deleted_topics:
        for name, future in admin.delete_topics(plan.deleted_topics).items():
            try:
                future.result(30)
            except KafkaException as exc:
                raise ReplayRefused(f"could not delete {name}: {exc.args[0].str()}") from exc
        log.info("deleted %s", ", ".join(plan.deleted_topics))
        # The group's offsets on the deleted repartition topics would point past the start of
        # the recreated ones; dropping the group drops them all (the inputs' are set below).
        for future in admin.delete_consumer_groups([plan.group]).values():
            try:
                future.result(30)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.GROUP_ID_NOT_FOUND:
                    raise
    request = [ConsumerGroupTopicPartitions(plan.group, plan.offsets)]
    answer = admin.alter_consumer_group_offsets(request)[plan.group].result(30)
    failed = [tp for tp in answer.topic_partitions if tp.error is not None]
    if failed:
        raise ReplayRefused(
            "offsets not moved for "
            + ", ".join(f"{tp.topic}[{tp.partition}]: {tp.error}" for tp in failed)
        )


def describe_plan(plan: ReplayPlan) -> list[str]:
    lines = [f"group {plan.group}:"]
    lines += [f"  {tp.topic}[{tp.partition}] -> offset {tp.offset}" for tp in plan.offsets]
    if plan.deleted_topics:
        lines.append("deletes: " + ", ".join(plan.deleted_topics))
    return lines
