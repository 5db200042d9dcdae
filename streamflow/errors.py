"""One hierarchy for every error streamflow raises on purpose.

A message says what happened, to what (topic, partition, offset, store, instance id) and what
to do about it: the error is often the only documentation a user reads at 3 a.m.
"""

from __future__ import annotations


class StreamflowError(Exception):
    """Base of every error streamflow raises deliberately."""


class ConfigError(StreamflowError):
    """The app, a topic or the environment is set up in a way that cannot work."""


class TopologyError(ConfigError):
    """The declared topology is inconsistent (unknown store, duplicate name, bad partitions)."""


class SerializationError(StreamflowError):
    """A key or value could not be (de)serialized; records that raise it go to the DLQ."""


class StoreError(StreamflowError):
    """A state store could not be opened, read, written or restored."""


class StoreClosed(StoreError):
    """A store was read after its task closed it (the task moved to another worker): the
    reader asks again where the task runs now."""


class SchemaError(StreamflowError):
    """A schema cannot be parsed or resolved."""


class SchemaIncompatible(SchemaError):
    """A new schema breaks the compatibility rule of its subject."""


class NonDeterminism(StreamflowError):
    """A workflow's replay asked for something different from what its journal recorded."""


class KafkaUnavailable(ConfigError):
    """The Kafka cluster could not be reached or is not usable (e.g. cannot run transactions)."""


class DevKafkaError(StreamflowError):
    """The local development broker could not be provisioned, started or stopped."""


class ClusterAccessError(ConfigError):
    """The cluster refused who we are or what we asked: credentials, certificates or ACLs.

    Never retried: another attempt with the same settings gets the same answer, so the worker
    stops with one line that says which setting or which ACL to fix.
    """


class AuthenticationFailed(ClusterAccessError):
    """The broker did not accept the client's credentials (SASL)."""


class TlsFailure(ClusterAccessError):
    """The TLS handshake failed: an untrusted or mismatched certificate, a missing client one."""


class AuthorizationFailed(ClusterAccessError):
    """An ACL is missing: the message names the operation, the resource and the principal."""


class RecordTooLarge(SerializationError):
    """A record (an output, a store write's changelog record, a step's reply) is larger than
    the producer accepts: it fails the record that made it, never the commit."""


class PayloadTooLarge(RecordTooLarge):
    """A command a client sends (a start's input, a signal's payload) is over the record
    limit: refused at the client, naming the workflow, the instance, the size and the limit."""


class ResultTooLarge(RecordTooLarge):
    """A step's result does not fit in its reply to the workflow: the attempt fails for good
    (another attempt returns the same result)."""


class ReplyRejected(StreamflowError):
    """The producer refused a record for a reason of the record's own (not a broken client):
    a step's reply that cannot be produced fails its attempt for good."""
