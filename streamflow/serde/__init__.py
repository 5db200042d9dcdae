"""How keys and values become bytes, and how their schemas are kept and evolved.

- ``base``: the ``Serde`` seam every topic uses, the built-in ``str``, ``json`` and ``bytes``
  serdes, and how a topic's declared serde is resolved.
- ``avro/``: Avro values: schema parsing (``schema``), the compiled codec (``codec``) with
  fastavro as its fallback, the serde itself (``serde``), dataclasses generated from schemas
  (``python_types``) and the Confluent wire format (``wire_format``).
- ``registry/``: where schemas live and how they may change: the registry protocol and the
  in-memory one (``base``), the Kafka-native registry (``kafka``), Confluent Schema Registry
  (``confluent``), the compatibility checker (``compatibility``) and the binding of an app's
  subjects at start-up (``binding``).

Record routing (the murmur2 partitioner) is Kafka's business, not a serde's:
``runtime.partitioner``.
"""
