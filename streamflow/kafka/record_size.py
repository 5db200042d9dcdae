"""How big a record may be: librdkafka's limit, the room kept for headers, and the payload
sizes streamflow carries (bigger ones travel as chunks: ``cluster/record_chunks``,
``state/chunked_values``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamflow.errors import RecordTooLarge

MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default ``message.max.bytes``: the largest record a producer accepts."""
RECORD_HEADROOM = 64 * 1024
"""Kept free below ``message.max.bytes`` for what the producer adds to key and value: headers
(a dead letter's reason and trace), the record and batch overhead."""


DEFAULT_MAX_PAYLOAD_BYTES = 32 * 1024 * 1024
"""The largest payload (an input, a step's arguments or result, a signal, a store value)
streamflow carries by default: ``App(max_payload_bytes=...)``. Records over the producer's
limit travel as chunks (``record_chunks``, ``state/chunked_values``)."""
ENVELOPE_BYTES = 256 * 1024
"""Room beside a payload in its record or stored value: the command's envelope, a journal
entry's own fields, its attempts (messages cut to 1,000 characters)."""


def max_record_bytes(producer: Mapping[str, Any]) -> int:
    """The largest key + value a record of a producer configured with ``producer`` may have.

    Checked where the bytes are made (a store write, a send, a step's reply) so an oversize
    record fails the one input record that made it; found only by the produce at commit time
    (a changelog record), it would fail the commit of every owner of the partition, forever."""
    limit = int(producer.get("message.max.bytes", MESSAGE_MAX_BYTES))
    return max(limit - RECORD_HEADROOM, limit // 2)


DEFAULT_MAX_RECORD_BYTES = max_record_bytes({})


def check_record_size(topic: str, key: bytes | None, value: bytes | None, limit: int) -> None:
    """Refuse a record over ``limit`` at the send that makes it: every collector (the
    worker's and the test driver's) calls this one check, so both refuse the same records."""
    size = (0 if value is None else len(value)) + (0 if key is None else len(key))
    if size > limit:
        raise record_too_large(topic, size, limit)


def record_too_large(topic: str, size: int, limit: int) -> RecordTooLarge:
    return RecordTooLarge(
        f"a record for topic {topic!r} is {size} bytes (key + value), over the limit of "
        f"{limit} bytes (the producer's message.max.bytes less {RECORD_HEADROOM} for headers); "
        "make the record smaller, or raise message.max.bytes (App(kafka=...)) together with "
        "the topic's max.message.bytes"
    )
