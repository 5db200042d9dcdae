"""Dead-letter records: the original bytes plus headers that say what failed, where, and why."""

from __future__ import annotations

import traceback

HEADER_ERROR = "streamflow.error"
HEADER_ERROR_TYPE = "streamflow.error.type"
HEADER_STAGE = "streamflow.stage"
HEADER_PROCESSOR = "streamflow.processor"
HEADER_TOPIC = "streamflow.source.topic"
HEADER_PARTITION = "streamflow.source.partition"
HEADER_OFFSET = "streamflow.source.offset"
HEADER_TRACE = "streamflow.error.trace"


def failing_processor(exc: BaseException) -> str:
    """The innermost streamflow processor on the traceback (each keeps itself in ``_sf_node``)."""
    name = "unknown"
    tb = exc.__traceback__
    while tb is not None:
        node = tb.tb_frame.f_locals.get("_sf_node")
        if node is not None:
            name = f"{node.kind}:{node.name}"
        tb = tb.tb_next
    return name


def dead_letter_headers(topic: str, partition: int, offset: int,
                        original: list[tuple[str, bytes]] | None, exc: BaseException, stage: str,
                        processor: str) -> list[tuple[str, bytes]]:
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
    if original:
        headers.extend(original)
    return headers
