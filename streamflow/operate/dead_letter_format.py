"""Dead-letter records: the original bytes plus headers that say what failed, where, and why."""

from __future__ import annotations

import traceback

from streamflow.kafka.record_size import DEFAULT_MAX_RECORD_BYTES
from streamflow.topology.nodes import NODE_MARKER

HEADER_ERROR = "streamflow.error"
HEADER_ERROR_TYPE = "streamflow.error.type"
HEADER_STAGE = "streamflow.stage"
HEADER_PROCESSOR = "streamflow.processor"
HEADER_TOPIC = "streamflow.source.topic"
HEADER_PARTITION = "streamflow.source.partition"
HEADER_OFFSET = "streamflow.source.offset"
HEADER_TRACE = "streamflow.error.trace"
HEADER_ANSWERED = "streamflow.answered"
"""Set on a step command whose workflow was already answered with a failure when it was
dead-lettered: replaying it would run the step (and change its entity) for a call the workflow
has given up on, so it is never replayed; start the workflow again instead."""
ANSWERED = "streamflow_answered"
"""Attribute an exception carries (True) when the command it dead-letters was answered."""
HEADER_TRUNCATED = "streamflow.truncated"
"""Set when the record was cut to fit the dead-letter topic: the original sizes, ``key,value``."""

DEAD_LETTER_MAX_BYTES = DEFAULT_MAX_RECORD_BYTES
"""What a dead-letter record may weigh by default (a task passes its producer's limit): the
producer's default ``message.max.bytes`` (1 MB) less room for the record overhead. A poison
record near the limit plus the error headers would otherwise fail its own produce and take the
batch down with it."""


def failing_processor(exc: BaseException) -> str:
    """The innermost streamflow processor on the traceback (each keeps itself in a local
    named ``NODE_MARKER``: see ``topology.nodes``)."""
    name = "unknown"
    tb = exc.__traceback__
    while tb is not None:
        node = tb.tb_frame.f_locals.get(NODE_MARKER)
        if node is not None:
            name = f"{node.kind}:{node.name}"
        tb = tb.tb_next
    return name


def dead_letter_headers(
    topic: str,
    partition: int,
    offset: int,
    original: list[tuple[str, bytes]] | None,
    exc: BaseException,
    stage: str,
    processor: str,
) -> list[tuple[str, bytes]]:
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-8))
    headers = [
        (HEADER_ERROR, f"{type(exc).__name__}: {exc}"[:4000].encode()),
        (HEADER_ERROR_TYPE, type(exc).__qualname__.encode()),
        (HEADER_STAGE, stage.encode()),
        (HEADER_PROCESSOR, processor.encode()),
        (HEADER_TOPIC, topic.encode()),
        (HEADER_PARTITION, str(partition).encode()),
        (HEADER_OFFSET, str(offset).encode()),
        (HEADER_TRACE, trace[-8000:].encode()),
    ]
    if getattr(exc, ANSWERED, False):
        headers.append((HEADER_ANSWERED, b"1"))
    if original:
        headers.extend(original)
    return headers


def fit_dead_letter(
    key: bytes | None,
    value: bytes | None,
    headers: list[tuple[str, bytes]],
    limit: int = DEAD_LETTER_MAX_BYTES,
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """The dead-letter record cut to ``limit`` bytes: the trace and the original headers
    first, then the value, then the key; a header says what was cut from what."""

    def size() -> int:
        return len(key or b"") + len(value or b"") + sum(len(k) + len(v) + 16 for k, v in headers)

    if size() <= limit:
        return key, value, headers
    original = f"{len(key or b'')},{len(value or b'')}".encode()
    ours = {
        HEADER_ERROR,
        HEADER_ERROR_TYPE,
        HEADER_STAGE,
        HEADER_PROCESSOR,
        HEADER_TOPIC,
        HEADER_PARTITION,
        HEADER_OFFSET,
    }
    headers = [
        (k, v[:2000] if k == HEADER_TRACE else v)
        for k, v in headers
        if k in ours or k == HEADER_TRACE
    ]
    headers.append((HEADER_TRUNCATED, original))
    room = limit - sum(len(k) + len(v) + 16 for k, v in headers)
    if key is not None and len(key) > room // 2:
        key = key[: room // 2]
    value = None if value is None else value[: max(0, room - len(key or b""))]
    return key, value, headers
