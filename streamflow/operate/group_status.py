"""What ``streamflow status`` shows, gathered from the cluster and from the workers themselves.

From the cluster (works with no worker running): the group's members and which input
partitions each owns, committed offsets and lag per input partition, the dead-letter topic's
size. From each member that serves an HTTP endpoint (its ``client.id`` names it,
``http_endpoint.HTTP_CLIENT_ID_MARK``): its tasks, which of them restore and how far, records/s.
A member without an endpoint, or one that does not answer within a second, is shown from the
group's side only.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from streamflow.operate.http_endpoint import HTTP_CLIENT_ID_MARK

ENDPOINT_TIMEOUT_S = 1.0


@dataclass
class PartitionStatus:
    topic: str
    partition: int
    committed: int | None
    high: int
    owner: str | None

    @property
    def lag(self) -> int:
        return self.high - (self.committed or 0) if self.committed is not None else self.high


@dataclass
class MemberStatus:
    member_id: str
    client_id: str
    host: str
    partitions: list[tuple[str, int]]
    endpoint: str | None
    worker: dict[str, Any] | None = None
    """The member's own ``/status``, when it answered."""


@dataclass
class GroupStatus:
    app: str
    state: str
    protocol: str
    members: list[MemberStatus] = field(default_factory=list)
    partitions: list[PartitionStatus] = field(default_factory=list)
    dead_letter_offsets: int = 0
    """Offsets on the dead-letter topic (records plus transaction markers: an upper bound)."""
    dead_letters: int | None = None
    """Dead letters counted one by one, when the caller did (``count_dead_letters``)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "state": self.state,
            "protocol": self.protocol,
            "dead_letters": self.dead_letters,
            "dead_letter_offsets": self.dead_letter_offsets,
            "members": [
                {
                    "member_id": m.member_id,
                    "client_id": m.client_id,
                    "host": m.host,
                    "endpoint": m.endpoint,
                    "partitions": [f"{t}[{p}]" for t, p in m.partitions],
                    "worker": m.worker,
                }
                for m in self.members
            ],
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "committed": p.committed,
                    "high": p.high,
                    "lag": p.lag,
                    "owner": p.owner,
                }
                for p in self.partitions
            ],
        }


def endpoint_of(client_id: str) -> str | None:
    _, mark, address = client_id.rpartition(HTTP_CLIENT_ID_MARK)
    return address if mark and address else None


def fetch_json(endpoint: str, path: str, timeout: float = ENDPOINT_TIMEOUT_S) -> Any:
    with urllib.request.urlopen(f"http://{endpoint}{path}", timeout=timeout) as response:
        return orjson.loads(response.read())


def group_status(
    admin: AdminClient, app: str, input_topics: list[str], dead_letter_topic: str
) -> GroupStatus:
    described = admin.describe_consumer_groups([app])[app].result(15)
    state = getattr(described.state, "name", str(described.state)).lower()
    group_type = getattr(described, "type", None)
    protocol = getattr(group_type, "name", "classic").lower() if group_type else "classic"
    status = GroupStatus(app, state, protocol)
    owner_of: dict[tuple[str, int], str] = {}
    for member in described.members:
        parts = [(tp.topic, tp.partition) for tp in (member.assignment.topic_partitions or [])]
        endpoint = endpoint_of(member.client_id or "")
        mstatus = MemberStatus(member.member_id, member.client_id, member.host, parts, endpoint)
        if endpoint is not None:
            try:
                mstatus.worker = fetch_json(endpoint, "/status")
            except (OSError, ValueError):
                mstatus.worker = None
        status.members.append(mstatus)
        for part in parts:
            owner_of[part] = member.client_id
    metadata = admin.list_topics(timeout=15).topics
    wanted = [
        TopicPartition(topic, p)
        for topic in input_topics
        if topic in metadata
        for p in sorted(metadata[topic].partitions)
    ]
    committed: dict[tuple[str, int], int | None] = {}
    if wanted:
        request = [ConsumerGroupTopicPartitions(app, wanted)]
        answer = admin.list_consumer_group_offsets(request)[app].result(15)
        for tp in answer.topic_partitions:
            committed[tp.topic, tp.partition] = tp.offset if tp.offset >= 0 else None
    highs = _high_watermarks(admin, wanted)
    for tp in wanted:
        key = (tp.topic, tp.partition)
        status.partitions.append(
            PartitionStatus(
                tp.topic, tp.partition, committed.get(key), highs.get(key, 0), owner_of.get(key)
            )
        )
    if dead_letter_topic not in metadata:
        status.dead_letters = 0  # no worker has started yet: it creates the topic
    else:
        dlq = [TopicPartition(dead_letter_topic, p) for p in metadata[dead_letter_topic].partitions]
        lows = _high_watermarks(admin, dlq, earliest=True)
        status.dead_letter_offsets = sum(
            high - lows.get(key, 0) for key, high in _high_watermarks(admin, dlq).items()
        )
    return status


def _high_watermarks(
    admin: AdminClient, parts: list[TopicPartition], earliest: bool = False
) -> dict[tuple[str, int], int]:
    if not parts:
        return {}
    spec = OffsetSpec.earliest() if earliest else OffsetSpec.latest()  # type: ignore[no-untyped-call]
    answer = admin.list_offsets({tp: spec for tp in parts})
    out: dict[tuple[str, int], int] = {}
    for tp, future in answer.items():
        out[tp.topic, tp.partition] = future.result(15).offset
    return out
