"""The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the Avro body.

Every Avro record streamflow writes (topic keys and values, store values and so changelogs)
starts with this 5-byte header, so any Confluent-compatible consumer can read our topics and we
can read theirs, and a value written years ago still names the schema it was written with.
"""

from __future__ import annotations

from streamflow.errors import SerializationError

MAGIC = 0
HEADER_SIZE = 5
MAX_SCHEMA_ID = 2**31 - 1
"""Registries hand out positive 32-bit signed ids (Java ``int``)."""


def header(schema_id: int) -> bytes:
    """The 5 bytes that precede a body written with ``schema_id``."""
    if not 0 <= schema_id <= MAX_SCHEMA_ID:
        raise ValueError(f"schema id {schema_id} is outside 0..{MAX_SCHEMA_ID}")
    return bytes((MAGIC,)) + schema_id.to_bytes(4, "big")


def schema_id_of(data: bytes) -> int:
    """The schema id in ``data``'s header; a record that does not carry one is refused.

    Raised as SerializationError so the task sends the record to the dead-letter topic with this
    message as the reason.
    """
    if len(data) < HEADER_SIZE:
        raise SerializationError(
            f"record of {len(data)} bytes is too short for the Avro wire format (magic byte 0 "
            "and a 4-byte schema id); it was not written by an Avro serializer"
        )
    if data[0] != MAGIC:
        raise SerializationError(
            f"unknown magic byte {data[0]} (expected {MAGIC}): the record is not in the "
            "Confluent Avro wire format; was it written with another serde (JSON, raw bytes)?"
        )
    return int.from_bytes(data[1:HEADER_SIZE], "big")


def split(data: bytes) -> tuple[int, memoryview]:
    """(schema id, body) of a wire-format record; the body is a zero-copy view."""
    return schema_id_of(data), memoryview(data)[HEADER_SIZE:]
