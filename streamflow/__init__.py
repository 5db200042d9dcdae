"""streamflow: Kafka-native stream processing and durable workflows for Python, exactly-once."""

from __future__ import annotations

from streamflow.app import App, AppConfig
from streamflow.errors import (
    ConfigError,
    NonDeterminism,
    SchemaIncompatible,
    SerializationError,
    StoreError,
    StreamflowError,
    TopologyError,
)
from streamflow.serde.avro import avro
from streamflow.serde.base import Serde
from streamflow.topology.nodes import ProcessorContext, Record
from streamflow.topology.stream import Stream, Table
from streamflow.workflow.api import (
    Exponential,
    NonRetryable,
    Retry,
    SignalTimeout,
    StepFailed,
)

__all__ = [
    "App",
    "Exponential",
    "NonRetryable",
    "Retry",
    "SignalTimeout",
    "StepFailed",
    "avro",
    "AppConfig",
    "ConfigError",
    "NonDeterminism",
    "ProcessorContext",
    "Record",
    "SchemaIncompatible",
    "SerializationError",
    "Serde",
    "StoreError",
    "Stream",
    "StreamflowError",
    "Table",
    "TopologyError",
]
