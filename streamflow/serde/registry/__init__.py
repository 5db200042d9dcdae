"""Where schemas live and how they may evolve: the registry protocol and the in-memory registry
(``base``), the Kafka-native registry (``kafka``), Confluent Schema Registry (``confluent``), the
compatibility checker (``compatibility``) and the binding of an app's subjects (``binding``).

Nothing is re-exported: the modules import each other, and the Avro serde imports this package's
types, so each name is imported from the module that defines it.
"""
