"""Development tooling: a real local Kafka cluster from Maven Central jars, without Docker.

Used by `streamflow dev kafka …` and by the test suite's `kafka_bootstrap` fixture.
"""

from __future__ import annotations

from streamflow.dev.jars import KAFKA_VERSION, KafkaJars
from streamflow.dev.kafka import ClusterStatus, LocalKafka, NodeStatus, default_run_dir

__all__ = [
    "KAFKA_VERSION",
    "ClusterStatus",
    "KafkaJars",
    "LocalKafka",
    "NodeStatus",
    "default_run_dir",
]
