"""streamflow: Kafka-native stream processing and durable workflows for Python, exactly-once."""

from __future__ import annotations

from streamflow.app import App
from streamflow.errors import (
    ConfigError,
    NonDeterminism,
    SchemaIncompatible,
    SerializationError,
    StoreError,
    StreamflowError,
    TopologyError,
)
from streamflow.runtime.config import AppConfig
from streamflow.serde.avro.serde import avro
from streamflow.serde.base import BYTES, JSON, STR, Serde
from streamflow.topology.nodes import ProcessorContext, Record
from streamflow.topology.stream import Stream, Table
from streamflow.topology.windows import (
    Windowed,
    hopping,
    session,
    sliding,
    tumbling,
    windowed_serde,
)
from streamflow.workflow.api import (
    Exponential,
    NonRetryable,
    Retry,
    SignalTimeout,
    StepFailed,
)
from streamflow.workflow.context import WorkflowContext
from streamflow.workflow.journal import InstanceStatus
from streamflow.workflow.step_context import EntityContext, StepContext

__all__ = [
    "BYTES",
    "JSON",
    "STR",
    "App",
    "AppConfig",
    "ConfigError",
    "EntityContext",
    "Exponential",
    "InstanceStatus",
    "NonDeterminism",
    "NonRetryable",
    "ProcessorContext",
    "Record",
    "Retry",
    "SchemaIncompatible",
    "Serde",
    "SerializationError",
    "SignalTimeout",
    "StepContext",
    "StepFailed",
    "StoreError",
    "Stream",
    "StreamflowError",
    "Table",
    "TopologyError",
    "Windowed",
    "WorkflowContext",
    "avro",
    "hopping",
    "session",
    "sliding",
    "tumbling",
    "windowed_serde",
]
