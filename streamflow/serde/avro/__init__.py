"""Avro values: schemas, the compiled codec, the serde, generated dataclasses, the wire format.

``avro(...)`` and ``AvroSerde`` are re-exported here because topologies import them from here.
"""

from __future__ import annotations

from streamflow.serde.avro.serde import AvroSerde, avro, schema_directory

__all__ = ["AvroSerde", "avro", "schema_directory"]
